//! The real-guest scenario (issue 10): Debian's unmodified `qemu-system-ppc64` in L1 runs Debian's unmodified
//! ppc64el kernel as L2, with an NVMe controller of L0 passed through with vfio-pci.
//!
//! - `fetch`: `xtask/scripts/fetch-realguest.sh` (private apt, ppc64el, cached by package versions).
//! - L1 gets the Debian files through a second, uncompressed cpio appended to the usual initramfs (Linux
//!   unpacks concatenated archives in order): the tests' boot keeps its small initramfs, and the real-guest
//!   boot spends no time decompressing 100 MB under TCG.
//! - L2's initramfs: busybox, the Debian kernel's nvme modules, and an `/init` that runs the I/O check.
//! - L0 gets an `nvme` controller backed by a fresh raw image, on a host bridge of its own (its own PE).

use crate::util::*;
use std::path::{Path, PathBuf};

/// Size of L0's NVMe image; the I/O check uses its first few MiB only.
pub const NVME_IMAGE_MIB: u64 = 64;

/// The Debian software the scenario runs, as fetched.
pub struct Debian {
    pub dir: PathBuf,
    /// "qemu-system-ppc <version>" and "linux-image-<abi> <version>".
    pub versions: Vec<String>,
}

pub fn fetch() -> Result<Debian> {
    let o = output(cmd("bash").arg(repo().join("xtask/scripts/fetch-realguest.sh")).env("PVTCE_CACHE", cache()))?;
    let dir = PathBuf::from(o.lines().last().ok_or("fetch-realguest.sh printed nothing")?);
    let versions = read(&dir.join("VERSIONS"))?.lines().map(String::from).collect();
    Ok(Debian { dir, versions })
}

fn cpio(root: &Path, img: &Path, gzip: bool) -> Result<()> {
    let sh = format!(
        "cd {} && find . -print0 | sort -z | cpio --null -o -H newc --owner 0:0 --quiet {} > {}",
        root.display(),
        if gzip { "| gzip -1" } else { "" },
        img.display()
    );
    run(cmd("bash").arg("-c").arg(sh))
}

