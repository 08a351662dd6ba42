// SPDX-License-Identifier: GPL-2.0
/*
 * pvtce's C edge: only what the Rust side cannot reach through the 7.3 kernel crate or its bindings. It holds no
 * policy. Every function here is declared in kmod/ffi.rs or kmod/iommu.rs and called only from there.
 *
 * What stays in C, and why:
 * - the KVM sPAPR TCE backend (patches/linux/0003): a const struct of hook pointers whose signatures take
 *   struct kvm_vcpu; each hook only passes vcpu->kvm to its own Rust entry point (one per hook, nothing routed
 *   twice), and h_get_tce sets r4 with kvmppc_set_gpr (an inline). The kernel crate has no KVM abstraction and
 *   bindgen does not see kvm_host.h.
 * - the window's anon-inode file with its own file_operations (mmap fault, release, ioctl): the kernel crate
 *   has no anon-inode file abstraction (miscdevice only), and attach_group must recognise a pvtce table fd by
 *   its f_op, which only C can name.
 * - struct kvm fields (kvm->mm, &kvm->srcu) and the memslot inlines __gfn_to_memslot/__gfn_to_hva_memslot.
 * - struct iommu_table / iommu_table_group fields and it_ops callbacks (opaque in kernel::bindings), and the
 *   VFIO group behind a file for PVTCE_HOST_READ.
 * - get_tb() (an inline).
 * - current->mm == kvm->mm (PVTCE_WINDOW_EXCHANGE's caller check). kernel::current!().mm() exists, but on this
 *   7.3 ppc64le build bindgen lays struct task_struct out differently from C (measured: offsetof(mm) 0x530 in
 *   kernel::bindings, 0x560 in C; struct sched_statistics comes out empty and without its cache-line
 *   alignment), so it reads the wrong field and the check failed with EPERM for the VM's own VMM.
 * Everything else is Rust through the kernel crate: VM and table references are ARef<T> (kvm_get_kvm/
 * kvm_put_kvm, iommu_tce_table_get/put), kvm->srcu is kernel::sync::Srcu, the TCE list is read with
 * UserSlice, the VM's mm is a kernel::mm::Mm, locked memory is charged through bindings::account_locked_vm.
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/iommu.h>
#include <linux/kvm_host.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/tracepoint.h>
#include <linux/vfio.h>
#include <asm/firmware.h>
#include <asm/hvcall.h>
#include <asm/iommu.h>
#include <asm/kvm_ppc.h>
#include <asm/mmu_context.h>

/*
 * Implemented in Rust: kmod/registry.rs (create_table, has_liobn, window_release), kmod/link.rs (attach,
 * release_group), kmod/hcall.rs (the four hypercalls), kmod/mmap.rs (window_page), kmod/ioctl.rs
 * (window_ioctl). `window` is the pointer handed to pvtce_glue_window_fd(). Each states its caller rules in a
 * "# Safety" section; the hooks below keep them.
 */
long pvtce_rs_create_table(struct kvm *kvm, u64 liobn, u32 page_shift, u64 offset, u64 size);
bool pvtce_rs_has_liobn(struct kvm *kvm, u64 liobn);
long pvtce_rs_attach(struct kvm *kvm, void *window, struct iommu_group *grp);
bool pvtce_rs_userspace_mode(void);
void pvtce_rs_release_group(struct kvm *kvm, struct iommu_group *grp);
bool pvtce_rs_h_put_tce(struct kvm *kvm, unsigned long liobn, unsigned long ioba, unsigned long tce, long *ret,
			bool early);
bool pvtce_rs_h_put_tce_indirect(struct kvm *kvm, unsigned long liobn, unsigned long ioba,
				 unsigned long tce_list, unsigned long npages, long *ret);
bool pvtce_rs_h_stuff_tce(struct kvm *kvm, unsigned long liobn, unsigned long ioba, unsigned long tce_value,
			  unsigned long npages, long *ret);
bool pvtce_rs_h_get_tce(struct kvm *kvm, unsigned long liobn, unsigned long ioba, long *ret,
			unsigned long *r4, bool early, unsigned int cpu);
