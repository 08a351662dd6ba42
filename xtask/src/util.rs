//! Small helpers: running commands, stage timing, hashing for cache keys. std only.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub type Result<T> = std::result::Result<T, String>;

/// The repository root (the parent of `xtask/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the repo").to_path_buf()
}

/// Heavy artifacts (kernel source and build, apt state) live outside the clone, keyed by their inputs.
pub fn cache() -> PathBuf {
    std::env::var_os("PVTCE_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/pvtce"))
}

/// Per-clone outputs: initramfs, console logs, results.
pub fn out() -> PathBuf {
    repo().join("target/pvtce")
}

/// One stage's timing, printed as it starts and ends; collected for the summary.
pub struct Stages {
    pub done: Vec<(String, f64, String)>,
}

impl Stages {
    pub fn new() -> Self {
        Stages { done: Vec::new() }
    }

    /// Runs `f` as stage `name`; `f` returns a short note (for example "cache hit").
    pub fn run(&mut self, name: &str, f: impl FnOnce() -> Result<String>) -> Result<()> {
        println!("==> [{name}] start");
        let t = Instant::now();
        let r = f();
        let secs = t.elapsed().as_secs_f64();
        match r {
            Ok(note) => {
                println!(
                    "<== [{name}] done in {secs:.1}s{}",
                    if note.is_empty() { String::new() } else { format!(": {note}") }
                );
                self.done.push((name.to_string(), secs, note));
                Ok(())
            }
            Err(e) => {
                println!("<== [{name}] FAILED after {secs:.1}s: {e}");
                self.done.push((name.to_string(), secs, format!("FAILED: {e}")));
                Err(format!("stage {name}: {e}"))
            }
        }
    }

    pub fn summary(&self) -> String {
        let mut s = String::from("stage times:\n");
        for (n, t, note) in &self.done {
            let _ = writeln!(s, "  {n:<12} {t:>8.1}s  {note}");
        }
        s
    }
}

/// Runs a command, inheriting stdout/stderr; fails with the command line on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().map_err(|e| format!("{}: {e}", show(cmd)))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{} exited with {st}", show(cmd)))
    }
}

/// Runs a command quietly, sending its output to `log`; on failure the log's tail is printed.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    if let Some(d) = log.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let f = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    let st = cmd.stdout(Stdio::from(f)).stderr(Stdio::from(f2)).status().map_err(|e| format!("{}: {e}", show(cmd)))?;
    if st.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    eprintln!("---- last lines of {} ----", log.display());
    for l in &lines[from..] {
        eprintln!("{l}");
    }
    Err(format!("{} exited with {st} (full log: {})", show(cmd), log.display()))
}

/// Runs a command and returns its stdout, trimmed.
pub fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd.stderr(Stdio::inherit()).output().map_err(|e| format!("{}: {e}", show(cmd)))?;
    if !o.status.success() {
        return Err(format!("{} exited with {}", show(cmd), o.status));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn cmd<S: AsRef<OsStr>>(prog: S) -> Command {
    Command::new(prog)
}

/// FNV-1a, 64 bit: enough to key a cache on its inputs (not a security boundary).
#[derive(Clone)]
pub struct Key(u64);

impl Key {
    pub fn new() -> Self {
        Key(0xcbf2_9ce4_8422_2325)
    }
    pub fn add(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes.iter().chain(&[0xffu8]) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

pub fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
}

pub fn write(p: &Path, s: &str) -> Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::write(p, s).map_err(|e| format!("{}: {e}", p.display()))
}

pub fn nproc() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