fn fresh_dir(p: &Path) -> Result<()> {
    if p.exists() {
        std::fs::remove_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// L2's initramfs: busybox, the nvme modules in load order, `/init`.
fn l2_initramfs(deb: &Debian) -> Result<PathBuf> {
    let root = out().join("realguest/l2-root");
    fresh_dir(&root)?;
    for d in ["bin", "proc", "sys", "dev", "tmp", "modules"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::copy(cache().join("busybox-ppc64el/bin/busybox"), root.join("bin/busybox")).map_err(|e| e.to_string())?;
    run(cmd("cp").arg("-a").arg(deb.dir.join("l2/modules/.")).arg(root.join("modules")))?;
    write(&root.join("init"), L2_INIT)?;
    run(cmd("chmod").arg("755").arg(root.join("init")))?;
    let img = out().join("realguest/l2-initramfs.cpio.gz");
    cpio(&root, &img, true)?;
    Ok(img)
}

/// The L1 overlay: the Debian QEMU closure at its Debian paths, and under /realguest the L2 kernel, its
/// initramfs and the versions.
fn l1_overlay(deb: &Debian, l2_initrd: &Path) -> Result<PathBuf> {
    let root = out().join("realguest/l1-root");
    fresh_dir(&root)?;
    run(cmd("cp").arg("-a").arg(deb.dir.join("l1/.")).arg(&root))?;
    let rg = root.join("realguest");
    std::fs::create_dir_all(&rg).map_err(|e| e.to_string())?;
    // Hard links where possible: the vmlinux is 46 MB.
    if std::fs::hard_link(deb.dir.join("l2/vmlinux"), rg.join("vmlinux")).is_err() {
        std::fs::copy(deb.dir.join("l2/vmlinux"), rg.join("vmlinux")).map_err(|e| e.to_string())?;
    }
    std::fs::copy(l2_initrd, rg.join("initramfs.cpio.gz")).map_err(|e| e.to_string())?;
    std::fs::copy(deb.dir.join("VERSIONS"), rg.join("VERSIONS")).map_err(|e| e.to_string())?;
    let img = out().join("realguest/l1-overlay.cpio");
    cpio(&root, &img, false)?;
    Ok(img)
}

/// The real-guest boot's initrd: the tests' initramfs followed by the overlay; returns it and its size.
pub fn initrd(deb: &Debian, base: &Path) -> Result<(PathBuf, u64)> {
    let l2 = l2_initramfs(deb)?;
    let overlay = l1_overlay(deb, &l2)?;
    let img = out().join("realguest/initramfs-realguest.cpio");
    let mut data = std::fs::read(base).map_err(|e| format!("{}: {e}", base.display()))?;
    // The kernel looks for the next archive at a 4-byte boundary after the end of a compressed one.
    while data.len() % 4 != 0 {
        data.push(0);
    }
    data.extend(std::fs::read(&overlay).map_err(|e| format!("{}: {e}", overlay.display()))?);
    std::fs::write(&img, &data).map_err(|e| format!("{}: {e}", img.display()))?;
    Ok((img, data.len() as u64))
}

/// A fresh, sparse raw image for L0's NVMe controller.
pub fn nvme_image() -> Result<PathBuf> {
    let p = out().join("realguest/nvme.img");
    let f = std::fs::File::create(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    f.set_len(NVME_IMAGE_MIB << 20).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

/// L0's QEMU options for the NVMe: its own spapr-pci-host-bridge (so its own IOMMU group), a raw image.
pub fn qemu_args(image: &Path) -> Vec<String> {
    vec![
        "-device".into(),
        "spapr-pci-host-bridge,index=2,id=phb2".into(),
        "-drive".into(),
        format!("file={},if=none,id=nvm0,format=raw,cache=unsafe", image.display()),
        "-device".into(),
        "nvme,bus=phb2.0,drive=nvm0,serial=pvtce-rg0".into(),
    ]
}

/// L2's /init (busybox sh). The I/O check writes a known pattern (a counting sequence from a per-pass seed,
/// so no pass can pass on an earlier pass's data) with O_DIRECT at several block sizes, reads it back and
/// compares MD5 sums; then a read-only pass over data written earlier and a mixed pass (a write and a read
/// at the same time). Each pass prints `RG-IO <pass> bs=<bytes> bytes=<n> secs=<s> ok=<0|1>`; the L1 side
/// parses them. After `RG-IO-DONE` it waits for a line on the console (the L1 test reads pvtce's counters
/// while the windows still exist), then powers off.
const L2_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
echo "RG-BOOT $(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
# The guest's own count of its TCE hypercalls, the same on every path: a histogram trigger on pseries'
# hcall_entry tracepoint (H_GET_TCE 0x1c, H_PUT_TCE 0x20, H_PUT_TCE_INDIRECT 0x13c, H_STUFF_TCE 0x138), read
# when the disk is there and after the passes (the boot's own calls, the 32-bit window cleared, come before).
# The dynamic window is made and mapped when nvme probes (dma_set_mask): its H_PUT_TCE_INDIRECT calls are
# traced on entry and exit, and their time is the mapping's.
TR=/sys/kernel/tracing
H=$TR/events/powerpc
[ -d $H ] || mount -t tracefs tracefs $TR 2>/tmp/e || echo "RG-TRACE mount: $(cat /tmp/e)"
echo 'hist:keys=opcode if opcode == 0x1c || opcode == 0x20 || opcode == 0x13c || opcode == 0x138' \
  > $H/hcall_entry/trigger 2>/tmp/e || echo "RG-TRACE no hcall_entry histogram: $(cat /tmp/e)"
for ev in hcall_entry hcall_exit; do
  echo 'opcode == 0x13c' > $H/$ev/filter 2>/tmp/e || echo "RG-TRACE filter $ev: $(cat /tmp/e)"
  echo 1 > $H/$ev/enable 2>/tmp/e || echo "RG-TRACE enable $ev: $(cat /tmp/e)"
done
# hc: "get put indirect stuff" so far; hist lines are "{ opcode:         32 } hitcount:       1234"
hc() {
  awk 'BEGIN {n["28"] = 0; n["32"] = 0; n["316"] = 0; n["312"] = 0}
    !/^#/ && /opcode:/ {gsub(/[{}]/, ""); n[$2] = $4}
    END {print n["28"], n["32"], n["316"], n["312"]}' $H/hcall_entry/hist
}
# busybox's insmod does not read module.param= from the kernel command line (modprobe would): pass them on.
for m in $(cat /modules/order); do
  n=$(echo "${m%.ko}" | tr - _)
  args=$(for a in $(cat /proc/cmdline); do case "$a" in "$n".*) echo "${a#"$n".}";; esac; done)
  insmod /modules/$m $args || echo "RG-ERROR insmod $m"
done
i=0
while [ ! -b /dev/nvme0n1 ] && [ $i -lt 1200 ]; do usleep 100000; i=$((i+1)); done
if [ ! -b /dev/nvme0n1 ]; then
  echo "RG-ERROR no /dev/nvme0n1"
  dmesg | tail -n 20 | sed 's/^/RG-DMESG /'
  poweroff -f
fi
echo "RG-DISK uptime=$(cut -d' ' -f1 /proc/uptime)"
for ev in hcall_entry hcall_exit; do echo 0 > $H/$ev/enable; done
echo "RG-TRACE $(grep -c hcall_ $TR/trace 2>&1) events: $(grep -m 2 hcall_ $TR/trace 2>&1 | tr -s ' ' | tr '\n' '/')"
awk '{for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) t = substr($i, 1, length($i) - 1)}
  / hcall_entry: / {t0 = t} / hcall_exit: / && t0 != "" {n++; us += (t - t0) * 1e6; t0 = ""}
  END {printf "RG-PROBE-INDIRECT calls=%d usecs=%.0f\n", n, us}' $TR/trace
set -- $(hc); g0=$1 p0=$2 i0=$3 s0=$4
dmesg | grep -i -e 'ddw' -e 'dma window' -e 'direct dma' -e 'iommu' | sed 's/^/RG-DMESG /'
seed=1
for a in $(cat /proc/cmdline); do case "$a" in rg_seed=*) seed=${a#rg_seed=};; esac; done
DEV=/dev/nvme0n1
# MiB per pass: 4, or rg_mib=N (the benchmark's shorter runs)
MIB=4
for a in $(cat /proc/cmdline); do case "$a" in rg_mib=[1-4]) MIB=${a#rg_mib=};; esac; done
SIZE=$((MIB * 1048576))
# pat N: the pattern of seed N, SIZE bytes
pat() { seq "$1" $(($1 + 1500000)) | head -c $SIZE; }
# Microseconds since the epoch (busybox's date has no %N; adjtimex prints tv_sec and tv_usec).
now() { adjtimex | awk '/tv_sec/ {s = $2} /tv_usec/ {u = $2} END {printf "%d%06d\n", s, u}'; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.6f\n", (b - a) / 1e6}'; }
# wr PASS BS REGION SEED: write pattern SEED at region REGION (MIB-sized) with O_DIRECT
wr() {
  pat "$4" > /tmp/p
  t=$(now)
  dd if=/tmp/p of=$DEV bs=$2 count=$((SIZE / $2)) seek=$(($3 * SIZE / $2)) oflag=direct conv=notrunc 2>/dev/null >/dev/null
  ok=$?; s=$(secs $t); [ $ok = 0 ] && ok=1 || ok=0
  echo "RG-IO $1-write bs=$2 bytes=$SIZE secs=$s ok=$ok"
  md5sum < /tmp/p | cut -d' ' -f1 > /tmp/sum.$3
  rm -f /tmp/p
}
# rd PASS BS REGION: read region REGION back with O_DIRECT and compare with what was written there
rd() {
  t=$(now)
  dd if=$DEV of=/tmp/r$3 bs=$2 count=$((SIZE / $2)) skip=$(($3 * SIZE / $2)) iflag=direct 2>/dev/null
  s=$(secs $t)
  [ "$(md5sum < /tmp/r$3 | cut -d' ' -f1)" = "$(cat /tmp/sum.$3)" ] && ok=1 || ok=0
  rm -f /tmp/r$3
  echo "RG-IO $1-read bs=$2 bytes=$SIZE secs=$s ok=$ok"
}
r=0
for bs in 4096 65536 1048576; do
  wr verify $bs $r $((seed * 10 + r))
  rd verify $bs $r
  r=$((r + 1))
done
rd readonly 1048576 0
rd readonly 4096 2
# mixed: a write to region 3 while region 1 is read, then both checked
pat $((seed * 10 + 3)) > /tmp/p
md5sum < /tmp/p | cut -d' ' -f1 > /tmp/sum.3
t0=$(now)
dd if=/tmp/p of=$DEV bs=65536 count=$((SIZE / 65536)) seek=$((3 * SIZE / 65536)) oflag=direct conv=notrunc 2>/dev/null >/dev/null &
w=$!
rd mixed 4096 1
wait $w && ok=1 || ok=0
echo "RG-IO mixed-write bs=65536 bytes=$SIZE secs=$(secs $t0) ok=$ok"
rd mixed 65536 3
grep -e nvme /proc/interrupts | sed 's/^/RG-IRQ /'
set -- $(hc)
echo "RG-HCALL get=$(($1 - g0)) put=$(($2 - p0)) indirect=$(($3 - i0)) stuff=$(($4 - s0))"
echo "RG-IO-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
read -t 120 line
poweroff -f
"#;

/// What `cargo xtask demo` runs in the real-guest boot: pvtce in both guest DMA modes.
pub const DEMO_TESTS: &str = "real-pvtce-ddw,real-pvtce-noddw";
/// What `cargo xtask test` runs in its real-guest boot: every path, both modes.
pub const TEST_TESTS: &str =
    "real-pvtce-ddw,real-pvtce-noddw,real-builtin-ddw,real-builtin-noddw,real-userspace-ddw,real-userspace-noddw";

/// The demo's summary: which software ran, and per scenario what the in-VM test found.
pub fn summary(deb: &Debian, l1: &str, o: &crate::vm::Outcome) -> String {
    let mut s = String::from("pvtce demo: the real client\n");
    s.push_str(&format!("  L1: Linux {l1} (KVM-HV, vfio-pci, pvtce.ko) on emulated POWER (QEMU TCG)\n"));
    for v in &deb.versions {
        let what = if v.starts_with("qemu") { "L1's VMM, unmodified" } else { "L2's kernel, unmodified" };
        s.push_str(&format!("  Debian 12 ppc64el {v} ({what})\n"));
    }
    s.push_str("  device: L0's NVMe controller, passed through with vfio-pci\n");
    for r in o.results() {
        s.push_str(&format!("  [{}] {}:\n", r.status.word(), r.name));
        for part in r.detail.split("; ") {
            s.push_str(&format!("      {part}\n"));
        }
    }
    s
}
