//! Isolation (issue 13 §1): one VM or VMM process cannot reach another's windows, a guest maps only its own
//! preregistered RAM, and `/dev/pvtce` is root's. Every case runs on Linux's built-in path and on pvtce
//! (`PVTCE_SET_MODE`) and has one exact expected answer per path; docs/isolation.md lists them.
//!
//! - `isolation-vms`: VM A in a child VMM process (edu's group, a linked window, 8 entries mapped) hands its
//!   table fd and group fd to this process, VM B's VMM ([`take_fd`]: the L1 has no unix sockets). B's guest issues all four TCE
//!   hypercalls on A's LIOBN, first with no window of its own (every call leaves the kernel to B's VMM), then
//!   with a window of its own under the same LIOBN number (B's calls change B's window). B's VMM links A's
//!   table fd through B's KVM VFIO device (EINVAL). A third process takes the table fd from this one: it can write the guest-visible table through a read-write mmap on both paths (Linux's
//!   behaviour: H_GET_TCE shows the value, the hardware entry stays clear), and no ioctl of it changes the
//!   window. A's guest and hardware entries are compared before and after.
//! - `isolation-memory`: TCEs naming memory outside every memslot, in a memslot that is not preregistered,
//!   and in a preregistered memslot deleted while the guest maps it: H_TOO_HARD (the call leaves the kernel),
//!   nothing stored, hardware entries clear, and the system's page pins at their baseline afterwards.
//! - `isolation-dev`: `/dev/pvtce` opened by uid 65534: EACCES.
//! - `isolation-lookup`: two VMs with 48 windows each under the same LIOBN numbers (pvtce's lookup is one hash
//!   table over every VM): each guest reads its own entry back from each window; with half of one VM's windows
//!   closed, those LIOBNs leave the kernel and everything else reads back unchanged.

use crate::rig::*;
use pvtce_test_support::payload;
use pvtce_vmm_glue::kvm::{self, Kvm};
use pvtce_vmm_glue::mem::GuestMem;
use pvtce_vmm_glue::pvtce::{window_exchange, window_info, Mode};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Entries of A's window that A maps at the start, and the slots the tests read back.
const A_MAPPED: u64 = 8;
const SLOTS: u64 = 32;
/// The slot the third process writes through its mapping, and the one it asks PVTCE_WINDOW_EXCHANGE for.
const MMAP_SLOT: u64 = 24;
const EXCHANGE_SLOT: u64 = 28;
const MMAP_VALUE: u64 = 0x60_0000 | TCE_R | TCE_W;

fn errno_name(n: Option<i32>) -> String {
    match n {
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::ENOTTY) => "ENOTTY".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::EBADF) => "EBADF".into(),
        Some(n) => format!("errno {n}"),
        None => "no errno".into(),
    }
}

// ---- file descriptors from another process ----

