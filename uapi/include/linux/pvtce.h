/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * pvtce: what pvtce adds to the sPAPR TCE uAPI. Windows are still created with KVM_CREATE_SPAPR_TCE_64 and
 * linked with KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE (an unmodified VMM works as is); this header only adds:
 *
 * - PVTCE_WINDOW_INFO on a window's table fd (one that pvtce created): geometry and statistics.
 * - PVTCE_WINDOW_EXCHANGE on such a fd: times the module's bare host-table update (the benchmark's floor).
 *   Not part of the production surface: a module loaded without `bench_ioctls=1` answers ENOTTY, as for a
 *   command the fd does not have.
 * - /dev/pvtce, the control device: which implementation creates new windows (side-by-side runs against
 *   Linux's built-in code), a read of a VFIO group's hardware table entries (for conformance tests), and
 *   the list of windows with their statistics (for the pvtce CLI).
 *
 * Every struct starts with argsz (set by userspace to sizeof the struct it knows) and flags (0); structs
 * only grow at the end; unknown flags are refused with EINVAL.
 */
#ifndef _UAPI_LINUX_PVTCE_H
#define _UAPI_LINUX_PVTCE_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define PVTCE_IOCTL_TYPE 0xB9

/* Geometry and counters of one window. */
struct pvtce_window_info {
	__u32 argsz;
	__u32 flags;
	__u64 liobn;
	__u32 page_shift;
	__u32 links;              /* hardware tables linked */
	__u64 offset;             /* first bus page, in window pages */
	__u64 size;               /* in window pages */
	__u64 table_bytes;        /* memory of the guest-visible table */
	__u64 h_put_tce;          /* hypercalls handled in the kernel, by kind */
	__u64 h_put_tce_indirect;
	__u64 h_stuff_tce;
	__u64 h_get_tce;
	__u64 declined;           /* answered H_TOO_HARD: the VMM finishes them */
	__u64 rejected;           /* answered H_PARAMETER (or another PAPR error) */
	__u64 tces_changed;       /* guest-visible entries written */
	__u64 host_updates;       /* hardware entries exchanged */
	__u64 host_kills;         /* invalidations issued */
	__u64 early;              /* of the hypercalls above, answered in KVM-HV's early path (kernel patch 0011) */
};

#define PVTCE_WINDOW_INFO _IOWR(PVTCE_IOCTL_TYPE, 0x00, struct pvtce_window_info)

/*
 * Benchmark only (module parameter bench_ioctls=1; ENOTTY otherwise).
 * The host-table update alone, as a hypercall performs it but without one: on the window's first linked
 * hardware table, map `count` entries from window entry `first` to the VMM's preregistered pages from `ua`
 * (exchange each, then one invalidation), then clear them the same way. Only the VMM of the window's VM may
 * call it (EPERM), on a range that is clear in the guest-visible table (EBUSY); the window lock is held
 * throughout, so no hypercall sees the range meanwhile, and it is left as it was. EINVAL: bad argsz, flags
 * (only PVTCE_EXCHANGE_BATCHED), count (1..PVTCE_EXCHANGE_MAX) or range; ENODEV: no linked table; EFAULT: `ua`
 * not preregistered; EIO: a batched pass the parent hypervisor refused (the range is left clear).
 */
struct pvtce_exchange {
	__u32 argsz;
	__u32 flags;
	__u64 first;        /* window entry (0 = the window's first) */
	__u64 count;
	__u64 ua;           /* VMM address of the first page, window-page aligned */
	__u64 map_ticks;    /* out: timebase ticks of the mapping pass (count exchanges + 1 invalidation) */
	__u64 unmap_ticks;  /* out: the same for the clearing pass */
};
#define PVTCE_EXCHANGE_MAX 512
/* flags: both passes are one batched update each (Host::table_run: iommu_tce_set_multi_no_kill, one parent
 * H_PUT_TCE_INDIRECT / H_STUFF_TCE per 512 entries on pseries) instead of one exchange per entry. */
#define PVTCE_EXCHANGE_BATCHED 1
#define PVTCE_WINDOW_EXCHANGE _IOWR(PVTCE_IOCTL_TYPE, 0x04, struct pvtce_exchange)

/*
 * On /dev/pvtce, benchmark only (bench_ioctls=1, else ENOTTY): the TCE hypercalls this kernel makes to its
 * own hypervisor (on a pseries host: L1 to L0), counted by a probe on the pseries `hcall_entry` tracepoint
 * over every CPU and LIOBN, whoever makes them (pvtce.ko, Linux's built-in code, any driver).
 * PVTCE_PARENT_START zeroes the counters and starts counting, PVTCE_PARENT_STOP stops; every call returns
 * the counts so far. EINVAL: both flags; EBUSY: START while counting; ENOENT: the kernel has no
 * `hcall_entry` tracepoint (not a pseries kernel).
 */
struct pvtce_parent_hcalls {
	__u32 argsz;
	__u32 flags;
	__u64 put;       /* out: H_PUT_TCE */
	__u64 indirect;  /* out: H_PUT_TCE_INDIRECT */
	__u64 stuff;     /* out: H_STUFF_TCE */
	__u64 get;       /* out: H_GET_TCE */
};
#define PVTCE_PARENT_START 1
#define PVTCE_PARENT_STOP  2
#define PVTCE_PARENT_HCALLS _IOWR(PVTCE_IOCTL_TYPE, 0x05, struct pvtce_parent_hcalls)

/*
 * On /dev/pvtce, benchmark only (bench_ioctls=1, else ENOTTY): where this kernel spends the time between a
 * guest's exit and its next entry, for the vCPUs the calling task runs (the task that starts the
 * measurement; nobody else's exits count), by probes on kvm-hv's tracepoints and read with the timebase.
 * Each exit is one interval from `kvm_guest_exit` (kvmhv_run_single_vcpu back from the guest) to the next
 * `kvm_guest_enter` (about to enter it again), classified by the exit: a TCE hypercall (sc 1 with that
 * number in r3) or anything else; inside it, `kvm_hcall_enter` to `kvm_hcall_exit` (kvmppc_pseries_do_hcall)
 * is the handler. With PVTCE_L1_NESTED (a pseries host only), also from the return of the H_ENTER_NESTED
 * hypercall that ran the guest to the next H_ENTER_NESTED (the pseries `hcall_exit` / `hcall_entry`
 * tracepoints): all of this kernel's side, the nested entry's own register switch included; it turns on
 * hypercall tracing, which slows every hypercall this kernel makes meanwhile.
 * An interval still open at STOP (the last exit, to the VMM) is not counted. EBUSY: START while measuring;
 * ENOENT: kvm_hv is not loaded (or has not these tracepoints), or NESTED on a kernel without hcall tracing.
 */
struct pvtce_l1_exits {
	__u64 exits;         /* out: closed intervals of this kind */
	__u64 l1_ticks;      /* out: their sum, kvm_guest_exit to kvm_guest_enter */
	__u64 hcall_ticks;   /* out: the handler's part of them, kvm_hcall_enter to kvm_hcall_exit */
	__u64 nested_exits;  /* out: with NESTED: closed intervals, H_ENTER_NESTED's return to the next call */
	__u64 nested_ticks;  /* out: their sum */
};
/* kind[]: H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE, H_GET_TCE, any other exit */
#define PVTCE_L1_KINDS 5
struct pvtce_l1_time {
	__u32 argsz;
	__u32 flags;
	struct pvtce_l1_exits kind[PVTCE_L1_KINDS];
};
#define PVTCE_L1_START  1 /* zero, start */
#define PVTCE_L1_STOP   2 /* stop; every call returns the sums so far */
#define PVTCE_L1_NESTED 4 /* with START: the H_ENTER_NESTED intervals too */
#define PVTCE_L1_TIME _IOWR(PVTCE_IOCTL_TYPE, 0x06, struct pvtce_l1_time)

/* Which implementation creates new windows (existing ones keep theirs). */
#define PVTCE_MODE_BUILTIN 0 /* Linux's built-in code (pvtce declines) */
#define PVTCE_MODE_PVTCE   1 /* pvtce (the default once loaded) */
/*
 * Neither: KVM_CREATE_SPAPR_TCE_64 fails with EOPNOTSUPP, so the VMM keeps the window in its own memory and
 * handles every TCE hypercall itself (QEMU falls back on any failure of that ioctl), and
 * KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE with tablefd -1 (what QEMU then links) succeeds and links nothing. For
 * side-by-side runs of an unmodified VMM's userspace path.
 */
#define PVTCE_MODE_USERSPACE 2

struct pvtce_mode {
	__u32 argsz;
	__u32 flags;
	__u32 mode;   /* in: PVTCE_MODE_* */
	__u32 old;    /* out: the mode before */
};

#define PVTCE_SET_MODE _IOWR(PVTCE_IOCTL_TYPE, 0x01, struct pvtce_mode)

/* Reads hardware entries of a VFIO group's table: for tests that compare host tables. */
struct pvtce_host_read {
	__u32 argsz;
	__u32 flags;
	__s32 groupfd;  /* a VFIO group fd */
	__u32 table;    /* index in the group's tables[] (0 or 1) */
	__u64 first;    /* first entry, absolute (as the table numbers them) */
	__u64 count;    /* entries; at most PVTCE_HOST_READ_MAX */
	__u64 entries;  /* user pointer to count __u64: host physical address | W | R, or 0 */
};

#define PVTCE_HOST_READ_MAX 4096
#define PVTCE_HOST_READ _IOWR(PVTCE_IOCTL_TYPE, 0x02, struct pvtce_host_read)

/* Lists the windows pvtce holds (every VM): for the pvtce CLI. */
struct pvtce_windows {
	__u32 argsz;
	__u32 flags;
	__u32 capacity; /* in: entries room for at most this many pvtce_window_info */
	__u32 count;    /* out: how many windows exist (may exceed capacity; only capacity are written) */
	__u64 entries;  /* user pointer to capacity struct pvtce_window_info */
};

#define PVTCE_WINDOWS_MAX 1024
#define PVTCE_LIST_WINDOWS _IOWR(PVTCE_IOCTL_TYPE, 0x03, struct pvtce_windows)

#endif /* _UAPI_LINUX_PVTCE_H */
