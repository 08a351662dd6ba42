//! The L1 kernel: Debian's linux-source-7.x, the project's patch series, the config fragment, a cached build.
//!
//! Cache layout under `cache()`:
//! - `src/<pkg>-<ver>/`: the pristine unpacked source (fetch-kernel.sh).
//! - `ktree/<pkg>-<ver>/`: a hard-linked copy with `patches/linux/series` applied (patch breaks the links of the
//!   files it changes, so the pristine tree stays pristine). `.pvtce-patches` records the series hash and the
//!   files it touched, so that a changed series re-touches every file it (un)changed and make rebuilds them.
//! - `kbuild/<pkg>-<ver>/`: the O= build directory, kept across runs (make rebuilds only what changed);
//!   `.pvtce-key` holds the key of the last good build: source version, config fragment, patches, toolchain.
//! - With `PVTCE_SERIES=production`, `ktree/<pkg>-<ver>-production/` and `kbuild/<pkg>-<ver>-production/`: the
//!   production-like kernel (series.production, pvtce.config + production.config instead of debug.config), so
//!   the test kernel and the benchmark's second kernel are both cached and switching between them builds nothing.

use crate::util::*;
use std::path::{Path, PathBuf};

pub const MAKE_VARS: &[&str] = &["ARCH=powerpc", "LLVM=-19"];

pub struct Kernel {
    /// Debian package and version, e.g. "linux-source-7.3 7.3~rc7-1~exp1".
    pub debian: String,
    pub build: PathBuf,
    /// `uname -r` of the built kernel.
    pub release: String,
    /// Where `modules_install` put the modules (INSTALL_MOD_PATH).
    pub modroot: PathBuf,
}

fn toolchain_id() -> Result<String> {
    let rustc = output(cmd("rustc").arg("-vV"))?;
    let clang = output(cmd("clang-19").arg("--version"))?;
    let bindgen = output(cmd("bindgen").arg("--version"))?;
    Ok(format!("{rustc}\n{clang}\n{bindgen}"))
}

/// The series file: `series`, or `series.NAME` with `PVTCE_SERIES=NAME` (`production` adds the upstream
/// fixes the comparison runs leave out: docs/machine.md, "The kernel: what it took").
fn series_name() -> String {
    match variant() {
        Some(name) => format!("series.{name}"),
        None => "series".to_string(),
    }
}

/// `PVTCE_SERIES`, when set and not empty: the kernel variant (`production`).
pub fn variant() -> Option<String> {
    std::env::var("PVTCE_SERIES").ok().filter(|v| !v.is_empty())
}

/// Directory name of a variant's tree and build: `<pkg>-<ver>` or `<pkg>-<ver>-<variant>`.
fn variant_dir(name: &str) -> String {
    match variant() {
        Some(v) => format!("{name}-{v}"),
        None => name.to_string(),
    }
}

/// The config fragment: `pvtce.config` plus `debug.config` (the test kernel) or `<variant>.config`.
fn fragment() -> Result<String> {
    let dir = repo().join("xtask/kconfig");
    let extra = match variant() {
        Some(v) => format!("{v}.config"),
        None => "debug.config".to_string(),
    };
    Ok(read(&dir.join("pvtce.config"))? + &read(&dir.join(extra))?)
}

/// The patches of [`series_name`], in order; a line `include FILE` takes FILE's patches in its place.
fn series() -> Result<Vec<(String, String)>> {
    let mut v = Vec::new();
    series_file(&repo().join("patches/linux"), &series_name(), &mut v, 0)?;
    Ok(v)
}

fn series_file(dir: &Path, file: &str, v: &mut Vec<(String, String)>, depth: u32) -> Result<()> {
    if depth > 4 {
        return Err(format!("patches/linux/{file}: includes nested too deep"));
    }
    let list = read(&dir.join(file))?;
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match line.strip_prefix("include ") {
            Some(inner) => series_file(dir, inner.trim(), v, depth + 1)?,
            None => v.push((line.to_string(), read(&dir.join(line))?)),
        }
    }
    Ok(())
}

/// Files a unified diff touches (the `+++ b/...` lines).
fn touched(patch: &str) -> Vec<String> {
    patch
        .lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| p.split_once('/').map(|(_, rest)| rest.to_string()))
        .collect()
}

