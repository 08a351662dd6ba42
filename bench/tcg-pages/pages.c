// SPDX-License-Identifier: GPL-2.0
/*
 * A QEMU TCG plugin (plugin API version 1, QEMU 7.2, Debian 12's qemu-system-ppc) that cuts each vCPU's
 * execution into episodes: maximal runs of translation blocks at kernel addresses (>= 0xc000000000000000),
 * bounded by blocks elsewhere (the L2 payload runs in real mode at low addresses, L1 userspace below the
 * kernel). For each episode it writes to $TCG_PAGES_OUT (default tcg-pages.txt):
 *   E <vcpu> <blocks run> <distinct blocks> <code pages> <data pages> <first pc> <insns> <lookups> <distinct lookups>
 *   C <code page>...              distinct 4K code pages, in first-touch order
 *   D <data page>:<pc>...         distinct 4K data pages and the instruction that touched each first
 *   T <pc>:<insns>:<runs>...      distinct blocks, their size and how often each ran
 * A lookup is a block entered after an indirect branch (bclr, bcctr, bctar, rfid, hrfid, rfscv) or from a
 * block that starts on another page: what QEMU does not chain and finds through its jump cache, which it
 * flushes, with its soft TLB, at every L1<->L2 switch. Each distinct 4K page is then a TLB fill.
 *
 * The header qemu-plugin.h is not packaged: the few entry points used are declared here with 7.2's
 * signatures. Build: gcc -O2 -shared -fPIC -o pages.so pages.c
 */
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>

typedef uint64_t qemu_plugin_id_t;
typedef uint32_t qemu_plugin_meminfo_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef void (*tb_trans_cb)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb)(unsigned int, void *);
typedef void (*mem_cb)(unsigned int, qemu_plugin_meminfo_t, uint64_t, void *);
typedef void (*atexit_cb)(qemu_plugin_id_t, void *);
extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
extern uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);
extern const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *);
extern void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *, udata_cb, int, void *);
extern void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *, mem_cb, int, int, void *);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, atexit_cb, void *);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define KERN 0xc000000000000000ull
#define MAXP 4096  /* pages and blocks listed per episode */
#define MAXV 16    /* vCPUs */
#define HS 16384   /* hash set size (power of 2) */
#define MAX_EPISODE 200000 /* longer episodes (boot, idle) are not written */

struct tbi {
	uint64_t pc;
	uint32_t n;
	bool ind;
};

/* Open-addressing set of 4K-aligned keys; a slot is live when its generation is the episode's. */
struct set {
	uint64_t key[HS];
	uint32_t gen[HS];
	uint32_t idx[HS];
};

struct ep {
	bool in;
	uint32_t gen;
	struct tbi *prev;
	uint64_t ntb, first, ninsn, nlook, ndlook;
	int nc, nd, ndt;
	uint64_t code[MAXP], data[MAXP], dpc[MAXP], tbs[MAXP];
	uint32_t tbn[MAXP], tbc[MAXP];
	struct set sc, sd, st, sl;
};

static struct ep *eps[MAXV];
static FILE *out;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* Slot of key in s; *fresh when it was not in the set. */
static uint32_t slot(struct set *s, uint32_t gen, uint64_t key, bool *fresh)
{
	uint64_t k = key | 1;
	uint32_t i = (uint32_t)((key >> 12) * 0x9E3779B1u) & (HS - 1);

	for (;;) {
		if (s->gen[i] != gen) {
			s->gen[i] = gen;
			s->key[i] = k;
			*fresh = true;
			return i;
		}
		if (s->key[i] == k) {
			*fresh = false;
			return i;
		}
		i = (i + 1) & (HS - 1);
	}
}

static bool add(struct set *s, uint32_t gen, uint64_t key)
{
	bool fresh;

	slot(s, gen, key, &fresh);
	return fresh;
}

static struct ep *ep_of(unsigned int v)
{
	if (v >= MAXV)
		return NULL;
	if (!eps[v]) {
		eps[v] = calloc(1, sizeof(struct ep));
		if (eps[v])
			eps[v]->gen = 1;
	}
	return eps[v];
}