void pvtce_rs_window_release(void *window);
struct page *pvtce_rs_window_page(void *window, unsigned long pgoff);
long pvtce_rs_window_ioctl(void *window, unsigned int cmd, unsigned long arg);

/* Prototypes for the functions Rust calls (kmod/ffi.rs, kmod/iommu.rs): -Wmissing-prototypes stays quiet. */
int pvtce_glue_register(void);
void pvtce_glue_unregister(void);
int pvtce_glue_window_fd(void *window);
struct mm_struct *pvtce_glue_kvm_mm(struct kvm *kvm);
struct srcu_struct *pvtce_glue_kvm_srcu(struct kvm *kvm);
int pvtce_glue_gpa_to_ua(struct kvm *kvm, u64 gpa, u64 *ua);
struct iommu_table *pvtce_glue_group_table(struct iommu_group *grp, int i);
void pvtce_glue_table_geometry(struct iommu_table *tbl, u32 *page_shift, u64 *offset, u64 *size, bool *kills);
__be64 *pvtce_glue_useraddrptr(struct iommu_table *tbl, long entry, bool alloc);
void pvtce_glue_set_dirty(struct mm_struct *mm, u64 hpa, u32 page_shift);
long pvtce_glue_parent_count(u32 flags, u64 *counts);
long pvtce_glue_l1_time(u32 flags, u64 *out);
long pvtce_glue_host_read(int groupfd, u32 table, u64 first, u64 count, u64 *out);
u64 pvtce_glue_timebase(void);
bool pvtce_glue_current_mm_is(struct mm_struct *mm);

/* ---- the backend hooks ---- */

static long pvtce_create_table(struct kvm *kvm, struct kvm_create_spapr_tce_64 *args)
{
	return pvtce_rs_create_table(kvm, args->liobn, args->page_shift, args->offset, args->size);
}

static const struct file_operations pvtce_window_fops;

static long pvtce_attach_group(struct kvm *kvm, int tablefd, struct iommu_group *grp)
{
	/*
	 * PVTCE_MODE_USERSPACE: KVM_CREATE_SPAPR_TCE_64 failed, so the VMM keeps the table itself, and QEMU
	 * still links "its" table fd, which is then -1 (hw/ppc/spapr_iommu.c spapr_tce_get_attr). If that
	 * fails, QEMU's vfio_listener_region_add returns before it registers its IOMMU notifier and no guest
	 * mapping ever reaches VFIO. There is nothing to link: succeed.
	 */
	if (tablefd == -1 && pvtce_rs_userspace_mode())
		return 0;

	CLASS(fd, f)(tablefd);

	if (fd_empty(f))
		return -EBADF;
	if (fd_file(f)->f_op != &pvtce_window_fops)
		return -ENOIOCTLCMD;
	/* The file holds the window alive for the duration of the call. */
	return pvtce_rs_attach(kvm, fd_file(f)->private_data, grp);
}

/*
 * The hypercalls run in the vCPU thread (current->mm is the VMM's); Rust enters kvm->srcu itself.
 */
static bool pvtce_h_put_tce(struct kvm_vcpu *vcpu, unsigned long liobn, unsigned long ioba,
			    unsigned long tce, long *ret)
{
	return pvtce_rs_h_put_tce(vcpu->kvm, liobn, ioba, tce, ret, false);
}

static bool pvtce_h_put_tce_indirect(struct kvm_vcpu *vcpu, unsigned long liobn, unsigned long ioba,
				     unsigned long tce_list, unsigned long npages, long *ret)
{
	return pvtce_rs_h_put_tce_indirect(vcpu->kvm, liobn, ioba, tce_list, npages, ret);
}

static bool pvtce_h_stuff_tce(struct kvm_vcpu *vcpu, unsigned long liobn, unsigned long ioba,
			      unsigned long tce_value, unsigned long npages, long *ret)
{
	return pvtce_rs_h_stuff_tce(vcpu->kvm, liobn, ioba, tce_value, npages, ret);
}