/// A duplicate of fd `fd` of process `pid`, taken with pidfd_getfd(2). The L1 kernel is built without
/// networking (allnoconfig: no CONFIG_NET, so no unix sockets: bind gives ENOSYS), so SCM_RIGHTS is not
/// available; pidfd_getfd installs the same open file in the receiver as SCM_RIGHTS would (the same
/// `struct file`, a new descriptor), which is what the isolation cases depend on. Hand-written on libc: std
/// has no wrapper for either call.
fn take_fd(pid: u32, fd: RawFd) -> Result<OwnedFd, String> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return Err(format!("pidfd_open {pid}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `pidfd` is a descriptor we just got and own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number of that process and flags; it returns a new
    // descriptor of ours (close-on-exec) or -1.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(format!("pidfd_getfd {pid}:{fd}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `got` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

/// A window's description as it travels with its fd: `liobn shift offset_pages size_pages`.
fn window_line(w: &kvm::Window) -> String {
    format!("{:x} {} {:x} {:x}", w.liobn, w.page_shift, w.offset_pages, w.size_pages)
}

fn window_from(fd: OwnedFd, line: &str) -> Result<kvm::Window, String> {
    let f: Vec<u64> = line.split_whitespace().filter_map(|s| u64::from_str_radix(s, 16).ok()).collect();
    match f[..] {
        [liobn, shift, offset_pages, size_pages] => {
            Ok(kvm::Window { fd, liobn, page_shift: shift as u32, offset_pages, size_pages })
        }
        _ => Err(format!("bad window line {line:?}")),
    }
}

// ---- VM A: the child VMM that owns edu and a linked window ----

/// `pvtce-vmtests __isolation-a`: a rig with a linked window and entries 0..8 mapped; prints the numbers
/// of its table fd and group fd (for [`take_fd`]); then answers `check` (its guest's H_GET_TCE and the
/// hardware entries of the first [`SLOTS`] slots, one line) and `quit` on stdin.
pub fn child_a() -> Result<(), String> {
    let rig = Rig::new(Windows::Linked { tce_shift: 12, size: 1 << 28 })?;
    let win = rig.window_bus()?;
    let list: Vec<u64> = (0..A_MAPPED).map(|i| (0x40_0000 + (i << 12)) | TCE_R | TCE_W).collect();
    rig.write_list(&list)?;
    let (r, _) = rig.run(&[call(H_PUT_TCE_INDIRECT, [LIOBN, win, LIST_GPA, A_MAPPED])])?;
    if r[0].r3 != H_SUCCESS {
        return Err(format!("A: INDIRECT returned {}", r[0].r3));
    }
    let owner = if rig.pvtce_info()?.is_some() { "pvtce" } else { "builtin" };
    let table = rig.window()?;
    println!("{} {} {owner} {}", table.fd.as_raw_fd(), rig.group.fd().as_raw_fd(), window_line(table));
    std::io::stdout().flush().map_err(e("A: stdout"))?;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        match line.map_err(e("A: stdin"))?.trim() {
            "check" => {
                let gets: Vec<_> = (0..SLOTS).map(|i| call(H_GET_TCE, [LIOBN, win + (i << 12), 0, 0])).collect();
                let exits = rig.exited();
                let (r, _) = rig.run(&gets)?;
                let host = rig.host_read_any(win >> 12, SLOTS as usize)?;
                let g: Vec<String> = r.iter().map(|x| format!("{:x}:{:x}", x.r3, x.r4)).collect();
                let h: Vec<String> = host.iter().map(|x| format!("{x:x}")).collect();
                println!("exits={} get={} host={}", rig.exited() - exits, g.join(","), h.join(","));
                std::io::stdout().flush().map_err(e("A: stdout"))?;
            }
            "quit" => return Ok(()),
            other => return Err(format!("A: unknown command {other:?}")),
        }
    }
    Ok(())
}

struct ChildA {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChildA {
    fn start() -> Result<ChildA, String> {
        let mut child = Command::new("/proc/self/exe")
            .arg("__isolation-a")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(e("start VM A's VMM"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(ChildA { child, stdin, stdout })
    }

    /// A's view of its window: `exits=N get=r3:r4,... host=...`.
    fn check(&mut self) -> Result<String, String> {
        writeln!(self.stdin, "check").map_err(e("tell A"))?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(e("read A"))?;
        if !line.starts_with("exits=0 ") {
            return Err(format!("A's check failed or left the kernel: {line:?}"));
        }
        Ok(line.trim().to_string())
    }

    /// A's view is still `before`.
    fn unchanged(&mut self, before: &str, after_what: &str) -> Result<(), String> {
        let now = self.check()?;
        if now != before {
            return Err(format!("A changed after {after_what}: before {before}, after {now}"));
        }
        Ok(())
    }

    fn quit(mut self) -> Result<(), String> {
        writeln!(self.stdin, "quit").map_err(e("tell A"))?;
        let st = self.child.wait().map_err(e("wait for A"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("VM A's VMM failed: {st}"))
        }
    }
}

/// Field `k` (get or host) of A's check line, slot `i`.
fn slot(check: &str, field: &str, i: u64) -> String {
    check
        .split_whitespace()
        .find_map(|f| f.strip_prefix(field))
        .and_then(|v| v.split(',').nth(i as usize))
        .unwrap_or("?")
        .to_string()
}

// ---- the third process: a table fd it did not create ----

/// `pvtce-vmtests __isolation-third <pid> <fd> <window>`: takes fd `fd` of process `pid` (a table fd),
/// writes [`MMAP_SLOT`] through a read-write mapping, tries PVTCE_WINDOW_INFO and PVTCE_WINDOW_EXCHANGE,
/// prints one line of answers.
pub fn child_third(args: &[String]) -> Result<(), String> {
    let [pid, fd, window] = args else { return Err(format!("third: bad arguments {args:?}")) };
    let pid = pid.parse().map_err(|_| format!("third: bad pid {pid}"))?;
    let fd = fd.parse().map_err(|_| format!("third: bad fd {fd}"))?;
    let w = window_from(take_fd(pid, fd)?, window)?;
    let mmap = match w.write_entry(MMAP_SLOT, MMAP_VALUE) {
        Ok(()) => "ok".to_string(),
        Err(err) => errno_name(errno_of(&err)),
    };
    let info = match window_info(w.fd.as_fd(), w.liobn) {
        Ok(Some(_)) => "ok".to_string(),
        Ok(None) => "ENOTTY".to_string(),
        Err(err) => errno_name(errno_of(&err)),
    };
    // A page of this process's own memory, as a VMM would name its preregistered RAM.
    let own = GuestMem::new(1 << 16).map_err(e("third: memory"))?;
    let exchange = match window_exchange(w.fd.as_fd(), w.liobn, EXCHANGE_SLOT, 1, own.host_addr()) {
        Ok(_) => "ok".to_string(),
        Err(err) => errno_name(errno_of(&err)),
    };
    println!("mmap-write={mmap} info={info} exchange={exchange}");
    Ok(())
}

// ---- VM B: this process ----

/// A VM with RAM and the payload's vCPU and nothing else: no VFIO, no window.
struct BareVm {
    vcpu: kvm::Vcpu,
    vm: kvm::Vm,
    mem: GuestMem,
    exits: ExitLog,
}

impl BareVm {
    fn new() -> Result<BareVm, String> {
        let mem = GuestMem::new(RAM).map_err(e("B: guest RAM"))?;
        let vm = Kvm::open().map_err(e("open /dev/kvm"))?.create_vm().map_err(e("B: create VM"))?;
        // SAFETY: `mem` is guest RAM that no Rust reference covers, and BareVm drops the vCPU and the VM
        // before it (field order).
        let vcpu = unsafe { payload::boot(&vm, &mem) }.map_err(e("B: L2 vCPU"))?;
        Ok(BareVm { vcpu, vm, mem, exits: ExitLog::default() })
    }

    fn run(&self, calls: &[payload::Call]) -> Result<Vec<payload::Ret>, String> {
        Ok(run_on(&self.vcpu, &self.mem, payload::TABLE, calls, Policy::Count, &self.exits)?.rets)
    }
}

/// B's guest: the four hypercalls on LIOBN at A's bus addresses. Returns the r3s and r4 of the GETs.
fn b_calls(b: &BareVm, win: u64) -> Result<Vec<(i64, u64)>, String> {
    let list: Vec<u8> = (0..4u64).flat_map(|i| ((0x50_0000 + (i << 12)) | TCE_R | TCE_W).to_be_bytes()).collect();
    b.mem.write(LIST_GPA, &list).map_err(e("B: list"))?;
    let calls = [
        call(H_PUT_TCE, [LIOBN, win + (1 << 12), 0x50_0000 | TCE_R | TCE_W, 0]),
        call(H_PUT_TCE_INDIRECT, [LIOBN, win + (16 << 12), LIST_GPA, 4]),
        call(H_GET_TCE, [LIOBN, win + (16 << 12), 0, 0]),
        call(H_STUFF_TCE, [LIOBN, win, 0, A_MAPPED]),
        call(H_GET_TCE, [LIOBN, win, 0, 0]),
    ];
    Ok(b.run(&calls)?.iter().map(|r| (r.r3, r.r4)).collect())
}

/// One path of `isolation-vms`; returns its detail.
fn two_vms(mode: Mode) -> Result<String, String> {
    set_mode(mode)?;
    let want_pvtce = mode == Mode::Pvtce;
    eprintln!("isolation-vms {mode:?}: starting VM A's VMM");
    let mut a = ChildA::start()?;
    let mut line = String::new();
    a.stdout.read_line(&mut line).map_err(e("read A"))?;
    let f: Vec<&str> = line.trim().splitn(4, ' ').collect();
    let [table_no, group_no, owner, wline] = f[..] else { return Err(format!("bad line from A: {line:?}")) };
    if (owner == "pvtce") != want_pvtce {
        return Err(format!("A's window is {owner}'s"));
    }
    let fdno = |s: &str| s.parse::<RawFd>().map_err(|_| format!("bad fd {s} from A"));
    let a_pid = a.child.id();
    let group_fd = take_fd(a_pid, fdno(group_no)?)?;
    let a_table = window_from(take_fd(a_pid, fdno(table_no)?)?, wline)?;
    let win = a_table.offset_pages << a_table.page_shift;
    eprintln!("isolation-vms {mode:?}: took A's fds");
    let before = a.check()?;
    // A really has entries 0..8 mapped, in the guest table and in hardware.
    if slot(&before, "get=", 0) != format!("0:{:x}", 0x40_0000 | TCE_R | TCE_W) || slot(&before, "host=", 0) == "0" {
        return Err(format!("A's entries are not mapped: {before}"));
    }

    eprintln!("isolation-vms {mode:?}: A mapped, making VM B");
    // 1. B's guest on A's LIOBN with no window of its own: none of the five calls is handled in the kernel.
    let b = BareVm::new()?;
    let r = b_calls(&b, win)?;
    if r.iter().any(|&(r3, _)| r3 != EXITED) || b.exits.count.get() != 5 {
        return Err(format!(
            "B without a window: {r:x?}, {} exits; expected all 5 to leave the kernel",
            b.exits.count.get()
        ));
    }
    a.unchanged(&before, "B's calls")?;

    eprintln!("isolation-vms {mode:?}: B without a window done");
    // 2. B's own window under the same LIOBN number and bus: B's calls are B's.
    let b_win = b.vm.create_window(LIOBN, 12, win >> 12, (1 << 28) >> 12).map_err(e("B: its own window"))?;
    let b_owner = b_win.info().map_err(e("B: PVTCE_WINDOW_INFO"))?.is_some();
    if b_owner != want_pvtce {
        return Err(format!("B's window owner pvtce={b_owner}"));
    }
    let r = b_calls(&b, win)?;
    let want = [
        (H_SUCCESS, None),
        (H_SUCCESS, None),
        (H_SUCCESS, Some(0x50_0000 | TCE_R | TCE_W)),
        (H_SUCCESS, None),
        (H_SUCCESS, Some(0)),
    ];
    let ok = r.iter().zip(&want).all(|(&(r3, r4), &(w3, w4))| r3 == w3 && w4.is_none_or(|w| w == r4));
    if !ok || b.exits.count.get() != 5 {
        return Err(format!(
            "B with its own window: {r:x?}, {} exits; expected {want:x?}, 0 new exits",
            b.exits.count.get()
        ));
    }
    a.unchanged(&before, "B's calls on B's window")?;

    eprintln!("isolation-vms {mode:?}: B with its window done");
    // 3. B's VMM links A's table fd (and A's group, which A handed over) through B's KVM VFIO device.
    let kdev = b.vm.create_vfio_device().map_err(e("B: KVM VFIO device"))?;
    kdev.add_group(group_fd.as_fd()).map_err(e("B: KVM_DEV_VFIO_FILE_ADD of A's group"))?;
    let link = match kdev.link_tce(group_fd.as_fd(), &a_table) {
        Ok(()) => return Err("B linked A's table fd through B's KVM VFIO device".into()),
        Err(err) => errno_of(&err),
    };
    if link != Some(libc::EINVAL) {
        return Err(format!("B's link of A's table fd: {}, expected EINVAL", errno_name(link)));
    }
    drop(kdev);
    a.unchanged(&before, "B's link attempt")?;

    eprintln!("isolation-vms {mode:?}: link refused");
    // 4. A third process with A's table fd.
    let out = Command::new("/proc/self/exe")
        .args(["__isolation-third", &std::process::id().to_string(), &a_table.fd.as_raw_fd().to_string()])
        .arg(window_line(&a_table))
        .output()
        .map_err(e("run the third process"))?;
    let answers = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let want3 =
        if want_pvtce { "mmap-write=ok info=ok exchange=EPERM" } else { "mmap-write=ok info=ENOTTY exchange=ENOTTY" };
    if !out.status.success() || answers != want3 {
        return Err(format!("third process: {answers:?} ({}), expected {want3:?}", out.status));
    }
    // What the mapping wrote is what A's guest reads (Linux's behaviour: the VMM's view of the table is
    // writable, for migration); the hardware entry stays clear; the exchange slot and the rest are as before.
    let after3 = a.check()?;
    for i in 0..SLOTS {
        let (g, h) = (slot(&after3, "get=", i), slot(&after3, "host=", i));
        let (g0, h0) = (slot(&before, "get=", i), slot(&before, "host=", i));
        let want_g = if i == MMAP_SLOT { format!("0:{MMAP_VALUE:x}") } else { g0 };
        if g != want_g || h != h0 {
            return Err(format!(
                "A's slot {i} after the third process: get {g} host {h}, expected get {want_g} host {h0}"
            ));
        }
    }
    drop(a_table);
    drop(group_fd);
    a.quit()?;
    drop(b_win);
    drop(b);
    Ok(format!(
        "{}: B on A's LIOBN without a window 5/5 exits; with its own same-numbered window 5/5 H_SUCCESS in B; \
         link of A's table fd EINVAL; third process {answers}, its write visible to A's H_GET_TCE only (hardware \
         entry clear); A otherwise unchanged",
        if want_pvtce { "pvtce" } else { "builtin" }
    ))
}

pub fn vms() -> Result<String, String> {
    both_paths("bench_ioctls=1", two_vms)
}

pub fn lookup() -> Result<String, String> {
    both_paths("", many_windows)
}

/// Windows per VM in `isolation-lookup`: enough that the LOOKUP hash table's probes collide and it is rebuilt
/// at several sizes (8 to 256 slots) as they come and go.
const LOOKUP_WINDOWS: u64 = 48;

/// The LIOBN of window `k` in `isolation-lookup`: the same numbers in both VMs.
fn lookup_liobn(k: u64) -> u64 {
    LIOBN + k * 0x101
}

/// The entry VM `vm`'s guest puts at bus page 3 of its window `k`: one page of its RAM per (VM, window).
fn lookup_tce(vm: u64, k: u64) -> u64 {
    (0x40_0000 + ((vm * LOOKUP_WINDOWS + k) << 12)) | TCE_R
}

/// Each VM's guest GETs bus page 3 of every window number; the r3/r4 pairs.
fn lookup_gets(v: &BareVm) -> Result<Vec<(i64, u64)>, String> {
    let calls: Vec<_> = (0..LOOKUP_WINDOWS).map(|k| call(H_GET_TCE, [lookup_liobn(k), 3 << 12, 0, 0])).collect();
    Ok(v.run(&calls)?.iter().map(|r| (r.r3, r.r4)).collect())
}

/// What VM `vm` must read back: its own entry from every window it holds (`held(k)`), and a call that leaves
/// the kernel for every other number.
fn lookup_check(what: &str, got: &[(i64, u64)], vm: u64, held: impl Fn(u64) -> bool) -> Result<(), String> {
    for (k, &(r3, r4)) in (0..LOOKUP_WINDOWS).zip(got) {
        let ok = if held(k) { (r3, r4) == (H_SUCCESS, lookup_tce(vm, k)) } else { r3 == EXITED };
        if !ok {
            return Err(format!(
                "{what}: VM {vm} window {k} (LIOBN {:#x}) answered r3={r3:#x} r4={r4:#x}",
                lookup_liobn(k)
            ));
        }
    }
    Ok(())
}

/// Two VMs, each with [`LOOKUP_WINDOWS`] windows under the same LIOBN numbers: every guest reads its own
/// entries back from each of its windows; then VM 0 closes its even windows and reads its odd ones (the
/// even numbers leave the kernel) while VM 1 still reads all of its own.
fn many_windows(mode: Mode) -> Result<String, String> {
    set_mode(mode)?;
    let vms = [BareVm::new()?, BareVm::new()?];
    let mut windows: Vec<Vec<Option<kvm::Window>>> = Vec::new();
    for (n, v) in vms.iter().enumerate() {
        let mut ws = Vec::new();
        for k in 0..LOOKUP_WINDOWS {
            let w = v.vm.create_window(lookup_liobn(k), 12, 0, 64).map_err(e("lookup: create window"))?;
            if w.info().map_err(e("lookup: PVTCE_WINDOW_INFO"))?.is_some() != (mode == Mode::Pvtce) {
                return Err(format!("lookup: VM {n} window {k} is not {mode:?}'s"));
            }
            ws.push(Some(w));
        }
        windows.push(ws);
        let puts: Vec<_> = (0..LOOKUP_WINDOWS)
            .map(|k| call(H_PUT_TCE, [lookup_liobn(k), 3 << 12, lookup_tce(n as u64, k), 0]))
            .collect();
        let r = v.run(&puts)?;
        if let Some((k, bad)) = r.iter().enumerate().find(|(_, r)| r.r3 != H_SUCCESS) {
            return Err(format!("lookup: VM {n} H_PUT_TCE on window {k} answered {:#x}", bad.r3));
        }
    }
    for (n, v) in vms.iter().enumerate() {
        lookup_check("all open", &lookup_gets(v)?, n as u64, |_| true)?;
    }
    for w in windows[0].iter_mut().step_by(2) {
        drop(w.take());
    }
    lookup_check("even closed", &lookup_gets(&vms[0])?, 0, |k| k % 2 == 1)?;
    lookup_check("other VM's closed", &lookup_gets(&vms[1])?, 1, |_| true)?;
    let exits = u64::from(vms[0].exits.count.get());
    if exits != LOOKUP_WINDOWS / 2 {
        return Err(format!("lookup: VM 0 left the kernel {exits} times, expected {}", LOOKUP_WINDOWS / 2));
    }
    drop(windows);
    Ok(format!(
        "{mode:?}: 2 VMs x {LOOKUP_WINDOWS} windows, same LIOBNs, each guest read its own entry back from all \
         {LOOKUP_WINDOWS}; with VM 0's even windows closed, its {} odd ones read back and {exits} calls left the \
         kernel, VM 1 unchanged",
        LOOKUP_WINDOWS / 2
    ))
}

/// Loads pvtce with `params`, runs `case` on Linux's path and then on pvtce's, each followed by 0 windows
/// and the page pins back at their baseline, and unloads the module.
fn both_paths(params: &str, case: fn(Mode) -> Result<String, String>) -> Result<String, String> {
    sh(&format!("modprobe pvtce {params}"))?;
    let r = (|| -> Result<String, String> {
        let baseline = settled_pins()?;
        let builtin = case(Mode::Builtin)?;
        settled(baseline)?;
        let pvtce = case(Mode::Pvtce)?;
        settled(baseline)?;
        Ok(format!("{builtin}; {pvtce}; 0 windows and pins at baseline ({baseline}) after each"))
    })();
    let _ = set_mode(Mode::Pvtce);
    let unload = sh("rmmod pvtce");
    let detail = r?;
    unload.map_err(|err| format!("rmmod: {err}"))?;
    Ok(detail)
}

/// Waits (up to 10 s: releases run from RCU callbacks) for 0 pvtce windows and the pins at `baseline`.
fn settled(baseline: i64) -> Result<(), String> {
    let t = std::time::Instant::now();
    loop {
        let (w, p) = (window_count()?, pins_outstanding()?);
        if w == 0 && p == baseline {
            return Ok(());
        }
        if t.elapsed() > std::time::Duration::from_secs(10) {
            return Err(format!("{w} windows and {p} pins left 10 s later (baseline {baseline})"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

// ---- a guest maps its own RAM only ----

/// Guest physical addresses of the two extra memslots (above the rig's RAM) and of nothing at all.
const NOT_PREREG_GPA: u64 = 0x100_0000;
const DELETED_GPA: u64 = 0x200_0000;
const NO_SLOT_GPA: u64 = 0x300_0000;
const EXTRA: usize = 1 << 20;

fn own_memory(mode: Mode) -> Result<String, String> {
    set_mode(mode)?;
    let not_prereg = GuestMem::new(EXTRA).map_err(e("extra memory"))?;
    let deleted = GuestMem::new(EXTRA).map_err(e("extra memory"))?;
    let rig = Rig::new(Windows::Linked { tce_shift: 12, size: 1 << 28 })?;
    if rig.pvtce_info()?.is_some() != (mode == Mode::Pvtce) {
        return Err("the window has the wrong owner".into());
    }
    // SAFETY: both are mappings of this process that no Rust reference covers, declared before `rig`, so
    // they outlive its vCPU and VM.
    unsafe {
        rig.vm.set_memory(1, NOT_PREREG_GPA, EXTRA as u64, not_prereg.host_addr()).map_err(e("memslot 1"))?;
        rig.vm.set_memory(2, DELETED_GPA, EXTRA as u64, deleted.host_addr()).map_err(e("memslot 2"))?;
    }
    rig.container.register_memory(deleted.host_addr(), EXTRA as u64).map_err(e("REGISTER_MEMORY slot 2"))?;
    let win = rig.window_bus()?;
    let rw = TCE_R | TCE_W;
    let good = 0x40_0000 | rw;
    // Slot 0: no memslot; 1: memslot, not preregistered; 2..4: INDIRECT of a good entry then a bad one.
    rig.write_list(&[good, NOT_PREREG_GPA | rw])?;
    let calls = [
        call(H_PUT_TCE, [LIOBN, win, NO_SLOT_GPA | rw, 0]),
        call(H_PUT_TCE, [LIOBN, win + (1 << 12), NOT_PREREG_GPA | rw, 0]),
        call(H_PUT_TCE_INDIRECT, [LIOBN, win + (2 << 12), LIST_GPA, 2]),
    ];
    let (r, _) = rig.run(&calls)?;
    rig.write_list(&[good, NO_SLOT_GPA | rw])?;
    let (r2, _) = rig.run(&[call(H_PUT_TCE_INDIRECT, [LIOBN, win + (2 << 12), LIST_GPA, 2])])?;
    let codes: Vec<i64> = r.iter().chain(&r2).map(|x| x.r3).collect();
    if codes != [EXITED; 4] {
        return Err(format!("refused TCEs answered {codes:?}, expected H_TOO_HARD (an exit to the VMM) 4 times"));
    }
    let nothing = |what: &str| -> Result<(), String> {
        let gets: Vec<_> = (0..4u64).map(|i| call(H_GET_TCE, [LIOBN, win + (i << 12), 0, 0])).collect();
        let (g, _) = rig.run(&gets)?;
        let host = rig.host_read_any(win >> 12, 4)?;
        if g.iter().any(|x| x.r3 != H_SUCCESS || x.r4 != 0) || host.iter().any(|&h| h != 0) {
            return Err(format!("{what}: entries 0..4 are guest {g:x?} host {host:x?}, expected all clear"));
        }
        Ok(())
    };
    nothing("after the refused TCEs")?;

    // A preregistered memslot deleted while the guest maps it: each call either sees the slot (H_SUCCESS)
    // or not (H_TOO_HARD), never the slot after its deletion was seen. Linux's C path (not pvtce's) may answer
    // H_PARAMETER to the one call the deletion lands in: its kvmppc_h_put_tce looks the memslot up twice, in
    // kvmppc_tce_validate (gone: H_TOO_HARD) and again after it (gone only then: H_PARAMETER), each through
    // kvm_memslots(), which reads the memslots published at that moment (arch/powerpc/kvm/book3s_64_vio.c).
    // pvtce translates each entry once. Seen once in five runs on 2026-12-06; counted and reported, never twice.
    let table_calls: Vec<_> = (0..payload::MAX_ENTRIES)
        .map(|i| call(H_PUT_TCE, [LIOBN, win + ((8 + i % 64) << 12), (DELETED_GPA + ((i % 16) << 12)) | rw, 0]))
        .collect();
    let probe = payload::TABLE + payload::HEADER + payload::ENTRY_SIZE * 64 + 48;
    let (mut ok, mut refused, mut tables, mut linux_race) = (0u64, 0u64, 0u32, 0u32);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let del: Result<(), String> = std::thread::scope(|s| {
        let (vm, mem, stop) = (&rig.vm, &rig.mem, &stop);
        let deleter = s.spawn(move || {
            // Once the guest's 65th call has an answer, delete the slot under it.
            while mem.read_u64(probe).is_ok_and(|v| v == u64::MAX) {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err("the guest stopped before its 65th call".to_string());
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            // SAFETY: size 0 deletes slot 2; no mapping is handed to the guest.
            unsafe { vm.set_memory(2, DELETED_GPA, 0, deleted.host_addr()) }.map_err(e("delete memslot 2"))
        });
        let run = (|| -> Result<(), String> {
            let mut seen_refused = false;
            while refused == 0 && tables < 64 {
                let (r, _) = rig.run(&table_calls)?;
                tables += 1;
                for (i, x) in r.iter().enumerate() {
                    match x.r3 {
                        H_SUCCESS if !seen_refused => ok += 1,
                        EXITED => {
                            seen_refused = true;
                            refused += 1;
                        }
                        H_PARAMETER if mode == Mode::Builtin && !seen_refused && linux_race == 0 => {
                            seen_refused = true;
                            linux_race += 1;
                        }
                        other => return Err(format!("table {tables} call {i}: {other} (after {refused} refused)")),
                    }
                }
            }
            Ok(())
        })();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let d = deleter.join().map_err(|_| "the deleter thread panicked".to_string())?;
        run.and(d)
    });
    del?;
    if ok < 65 || refused == 0 {
        return Err(format!("memslot deletion: {ok} mapped, {refused} refused in {tables} tables"));
    }
    // The slot is gone: a fresh call is refused too.
    let (r, _) = rig.run(&[call(H_PUT_TCE, [LIOBN, win + (4 << 12), DELETED_GPA | rw, 0])])?;
    if r[0].r3 != EXITED {
        return Err(format!("PUT_TCE into the deleted memslot: {}, expected H_TOO_HARD", r[0].r3));
    }
    let (r, _) = rig.run(&[call(H_STUFF_TCE, [LIOBN, win, 0, 8 + 64])])?;
    if r[0].r3 != H_SUCCESS {
        return Err(format!("the clearing STUFF: {}", r[0].r3));
    }
    nothing("after the deletion")?;
    drop(rig);
    Ok(format!(
        "{}: no memslot, not preregistered, INDIRECT with either: H_TOO_HARD x4, nothing stored; memslot deleted \
         mid-table: {ok} H_SUCCESS then {}{refused} H_TOO_HARD ({tables} tables), none after",
        if mode == Mode::Pvtce { "pvtce" } else { "builtin" },
        if linux_race > 0 { "H_PARAMETER once (Linux's double memslot lookup), " } else { "" }
    ))
}

pub fn memory() -> Result<String, String> {
    both_paths("", own_memory)
}

// ---- /dev/pvtce is root's ----

/// `pvtce-vmtests __open-pvtce [UID]`: drops to UID (groups, gid and uid, by hand so that a failing step
/// is named), opens /dev/pvtce, prints `ok` or the errno's name.
pub fn child_open(uid: Option<&str>) -> Result<(), String> {
    let mut groups = String::new();
    if let Some(u) = uid {
        let u: u32 = u.parse().map_err(|_| format!("bad uid {u}"))?;
        // SAFETY: plain system calls on this single-threaded process's credentials.
        // Supplementary groups do not matter for a mode-0600 node; a failure is reported, not fatal.
        if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
            groups = format!(" (setgroups: {})", std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        let steps = unsafe { [("setgid", libc::setgid(u)), ("setuid", libc::setuid(u))] };
        for (what, r) in steps {
            if r != 0 {
                return Err(format!("{what}: {}{groups}", std::io::Error::last_os_error()));
            }
        }
    }
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/pvtce") {
        Ok(_) => println!("ok{groups}"),
        Err(err) => println!("{}{groups}", errno_name(err.raw_os_error())),
    }
    Ok(())
}

fn open_as(uid: Option<u32>) -> Result<String, String> {
    let mut c = Command::new("/proc/self/exe");
    c.arg("__open-pvtce");
    if let Some(u) = uid {
        c.arg(u.to_string());
    }
    let out = c.output().map_err(e("start the opener"))?;
    if !out.status.success() {
        return Err(format!("the opener failed: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn dev() -> Result<String, String> {
    sh("modprobe pvtce")?;
    let r = (|| -> Result<String, String> {
        // The same opener as root: it can open the device, so the refusal below is the user's.
        let root = open_as(None)?;
        let nobody = open_as(Some(65534))?;
        if root != "ok" || !nobody.starts_with("EACCES") {
            return Err(format!("/dev/pvtce: root {root}, uid 65534 {nobody}; expected ok, EACCES"));
        }
        Ok(format!("/dev/pvtce: root ok, uid 65534 {nobody}"))
    })();
    let unload = sh("rmmod pvtce");
    let detail = r?;
    unload.map_err(|err| format!("rmmod: {err}"))?;
    Ok(detail)
}
