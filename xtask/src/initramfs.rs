//! The L1 initramfs: busybox, the kernel's modules plus pvtce.ko, the in-VM test programs and /init.

use crate::kernel::Kernel;
use crate::util::*;
use std::path::{Path, PathBuf};

/// The in-VM programs, cross-compiled for powerpc64le (static glibc).
pub const TARGET: &str = "powerpc64le-unknown-linux-gnu";
pub const PROGRAMS: &[&str] = &["pvtce-vmtests", "pvtce"];

pub fn userspace() -> Result<Vec<PathBuf>> {
    let mut c = cmd("cargo");
    c.current_dir(repo()).args([
        "build",
        "--release",
        "--target",
        TARGET,
        "-p",
        "pvtce-vmtests",
        "-p",
        "pvtce-vmm-glue",
    ]);
    run(&mut c)?;
    Ok(PROGRAMS.iter().map(|p| repo().join("target").join(TARGET).join("release").join(p)).collect())
}

/// Modules loaded at boot, in order (modprobe pulls in their dependencies).
pub const MODULES: &[&str] = &["vfio", "vfio_iommu_spapr_tce", "vfio-pci", "kvm", "kvm-hv"];

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    std::fs::copy(from, to).map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))?;
    Ok(())
}

pub fn build(k: &Kernel, pvtce_ko: &Path, programs: &[PathBuf]) -> Result<PathBuf> {
    let root = out().join("initramfs");
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| e.to_string())?;
    }
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    copy(&cache().join("busybox-ppc64el/bin/busybox"), &root.join("bin/busybox"))?;
    // The kernel's modules (only the few this config builds), pvtce.ko beside them, and a fresh modules.dep.
    run(cmd("cp").arg("-a").arg(k.modroot.join("lib")).arg(&root))?;
    let mods = root.join("lib/modules").join(&k.release);
    // `build` points into the host's kernel build directory.
    let _ = std::fs::remove_file(mods.join("build"));
    copy(pvtce_ko, &mods.join("extra/pvtce.ko"))?;
    run(cmd("depmod").arg("-b").arg(&root).arg(&k.release))?;
    for p in programs {
        copy(p, &root.join("bin").join(p.file_name().ok_or("bad program path")?))?;
    }
    let init = root.join("init");
    write(&init, &init_script())?;
    run(cmd("chmod").arg("755").arg(&init))?;
    let img = out().join("initramfs.cpio.gz");
    let sh = format!(
        "cd {} && find . -print0 | sort -z | cpio --null -o -H newc --owner 0:0 --quiet | gzip -1 > {}",
        root.display(),
        img.display()
    );
    run(cmd("bash").arg("-c").arg(sh))?;
    Ok(img)
}

/// /init: mount, load modules, run the tests named on the kernel command line (`pvtce_run=a,b`; no dot, or
/// the kernel would take it for a parameter of the pvtce module), report, power off. `pvtce_probe=` reaches
/// the diagnostic probes as PVTCE_PROBE; `pvtce_conf_sequences=` and `pvtce_conf_seed=` reach the conformance
/// test as PVTCE_CONF_SEQUENCES and PVTCE_CONF_SEED. Every line the host parses starts with `PVTCE-`.
fn init_script() -> String {
    let mods = MODULES.join(" ");
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
mkdir -p /dev/shm && mount -t tmpfs shm /dev/shm
echo "PVTCE-BOOT $(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in {mods}; do
  modprobe $m || echo "PVTCE-ERROR modprobe $m failed"
done
run=""
for a in $(cat /proc/cmdline); do
  case "$a" in
    pvtce_run=*) run="${{a#pvtce_run=}}";;
    pvtce_probe=*) export PVTCE_PROBE="${{a#pvtce_probe=}}";;
    pvtce_conf_sequences=*) export PVTCE_CONF_SEQUENCES="${{a#pvtce_conf_sequences=}}";;
    pvtce_conf_seed=*) export PVTCE_CONF_SEED="${{a#pvtce_conf_seed=}}";;
  esac
done
[ -n "$run" ] || run=all
/bin/pvtce-vmtests $(echo "$run" | tr ',' ' ')
rc=$?
# A WARN or lockdep report printed after the tests still reaches the console before this line.
dmesg | grep -c . >/dev/null
echo "PVTCE-DONE rc=$rc"
poweroff -f
"#
    )
}