/*
 * The early path's functions, C and Rust (kmod/hcall.rs, kmod/host.rs, the core's execute_planned), share one
 * text section, so that they lie in as few pages as the code takes: under TCG each page an exit's handler
 * reaches costs a TLB fill and each branch into another page a jump-cache miss, since QEMU flushes both at
 * every L1<->L2 switch (docs/bench/analysis.md). The module loader places it with the rest of the text.
 */
#define PVTCE_HOT __section(".text.pvtce_hot")

/* H_GET_TCE on either path (early: the lockless read alone); on H_SUCCESS the entry goes to GPR4. */
PVTCE_HOT static bool pvtce_get_tce(struct kvm_vcpu *vcpu, unsigned long liobn, unsigned long ioba, long *ret, bool early)
{
	unsigned long r4 = 0;

	/* The CPU, for the early path's per-CPU count (interrupts are off there: it cannot change). */
	if (!pvtce_rs_h_get_tce(vcpu->kvm, liobn, ioba, ret, &r4, early, early ? raw_smp_processor_id() : 0))
		return false;
	if (*ret == H_SUCCESS)
		kvmppc_set_gpr(vcpu, 4, r4);
	return true;
}

static bool pvtce_h_get_tce(struct kvm_vcpu *vcpu, unsigned long liobn, unsigned long ioba, long *ret)
{
	return pvtce_get_tce(vcpu, liobn, ioba, ret, false);
}

/*
 * The early path (patches/linux/0011): interrupts hard-disabled, preemption off, kvm->srcu held; Rust takes
 * no sleeping lock but by trylock and allocates nothing, and declines (false, nothing changed) whatever it
 * cannot finish so. H_GET_TCE and H_PUT_TCE only: INDIRECT copies the guest's list (may fault) and STUFF's
 * cost is its batch, not the exit. A mapping H_PUT_TCE only on a pseries host, where the host table's levels
 * are all present (tce_exchange_pseries, it_userspace flat): on powernv a missing level is allocated on the
 * map path, which the early path must not do, so PUT keeps the normal path there.
 */
PVTCE_HOT static bool pvtce_h_tce_early(struct kvm_vcpu *vcpu, unsigned long nr, long *ret)
{
	switch (nr) {
	case H_GET_TCE:
		return pvtce_get_tce(vcpu, kvmppc_get_gpr(vcpu, 4), kvmppc_get_gpr(vcpu, 5), ret, true);
	case H_PUT_TCE:
		if (!firmware_has_feature(FW_FEATURE_LPAR))
			return false;
		return pvtce_rs_h_put_tce(vcpu->kvm, kvmppc_get_gpr(vcpu, 4), kvmppc_get_gpr(vcpu, 5),
					  kvmppc_get_gpr(vcpu, 6), ret, true);
	}
	return false;
}

static const struct kvmppc_tce_backend pvtce_backend = {
	.create_table = pvtce_create_table,
	.has_liobn = pvtce_rs_has_liobn,
	.attach_group = pvtce_attach_group,
	.release_group = pvtce_rs_release_group,
	.h_put_tce = pvtce_h_put_tce,
	.h_put_tce_indirect = pvtce_h_put_tce_indirect,
	.h_stuff_tce = pvtce_h_stuff_tce,
	.h_get_tce = pvtce_h_get_tce,
	.h_tce_early = pvtce_h_tce_early,
};

int pvtce_glue_register(void)
{
	return kvmppc_tce_backend_register(&pvtce_backend);
}

void pvtce_glue_unregister(void)
{
	kvmppc_tce_backend_unregister(&pvtce_backend);
}

/* ---- the window file: mmap of the guest-visible table, release ---- */

static vm_fault_t pvtce_window_fault(struct vm_fault *vmf)
{
	struct page *page = pvtce_rs_window_page(vmf->vma->vm_file->private_data, vmf->pgoff);

	if (!page)
		return VM_FAULT_SIGBUS;
	/*
	 * Table pages are freed only when the window is, and the mapping holds the window's file: the page is
	 * alive here, and the fault hands over a reference of its own.
	 */
	get_page(page);
	vmf->page = page;
	return 0;
}