/// Makes `ktree/<name>` = pristine + series; returns (tree, whether it was (re)made).
fn patched_tree(pristine: &Path) -> Result<PathBuf> {
    let name = pristine.file_name().ok_or("bad source path")?.to_string_lossy().into_owned();
    let tree = cache().join("ktree").join(variant_dir(&name));
    let series = series()?;
    let mut key = Key::new();
    let mut files: Vec<String> = Vec::new();
    for (n, text) in &series {
        key.add(n.as_bytes()).add(text.as_bytes());
        files.extend(touched(text));
    }
    let stamp = tree.join(".pvtce-patches");
    let old = std::fs::read_to_string(&stamp).unwrap_or_default();
    if old.lines().next() == Some(key.hex().as_str()) {
        return Ok(tree);
    }
    println!("kernel: applying {} patch(es) from patches/linux/{}", series.len(), series_name());
    let mut all: Vec<String> = old.lines().skip(1).map(String::from).collect();
    all.extend(files.iter().cloned());
    all.sort();
    all.dedup();
    // What the previous tree had in those files, so an unchanged file keeps its old mtime below.
    let before: std::collections::HashMap<String, (Vec<u8>, std::time::SystemTime)> = all
        .iter()
        .filter_map(|f| {
            let p = tree.join(f);
            let data = std::fs::read(&p).ok()?;
            let mtime = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            Some((f.clone(), (data, mtime)))
        })
        .collect();
    if tree.exists() {
        std::fs::remove_dir_all(&tree).map_err(|e| format!("{}: {e}", tree.display()))?;
    }
    std::fs::create_dir_all(tree.parent().unwrap_or(Path::new("/"))).map_err(|e| e.to_string())?;
    run(cmd("cp").arg("-al").arg(pristine).arg(&tree))?;
    for (n, _) in &series {
        let p = repo().join("patches/linux").join(n);
        let log = out().join(format!("patch-{n}.log"));
        run_logged(cmd("patch").args(["-p1", "--no-backup-if-mismatch", "-i"]).arg(&p).current_dir(&tree), &log)
            .map_err(|e| format!("patch {n} does not apply: {e}"))?;
    }
    // Files the previous series changed but this one does not are pristine again, with an old mtime: touch them
    // (and every file this series changes) so an incremental build notices. A file whose text is what the last
    // tree had keeps that tree's mtime, so adding one patch rebuilds what it touches, not what the others do.
    for f in &all {
        let p = tree.join(f);
        if p.exists() {
            // cp -al shares the inode with the pristine tree; break the link before touching.
            let data = std::fs::read(&p).map_err(|e| e.to_string())?;
            std::fs::remove_file(&p).map_err(|e| e.to_string())?;
            std::fs::write(&p, &data).map_err(|e| e.to_string())?;
            if let Some((old_data, mtime)) = before.get(f) {
                if *old_data == data {
                    let file = std::fs::File::options().write(true).open(&p).map_err(|e| e.to_string())?;
                    file.set_modified(*mtime).map_err(|e| format!("{}: {e}", p.display()))?;
                }
            }
        }
    }
    let mut s = key.hex();
    for f in &files {
        s.push('\n');
        s.push_str(f);
    }
    write(&stamp, &s)?;
    Ok(tree)
}

fn make(tree: &Path, build: &Path) -> std::process::Command {
    let mut c = cmd("make");
    c.arg("-C").arg(tree).arg(format!("O={}", build.display())).args(MAKE_VARS);
    c
}

/// Checks that every `CONFIG_X=v` line of the fragment survived into `.config`, and that every
/// `# CONFIG_X is not set` line is off there.
fn check_config(fragment: &str, config: &str) -> Result<()> {
    let mut missing = Vec::new();
    // `# CONFIG_X is not set`: the option must be off (absent, or not set).
    for line in fragment.lines().map(str::trim) {
        let Some(k) = line.strip_prefix("# ").and_then(|l| l.strip_suffix(" is not set")) else { continue };
        if config.lines().any(|l| l.starts_with(&format!("{k}="))) {
            missing.push(format!("{k} (must be off)"));
        }
    }
    for line in fragment.lines().map(str::trim).filter(|l| l.starts_with("CONFIG_")) {
        let (k, _) = line.split_once('=').ok_or_else(|| format!("bad fragment line {line}"))?;
        let got = config.lines().find(|l| l.starts_with(&format!("{k}="))).unwrap_or("");
        if got != line {
            missing.push(format!("{line} (got {})", if got.is_empty() { "unset" } else { got }));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("config fragment options not satisfied (a dependency is missing): {}", missing.join(", ")))
    }
}