static void finish(struct ep *e, unsigned int v)
{
	if (e->ntb > 0 && e->ntb < MAX_EPISODE) {
		pthread_mutex_lock(&mu);
		fprintf(out, "E %u %lu %d %d %d %lx %lu %lu %lu\nC", v, e->ntb, e->ndt, e->nc, e->nd, e->first,
			e->ninsn, e->nlook, e->ndlook);
		for (int i = 0; i < e->nc; i++)
			fprintf(out, " %lx", e->code[i]);
		fprintf(out, "\nD");
		for (int i = 0; i < e->nd; i++)
			fprintf(out, " %lx:%lx", e->data[i], e->dpc[i]);
		fprintf(out, "\nT");
		for (int i = 0; i < e->ndt && i < MAXP; i++)
			fprintf(out, " %lx:%x:%x", e->tbs[i], e->tbn[i], e->tbc[i]);
		fprintf(out, "\n");
		pthread_mutex_unlock(&mu);
	}
	e->ntb = e->ninsn = e->nlook = e->ndlook = 0;
	e->nc = e->nd = e->ndt = 0;
	e->prev = NULL;
	e->in = false;
	e->gen++;
}

static void tb_exec(unsigned int v, void *ud)
{
	struct tbi *ti = ud;
	struct ep *e = ep_of(v);
	bool fresh;
	uint32_t i;

	if (!e)
		return;
	if (ti->pc < KERN) {
		if (e->in)
			finish(e, v);
		return;
	}
	if (!e->in) {
		e->in = true;
		e->first = ti->pc;
	}
	e->ntb++;
	e->ninsn += ti->n;
	if (e->prev && (e->prev->ind || ((e->prev->pc ^ ti->pc) >> 12) != 0)) {
		e->nlook++;
		if (add(&e->sl, e->gen, ti->pc << 12))
			e->ndlook++;
	}
	e->prev = ti;
	i = slot(&e->st, e->gen, ti->pc << 12, &fresh);
	if (fresh) {
		e->st.idx[i] = e->ndt;
		if (e->ndt < MAXP) {
			e->tbs[e->ndt] = ti->pc;
			e->tbn[e->ndt] = ti->n;
			e->tbc[e->ndt] = 0;
		}
		e->ndt++;
	}
	if (e->st.idx[i] < MAXP)
		e->tbc[e->st.idx[i]]++;
	if (add(&e->sc, e->gen, ti->pc & ~0xfffull) && e->nc < MAXP)
		e->code[e->nc++] = ti->pc & ~0xfffull;
}

static void mem(unsigned int v, qemu_plugin_meminfo_t info, uint64_t va, void *ud)
{
	struct ep *e = ep_of(v);
	uint64_t p = va & ~0xfffull;

	if (!e || !e->in)
		return;
	if (add(&e->sd, e->gen, p) && e->nd < MAXP) {
		e->dpc[e->nd] = (uint64_t)ud;
		e->data[e->nd++] = p;
	}
}

static void trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	size_t n = qemu_plugin_tb_n_insns(tb);
	struct tbi *ti = calloc(1, sizeof(*ti));
	const uint8_t *b;
	uint32_t w, op, xo;

	if (!ti || n == 0)
		return;
	ti->pc = qemu_plugin_tb_vaddr(tb);
	ti->n = n;
	/* The block's last instruction, little-endian (ppc64le guests). */
	b = qemu_plugin_insn_data(qemu_plugin_tb_get_insn(tb, n - 1));
	w = b[0] | b[1] << 8 | b[2] << 16 | (uint32_t)b[3] << 24;
	op = w >> 26;
	xo = (w >> 1) & 0x3ff;
	ti->ind = op == 19 && (xo == 16 || xo == 528 || xo == 560 || xo == 18 || xo == 274 || xo == 82);
	qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, 0, ti);
	if (ti->pc < KERN)
		return;
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *in = qemu_plugin_tb_get_insn(tb, i);

		qemu_plugin_register_vcpu_mem_cb(in, mem, 0, 3, (void *)qemu_plugin_insn_vaddr(in));
	}
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
	fflush(out);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc,
							       char **argv)
{
	const char *path = getenv("TCG_PAGES_OUT");

	out = fopen(path ? path : "tcg-pages.txt", "w");
	if (!out)
		return -1;
	setvbuf(out, NULL, _IOFBF, 1 << 20);
	qemu_plugin_register_vcpu_tb_trans_cb(id, trans);
	qemu_plugin_register_atexit_cb(id, at_exit, NULL);
	return 0;
}