static const struct vm_operations_struct pvtce_window_vm_ops = {
	.fault = pvtce_window_fault,
};

static int pvtce_window_mmap(struct file *file, struct vm_area_struct *vma)
{
	/*
	 * As Linux's table fd: readable and writable (QEMU maps it read-write and writes it back on incoming
	 * migration). What the VMM writes is what H_GET_TCE returns for those entries; the hardware is not
	 * touched, as with Linux.
	 */
	vma->vm_ops = &pvtce_window_vm_ops;
	return 0;
}

static int pvtce_window_release(struct inode *inode, struct file *file)
{
	pvtce_rs_window_release(file->private_data);
	return 0;
}

static long pvtce_window_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	return pvtce_rs_window_ioctl(file->private_data, cmd, arg);
}

static const struct file_operations pvtce_window_fops = {
	.owner = THIS_MODULE,
	.mmap = pvtce_window_mmap,
	.release = pvtce_window_release,
	.unlocked_ioctl = pvtce_window_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

int pvtce_glue_window_fd(void *window)
{
	return anon_inode_getfd("pvtce-tce", &pvtce_window_fops, window, O_RDWR | O_CLOEXEC);
}

/* ---- KVM ---- */

PVTCE_HOT struct mm_struct *pvtce_glue_kvm_mm(struct kvm *kvm)
{
	return kvm->mm;
}

/* kvm->srcu: Rust borrows it as a kernel::sync::Srcu (read sections, synchronize). */
struct srcu_struct *pvtce_glue_kvm_srcu(struct kvm *kvm)
{
	return &kvm->srcu;
}

/* Guest physical to VMM user address through the memslots; the caller holds kvm->srcu. */
PVTCE_HOT int pvtce_glue_gpa_to_ua(struct kvm *kvm, u64 gpa, u64 *ua)
{
	unsigned long gfn = gpa >> PAGE_SHIFT;
	struct kvm_memory_slot *memslot = __gfn_to_memslot(kvm_memslots(kvm), gfn);

	if (!memslot)
		return -EINVAL;
	*ua = __gfn_to_hva_memslot(memslot, gfn) | (gpa & ~PAGE_MASK);
	return 0;
}

/* The timebase, which L2's mftb also counts: the benchmark compares the two directly. */
u64 pvtce_glue_timebase(void)
{
	return get_tb();
}

/* Whether the calling task runs in `mm` (a VM's VMM); see the header for why this is not Rust. */
bool pvtce_glue_current_mm_is(struct mm_struct *mm)
{
	return current->mm == mm;
}

/* ---- the group's hardware tables ---- */

struct iommu_table *pvtce_glue_group_table(struct iommu_group *grp, int i)
{
	struct iommu_table_group *table_group = iommu_group_get_iommudata(grp);

	if (!table_group || i < 0 || i >= IOMMU_TABLE_GROUP_MAX_TABLES)
		return NULL;
	return table_group->tables[i];
}

void pvtce_glue_table_geometry(struct iommu_table *tbl, u32 *page_shift, u64 *offset, u64 *size, bool *kills)
{
	*page_shift = tbl->it_page_shift;
	*offset = tbl->it_offset;
	*size = tbl->it_size;
	/* Whether iommu_tce_kill() does anything for this table (pseries has no tce_kill: a no-op there). */
	*kills = tbl->it_ops->tce_kill != NULL;
}

/*
 * The user address kept beside each hardware entry (it_userspace), which VFIO's sPAPR v2 code also uses to
 * drop its accounting when it clears the table.
 */
PVTCE_HOT __be64 *pvtce_glue_useraddrptr(struct iommu_table *tbl, long entry, bool alloc)
{
	if (!tbl->it_ops->useraddrptr)
		return NULL;
	return tbl->it_ops->useraddrptr(tbl, entry, alloc);
}

/*
 * What iommu_tce_xchg_no_kill() does for an old entry that allowed device writes, for the batched update
 * (iommu_tce_set_multi_no_kill, patches/linux/0008) that reads no old entry back. SetPageDirty and
 * pfn_to_page are inlines.
 */
PVTCE_HOT void pvtce_glue_set_dirty(struct mm_struct *mm, u64 hpa, u32 page_shift)
{
	unsigned long size = 0;

	if (!mm_iommu_is_devmem(mm, hpa, page_shift, &size))
		SetPageDirty(pfn_to_page(hpa >> PAGE_SHIFT));
}

/*
 * Reads hardware entries of a VFIO group's table (PVTCE_HOST_READ). The group file is held for the whole
 * read, which keeps the group and its tables alive.
 */
long pvtce_glue_host_read(int groupfd, u32 table, u64 first, u64 count, u64 *out)
{
	struct iommu_table_group *table_group;
	struct iommu_group *grp;
	struct iommu_table *tbl;
	long ret;
	u64 i;
	CLASS(fd, f)(groupfd);

	if (fd_empty(f))
		return -EBADF;
	/* vfio_file_iommu_group() takes a reference on the group: dropped on every path below. */
	grp = vfio_file_iommu_group(fd_file(f));
	if (!grp)
		return -EINVAL;
	ret = -EINVAL;
	table_group = iommu_group_get_iommudata(grp);
	if (!table_group || table >= IOMMU_TABLE_GROUP_MAX_TABLES)
		goto out;
	ret = -ENOENT;
	tbl = table_group->tables[table];
	if (!tbl)
		goto out;
	ret = -EOPNOTSUPP;
	if (!tbl->it_ops->get)
		goto out;
	ret = -EINVAL;
	if (first < tbl->it_offset || count > tbl->it_size ||
	    first - tbl->it_offset > tbl->it_size - count)
		goto out;
	for (i = 0; i < count; i++)
		out[i] = tbl->it_ops->get(tbl, first + i);
	ret = 0;
out:
	iommu_group_put(grp);
	return ret;
}

/*
 * PVTCE_PARENT_HCALLS (benchmark only): TCE hypercalls to this kernel's own hypervisor, counted by a probe on
 * the pseries hcall_entry tracepoint. The tracepoint is not exported by symbol, so it is found by name
 * (for_each_kernel_tracepoint); C because the probe must have the tracepoint's C prototype and the kernel
 * crate has no tracepoint abstraction. flags: 1 start (zeroes), 2 stop; counts[4] = put, indirect, stuff, get.
 */
static atomic64_t pvtce_parent[4];
static struct tracepoint *pvtce_hcall_tp;
static bool pvtce_counting;
static DEFINE_MUTEX(pvtce_parent_lock);

static void pvtce_hcall_probe(void *data, unsigned long opcode, unsigned long *args)
{
	switch (opcode) {
	case H_PUT_TCE:
		atomic64_inc(&pvtce_parent[0]);
		break;
	case H_PUT_TCE_INDIRECT:
		atomic64_inc(&pvtce_parent[1]);
		break;
	case H_STUFF_TCE:
		atomic64_inc(&pvtce_parent[2]);
		break;
	case H_GET_TCE:
		atomic64_inc(&pvtce_parent[3]);
		break;
	}
}

static void pvtce_find_hcall_tp(struct tracepoint *tp, void *priv)
{
	if (!strcmp(tp->name, "hcall_entry"))
		*(struct tracepoint **)priv = tp;
}

long pvtce_glue_parent_count(u32 flags, u64 *counts)
{
	long ret = 0;
	int i;

	if (flags > 2)
		return -EINVAL;
	mutex_lock(&pvtce_parent_lock);
	if (flags == 1) {
		if (pvtce_counting) {
			ret = -EBUSY;
			goto out;
		}
		if (!pvtce_hcall_tp)
			for_each_kernel_tracepoint(pvtce_find_hcall_tp, &pvtce_hcall_tp);
		if (!pvtce_hcall_tp) {
			ret = -ENOENT;
			goto out;
		}
		for (i = 0; i < 4; i++)
			atomic64_set(&pvtce_parent[i], 0);
		ret = tracepoint_probe_register(pvtce_hcall_tp, (void *)pvtce_hcall_probe, NULL);
		if (ret)
			goto out;
		pvtce_counting = true;
	} else if (flags == 2 && pvtce_counting) {
		tracepoint_probe_unregister(pvtce_hcall_tp, (void *)pvtce_hcall_probe, NULL);
		/* No probe runs once this returns (module unload may follow). */
		tracepoint_synchronize_unregister();
		pvtce_counting = false;
	}
	for (i = 0; i < 4; i++)
		counts[i] = atomic64_read(&pvtce_parent[i]);
out:
	mutex_unlock(&pvtce_parent_lock);
	return ret;
}

/*
 * PVTCE_L1_TIME (benchmark only; uapi/include/linux/pvtce.h): this kernel's side of each guest exit, for the
 * task that starts the measurement, by probes on kvm-hv's tracepoints (kvm_guest_exit, kvm_hcall_enter,
 * kvm_hcall_exit, kvm_guest_enter in arch/powerpc/kvm/book3s_hv.c) and, with NESTED, on the pseries
 * hcall_exit / hcall_entry tracepoints around H_ENTER_NESTED (kvmhv_vcpu_entry_p9_nested). kvm-hv's
 * tracepoints are in its module, which for_each_kernel_tracepoint does not walk: they are found through the
 * tracepoint module notifier, which is called at once for every module already loaded, and kvm_hv is held
 * (try_module_get) while the probes are in. C for the same reason as the parent count.
 *
 * Only the owner's events count, and they all happen in the owner's own context, one after another (the
 * vCPU run loop of its KVM_RUN; H_ENTER_NESTED is never made from an interrupt), so the interval state
 * needs no lock: other tasks' probes read only `owner`. START sets it before the probes go in, STOP clears
 * it after tracepoint_synchronize_unregister(), and both run under pvtce_l1_lock.
 */
#define PVTCE_L1_NKINDS 5
#define PVTCE_L1_NTP 4
static const char *const pvtce_l1_tp_names[PVTCE_L1_NTP] = {
	"kvm_guest_exit", "kvm_hcall_enter", "kvm_hcall_exit", "kvm_guest_enter",
};
static struct {
	struct task_struct *owner;
	bool open;          /* since a kvm_guest_exit, no kvm_guest_enter yet */
	bool nopen;         /* since an H_ENTER_NESTED return, no H_ENTER_NESTED call yet */
	int kind;           /* of the open interval */
	int nkind;          /* of the open nested interval: the first exit's after the return, -1 before */
	u64 t_exit, t_hcall, hcall, t_nexit;
	u64 acc[PVTCE_L1_NKINDS][5]; /* exits, l1, hcall, nested exits, nested ticks */
} pvtce_l1;
static struct tracepoint *pvtce_l1_tp[PVTCE_L1_NTP];
static struct tracepoint *pvtce_hcall_exit_tp;
static struct module *pvtce_l1_mod;
static bool pvtce_l1_on, pvtce_l1_nested;
static DEFINE_MUTEX(pvtce_l1_lock);

static bool pvtce_l1_mine(void)
{
	return READ_ONCE(pvtce_l1.owner) == current;
}

static int pvtce_l1_kind(struct kvm_vcpu *vcpu)
{
	if (vcpu->arch.trap != BOOK3S_INTERRUPT_SYSCALL)
		return 4;
	switch (kvmppc_get_gpr(vcpu, 3)) {
	case H_PUT_TCE:
		return 0;
	case H_PUT_TCE_INDIRECT:
		return 1;
	case H_STUFF_TCE:
		return 2;
	case H_GET_TCE:
		return 3;
	}
	return 4;
}

static void pvtce_l1_guest_exit(void *data, struct kvm_vcpu *vcpu)
{
	u64 now = get_tb();

	if (!pvtce_l1_mine())
		return;
	pvtce_l1.t_exit = now;
	pvtce_l1.kind = pvtce_l1_kind(vcpu);
	pvtce_l1.hcall = 0;
	pvtce_l1.open = true;
	if (pvtce_l1.nopen && pvtce_l1.nkind < 0)
		pvtce_l1.nkind = pvtce_l1.kind;
}

static void pvtce_l1_hcall_enter(void *data, struct kvm_vcpu *vcpu)
{
	if (pvtce_l1_mine())
		pvtce_l1.t_hcall = get_tb();
}

static void pvtce_l1_hcall_exit(void *data, struct kvm_vcpu *vcpu, int ret)
{
	u64 now = get_tb();

	if (pvtce_l1_mine() && pvtce_l1.open)
		pvtce_l1.hcall += now - pvtce_l1.t_hcall;
}

static void pvtce_l1_guest_enter(void *data, struct kvm_vcpu *vcpu)
{
	u64 now = get_tb();
	u64 *a;

	if (!pvtce_l1_mine() || !pvtce_l1.open)
		return;
	a = pvtce_l1.acc[pvtce_l1.kind];
	a[0]++;
	a[1] += now - pvtce_l1.t_exit;
	a[2] += pvtce_l1.hcall;
	pvtce_l1.open = false;
}

/* The nested guest returned: the first instant this kernel runs again after the guest's exit. */
static void pvtce_l1_nested_ret(void *data, unsigned long opcode, long retval, unsigned long *retbuf)
{
	u64 now = get_tb();

	if (opcode != H_ENTER_NESTED || !pvtce_l1_mine())
		return;
	pvtce_l1.t_nexit = now;
	pvtce_l1.nopen = true;
	pvtce_l1.nkind = -1;
}

/* About to run the nested guest again: the last instant of this kernel's side. */
static void pvtce_l1_nested_call(void *data, unsigned long opcode, unsigned long *args)
{
	u64 now = get_tb();
	u64 *a;

	if (opcode != H_ENTER_NESTED || !pvtce_l1_mine() || !pvtce_l1.nopen || pvtce_l1.nkind < 0)
		return;
	a = pvtce_l1.acc[pvtce_l1.nkind];
	a[3]++;
	a[4] += now - pvtce_l1.t_nexit;
	pvtce_l1.nopen = false;
}

static void *const pvtce_l1_probes[PVTCE_L1_NTP] = {
	pvtce_l1_guest_exit, pvtce_l1_hcall_enter, pvtce_l1_hcall_exit, pvtce_l1_guest_enter,
};

/* Called under tracepoint_module_list_mutex, for each loaded module at registration: kvm_hv is alive here. */
static int pvtce_l1_find(struct notifier_block *nb, unsigned long val, void *data)
{
	struct tp_module *tp_mod = data;
	struct module *mod = tp_mod->mod;
	unsigned int i, k;

	if (val != MODULE_STATE_COMING || pvtce_l1_mod || strcmp(mod->name, "kvm_hv"))
		return NOTIFY_OK;
	if (!try_module_get(mod))
		return NOTIFY_OK;
	for (i = 0; i < mod->num_tracepoints; i++) {
		struct tracepoint *tp = tracepoint_ptr_deref(&mod->tracepoints_ptrs[i]);

		for (k = 0; k < PVTCE_L1_NTP; k++)
			if (!strcmp(tp->name, pvtce_l1_tp_names[k]))
				pvtce_l1_tp[k] = tp;
	}
	pvtce_l1_mod = mod;
	return NOTIFY_OK;
}

static struct notifier_block pvtce_l1_nb = { .notifier_call = pvtce_l1_find };

static void pvtce_find_hcall_exit_tp(struct tracepoint *tp, void *priv)
{
	if (!strcmp(tp->name, "hcall_exit"))
		*(struct tracepoint **)priv = tp;
}

/* Takes the probes out (the first `n` kvm-hv ones, and the nested pair if in) and lets kvm_hv go. */
static void pvtce_l1_remove(int n, bool nested)
{
	int k;

	if (nested) {
		tracepoint_probe_unregister(pvtce_hcall_exit_tp, (void *)pvtce_l1_nested_ret, NULL);
		tracepoint_probe_unregister(pvtce_hcall_tp, (void *)pvtce_l1_nested_call, NULL);
	}
	for (k = 0; k < n; k++)
		tracepoint_probe_unregister(pvtce_l1_tp[k], pvtce_l1_probes[k], NULL);
	/* No probe runs once this returns (module unload may follow). */
	tracepoint_synchronize_unregister();
	WRITE_ONCE(pvtce_l1.owner, NULL);
	module_put(pvtce_l1_mod);
	pvtce_l1_mod = NULL;
	memset(pvtce_l1_tp, 0, sizeof(pvtce_l1_tp));
}

/* flags: 1 start (| 4 nested), 2 stop, 0 read; out[5 * 5]: per kind, the five sums of pvtce_l1_exits. */
long pvtce_glue_l1_time(u32 flags, u64 *out)
{
	bool nested = flags & 4;
	long ret = 0;
	int k;

	if (flags != 0 && flags != 1 && flags != 5 && flags != 2)
		return -EINVAL;
	mutex_lock(&pvtce_l1_lock);
	if (flags & 1) {
		if (pvtce_l1_on) {
			ret = -EBUSY;
			goto out;
		}
		ret = -ENOENT;
		if (nested) {
			if (!pvtce_hcall_tp)
				for_each_kernel_tracepoint(pvtce_find_hcall_tp, &pvtce_hcall_tp);
			if (!pvtce_hcall_exit_tp)
				for_each_kernel_tracepoint(pvtce_find_hcall_exit_tp, &pvtce_hcall_exit_tp);
			if (!pvtce_hcall_tp || !pvtce_hcall_exit_tp)
				goto out;
		}
		ret = register_tracepoint_module_notifier(&pvtce_l1_nb);
		if (ret)
			goto out;
		unregister_tracepoint_module_notifier(&pvtce_l1_nb);
		ret = -ENOENT;
		if (!pvtce_l1_mod)
			goto out;
		for (k = 0; k < PVTCE_L1_NTP; k++)
			if (!pvtce_l1_tp[k])
				break;
		if (k < PVTCE_L1_NTP) {
			pvtce_l1_remove(0, false);
			goto out;
		}
		memset(&pvtce_l1, 0, sizeof(pvtce_l1));
		pvtce_l1.nkind = -1;
		WRITE_ONCE(pvtce_l1.owner, current);
		for (k = 0; k < PVTCE_L1_NTP; k++) {
			ret = tracepoint_probe_register(pvtce_l1_tp[k], pvtce_l1_probes[k], NULL);
			if (ret) {
				pvtce_l1_remove(k, false);
				goto out;
			}
		}
		if (nested) {
			ret = tracepoint_probe_register(pvtce_hcall_exit_tp, (void *)pvtce_l1_nested_ret, NULL);
			if (!ret) {
				ret = tracepoint_probe_register(pvtce_hcall_tp, (void *)pvtce_l1_nested_call, NULL);
				if (ret)
					tracepoint_probe_unregister(pvtce_hcall_exit_tp,
								    (void *)pvtce_l1_nested_ret, NULL);
			}
			if (ret) {
				pvtce_l1_remove(PVTCE_L1_NTP, false);
				goto out;
			}
		}
		pvtce_l1_on = true;
		pvtce_l1_nested = nested;
	} else if (flags == 2 && pvtce_l1_on) {
		pvtce_l1_remove(PVTCE_L1_NTP, pvtce_l1_nested);
		pvtce_l1_on = false;
	}
	for (k = 0; k < PVTCE_L1_NKINDS * 5; k++)
		out[k] = pvtce_l1.acc[k / 5][k % 5];
out:
	mutex_unlock(&pvtce_l1_lock);
	return ret;
}

/* ---- trace events (kmod/pvtce_trace.h; called from kmod/trace.rs) ---- */

#define CREATE_TRACE_POINTS
#define CREATE_RUST_TRACE_POINTS
#include "pvtce_trace.h"