/// Fetch, patch, configure and build; a matching key skips the build.
pub fn build(note: &mut String) -> Result<Kernel> {
    if let Some(dir) = std::env::var_os("PVTCE_KBUILD") {
        return prebuilt(PathBuf::from(dir), note);
    }
    // Several clones (worktrees, helpers) share one cache: one kernel stage at a time.
    std::fs::create_dir_all(cache()).map_err(|e| e.to_string())?;
    let lock_path = cache().join(".kernel.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        println!("kernel: another build holds {}, waiting", lock_path.display());
        lock.lock().map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    }
    let fetch = repo().join("xtask/scripts/fetch-kernel.sh");
    let pristine = PathBuf::from(
        output(cmd("bash").arg(&fetch).env("PVTCE_CACHE", cache()))?.lines().last().unwrap_or("").to_string(),
    );
    let debian = read(&pristine.join(".pvtce-unpacked"))?.trim().to_string();
    let tree = patched_tree(&pristine)?;
    let name = pristine.file_name().ok_or("bad source path")?.to_string_lossy().into_owned();
    let build = cache().join("kbuild").join(variant_dir(&name));
    let fragment = fragment()?;
    let toolchain = toolchain_id()?;
    let mut key = Key::new();
    key.add(debian.as_bytes()).add(fragment.as_bytes()).add(toolchain.as_bytes());
    for (n, t) in series()? {
        key.add(n.as_bytes()).add(t.as_bytes());
    }
    let mut tkey = Key::new();
    tkey.add(toolchain.as_bytes());
    let stamp = build.join(".pvtce-key");
    let old = std::fs::read_to_string(&stamp).unwrap_or_default();
    let modroot = build.join("modinst");
    let vmlinux = build.join("vmlinux");
    let release_file = build.join("include/config/kernel.release");
    if old.lines().next() == Some(key.hex().as_str()) && vmlinux.exists() && modroot.exists() {
        *note = format!("cache hit (key {}), kernel build skipped: {debian}", key.hex());
        println!("kernel: {note}");
        let release = read(&release_file)?.trim().to_string();
        return Ok(Kernel { debian, build, release, modroot });
    }
    // A different compiler invalidates every object: start the build directory afresh.
    if old.lines().nth(1) != Some(tkey.hex().as_str()) && build.exists() {
        println!("kernel: toolchain changed or first build, clean build directory");
        std::fs::remove_dir_all(&build).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&build).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(out()).map_err(|e| e.to_string())?;
    println!("kernel: {debian}, building in {} (make -j{})", build.display(), nproc());
    let log = out().join("kernel-build.log");
    let fragment_path = build.join(".pvtce-fragment.config");
    write(&fragment_path, &fragment)?;
    run_logged(
        make(&tree, &build).arg(format!("KCONFIG_ALLCONFIG={}", fragment_path.display())).arg("allnoconfig"),
        &log,
    )?;
    check_config(&fragment, &read(&build.join(".config"))?)?;
    run_logged(make(&tree, &build).arg(format!("-j{}", nproc())).args(["vmlinux", "modules"]), &log)?;
    if modroot.exists() {
        std::fs::remove_dir_all(&modroot).map_err(|e| e.to_string())?;
    }
    run_logged(
        make(&tree, &build).arg(format!("INSTALL_MOD_PATH={}", modroot.display())).arg("modules_install"),
        &out().join("kernel-modules-install.log"),
    )?;
    write(&stamp, &format!("{}\n{}\n", key.hex(), tkey.hex()))?;
    let release = read(&release_file)?.trim().to_string();
    *note = format!("built {debian} ({release}), key {}", key.hex());
    Ok(Kernel { debian, build, release, modroot })
}

/// A developer's own kernel build directory (`PVTCE_KBUILD=/path`), used as it is.
fn prebuilt(build: PathBuf, note: &mut String) -> Result<Kernel> {
    let release = read(&build.join("include/config/kernel.release"))?.trim().to_string();
    let modroot = build.join("modinst");
    if !modroot.exists() {
        let src = std::fs::read_link(build.join("source")).map_err(|e| format!("{}/source: {e}", build.display()))?;
        run_logged(
            make(&src, &build).arg(format!("INSTALL_MOD_PATH={}", modroot.display())).arg("modules_install"),
            &out().join("kernel-modules-install.log"),
        )?;
    }
    *note = format!("prebuilt kernel from PVTCE_KBUILD={}", build.display());
    Ok(Kernel { debian: format!("prebuilt ({})", build.display()), build, release, modroot })
}

/// Builds pvtce.ko from the root Kbuild against the kernel build directory.
pub fn module(k: &Kernel) -> Result<PathBuf> {
    make_module(k, &repo(), &out().join("module-build.log"), &[])?;
    Ok(repo().join("pvtce.ko"))
}

/// Lints pvtce.ko with clippy as the kernel runs it (`make ... CLIPPY=1`: clippy-driver with the kernel's lint
/// list, which includes `undocumented_unsafe_blocks`, `unnecessary_safety_comment` and `clippy::all`); any
/// warning fails the stage. It runs on a copy of the module's sources under target/pvtce/clippy/, so the module
/// the VM loads is not rebuilt twice per run.
pub fn module_clippy(k: &Kernel) -> Result<()> {
    let dir = out().join("clippy");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    for src in ["Kbuild", "kmod", "uapi"] {
        run(cmd("cp").arg("-r").arg(repo().join(src)).arg(&dir))?;
    }
    make_module(k, &dir, &out().join("module-clippy.log"), &["CLIPPY=1"])
}

/// `make M=dir modules` with `extra` variables; fails on any warning (see [`count_warnings`]).
fn make_module(k: &Kernel, dir: &Path, log: &Path, extra: &[&str]) -> Result<()> {
    let mut c = cmd("make");
    c.arg("-C")
        .arg(&k.build)
        .arg(format!("M={}", dir.display()))
        .args(MAKE_VARS)
        .args(extra)
        .arg(format!("-j{}", nproc()))
        .arg("modules");
    run_logged(&mut c, log)?;
    let warnings = count_warnings(&read(log)?);
    if warnings > 0 {
        return Err(format!("module build printed {warnings} warning(s); see {}", log.display()));
    }
    Ok(())
}

/// Warnings in a module build log. rustc's notes about the kernel's -Ctarget-feature list (mma, vsx, hard-float,
/// altivec) are expected on powerpc; any other warning, Rust, clippy or C, counts.
fn count_warnings(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("warning:"))
        .filter(|l| {
            !l.contains("-Ctarget-feature") && !l.contains("warnings emitted") && !l.contains("warning emitted")
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::{check_config, count_warnings};

    #[test]
    fn config_check_sees_a_lost_option_and_an_option_that_must_be_off() {
        let fragment = "CONFIG_A=y\n# CONFIG_B is not set\n";
        assert!(check_config(fragment, "CONFIG_A=y\n# CONFIG_B is not set\n").is_ok());
        assert!(check_config(fragment, "CONFIG_A=y\n").is_ok());
        assert!(check_config(fragment, "CONFIG_A=y\nCONFIG_B=y\n").unwrap_err().contains("CONFIG_B (must be off)"));
        assert!(check_config(fragment, "# CONFIG_A is not set\n").unwrap_err().contains("CONFIG_A=y (got unset)"));
    }

    const TARGET_FEATURE: &str = "warning: unstable feature specified for `-Ctarget-feature`: `vsx`\n  |\n  = note: this feature is not stably supported\nwarning: 4 warnings emitted\n";

    #[test]
    fn target_feature_notes_alone_pass() {
        assert_eq!(count_warnings(TARGET_FEATURE), 0);
    }

    #[test]
    fn a_clippy_or_c_warning_fails() {
        let clippy = format!(
            "{TARGET_FEATURE}warning: unsafe block missing a safety comment\n  --> kmod/hcall.rs:40:5\n   = note: requested on the command line with `-W clippy::undocumented-unsafe-blocks`\nwarning: 5 warnings emitted\n"
        );
        assert_eq!(count_warnings(&clippy), 1);
        let c = "kmod/glue.c:12:1: warning: no previous prototype for function 'f' [-Wmissing-prototypes]\n";
        assert_eq!(count_warnings(c), 1);
    }

    #[test]
    fn series_include_expands_in_place_and_stops_at_a_loop() {
        let dir = std::env::temp_dir().join(format!("pvtce-series-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (f, t) in [
            ("a.patch", "A"),
            ("b.patch", "B"),
            ("series", "# c\na.patch\n"),
            ("series.x", "include series\nb.patch\n"),
            ("series.loop", "include series.loop\n"),
        ] {
            std::fs::write(dir.join(f), t).unwrap();
        }
        let mut v = Vec::new();
        super::series_file(&dir, "series.x", &mut v, 0).unwrap();
        assert_eq!(v, [("a.patch".to_string(), "A".to_string()), ("b.patch".to_string(), "B".to_string())]);
        assert!(super::series_file(&dir, "series.loop", &mut Vec::new(), 0).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
