// Runs one operation sequence against the core (through the dispatcher and the in-memory traits) and the
// reference model, and reports the first divergence. The sequence is decoded from bytes, so proptest,
// cargo-fuzz and the corpus replay test share one decoder and one comparison.
#![allow(dead_code)]

use pvtce_core::ddw::{Pe, PeConfig};
use pvtce_core::hcall::{hcall_with_buf, Dispatch};
use pvtce_core::host::{HostTableId, Planned};
use pvtce_core::types::Liobn;
use pvtce_core::window::{LinkOutcome, Window, PLAN_SLOTS};

use super::model::Model;
use super::sim::{SimMachine, VecStore};
use super::world;

pub const LIOBNS: [u64; 2] = [0x8000_0000, 0x8000_0001];

#[derive(Clone, Debug)]
pub enum Op {
    Hcall {
        nr: u64,
        args: [u64; 4],
        list: Option<Vec<u64>>,
    },
    /// The VMM redoes the last call refused with H_TOO_HARD, whole (as an unmodified VMM does).
    Retry,
    Link {
        liobn: u64,
        table: u32,
    },
    Unlink {
        liobn: u64,
        table: u32,
    },
    Create {
        page_shift: u32,
        window_shift: u32,
    },
    Remove {
        liobn: u64,
    },
    Reset,
    Query,
    Unready {
        table: u32,
        block: u64,
    },
    ReadyAll,
}

/// Counts of what ran, for the report.
#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub ops: u64,
    pub hcalls: u64,
    pub success: u64,
    pub param: u64,
    pub too_hard: u64,
    /// Batches refused with entries before the failing one valid (none of them applied).
    pub refused_midway: u64,
    pub retries: u64,
    pub need_alloc: u64,
    pub fanout_calls: u64,
    pub two_table_calls: u64,
    pub links_ok: u64,
    pub ddw_creates_ok: u64,
}

pub struct World {
    pub sim: SimMachine,
    pub pe: Pe,
    pub model: Model,
    /// Guest entries written so far, as (window, first page, count) runs (compared in full at the end).
    pub touched: Vec<(u64, u64, u64)>,
    /// Guest entries the current operation may have written, as (window, first page, count).
    pub step: Option<(u64, u64, u64)>,
    pub last_too_hard: Option<(u64, [u64; 4])>,
    pub stats: Stats,
}

impl World {
    pub fn new() -> World {
        let pe = Pe::new(PeConfig::qemu_default([Liobn(LIOBNS[0]), Liobn(LIOBNS[1])]));
        let mut sim = SimMachine::new();
        for c in pe.windows() {
            sim.windows.insert(c.liobn.0, (Window::new(c.liobn, c.geometry), VecStore::new()));
        }
        World {
            sim,
            pe,
            model: Model::new(LIOBNS),
            touched: Vec::new(),
            step: None,
            last_too_hard: None,
            stats: Stats::default(),
        }
    }

    fn hcall(&mut self, nr: u64, args: [u64; 4]) -> Result<(), String> {
        let mut buf = [0u64; 512];
        let mut plan = [Planned::default(); PLAN_SLOTS];
        let mut tries = 0;
        let got = loop {
            match hcall_with_buf(&mut self.sim, nr, args, &mut buf, &mut plan) {
                Dispatch::NeedAlloc(n) => {
                    tries += 1;
                    self.stats.need_alloc += 1;
                    if tries > 1 {
                        return Err(format!("second NeedAlloc after providing pages: {n:?}"));
                    }
                    let (_, store) = self.sim.windows.get_mut(&args[0]).ok_or("NeedAlloc for unknown window")?;
                    store.add(n.pages);
                }
                d => break d,
            }
        };
        // Every region hold validation took is in an entry or given back once the call has answered.
        if let Some(h) = self.sim.host.holds.borrow().iter().next() {
            return Err(format!("hcall {nr:#x} {args:x?}: region hold {h} still held after the call"));
        }
        let midway = self.model.refused_midway;
        let want = self.model.hcall(nr, args);
        self.stats.refused_midway += self.model.refused_midway - midway;
        self.stats.hcalls += 1;
        let got = match got {
            Dispatch::Return { ret, r4, applied } => Some((ret, r4, applied)),
            Dispatch::NotOurs => None,
            Dispatch::NeedAlloc(_) => unreachable!(),
        };
        let want = want.map(|m| (m.ret, m.r4, m.applied));
        if got != want {
            return Err(format!("hcall {nr:#x} {args:x?}: core {got:x?} model {want:x?}"));
        }
        if let Some((ret, _, _)) = got {
            match ret {
                0 => self.stats.success += 1,
                -4 => self.stats.param += 1,
                9999 => {
                    self.stats.too_hard += 1;
                    self.last_too_hard = Some((nr, args));
                }
                _ => {}
            }
            if let Some(w) = self.model.windows.get(&args[0]) {
                if w.links.len() > 1 {
                    self.stats.two_table_calls += 1;
                }
                if w.links.iter().any(|(id, _)| self.model.tables[id].shape.page_shift < w.shift) {
                    self.stats.fanout_calls += 1;
                }
                // Remember which entries to compare.
                if let Some(page) = (args[1] >> w.shift).checked_sub(0) {
                    let n = match nr {
                        0x138 | 0x13C => args[3].min(1024),
                        _ => 1,
                    };
                    // Pages past u64::MAX do not exist: the run stops there.
                    let n = n.min((u64::MAX - page).saturating_add(1));
                    self.touched.push((args[0], page, n));
                    self.step = Some((args[0], page, n));
                }
            }
        }
        Ok(())
    }

    fn compare_windows(&self) -> Result<(), String> {
        let core_liobns: Vec<u64> = self.sim.windows.keys().copied().collect();
        let model_liobns: Vec<u64> = self.model.windows.keys().copied().collect();
        if core_liobns != model_liobns {
            return Err(format!("windows differ: core {core_liobns:x?} model {model_liobns:x?}"));
        }
        for (liobn, (w, _)) in &self.sim.windows {
            let mw = &self.model.windows[liobn];
            let g = w.geometry();
            if (g.page_shift().get(), g.offset(), g.size()) != (mw.shift, mw.offset, mw.size) {
                return Err(format!("window {liobn:#x} geometry differs"));
            }
            let mut core_links: Vec<(u32, u32)> = w.links().map(|l| (l.id.0, l.refs)).collect();
            let mut model_links = mw.links.clone();
            core_links.sort();
            model_links.sort();
            if core_links != model_links {
                return Err(format!("window {liobn:#x} links: core {core_links:?} model {model_links:?}"));
            }
        }
        Ok(())
    }

    fn compare_entry(&self, liobn: u64, page: u64) -> Result<(), String> {
        let (Some((w, store)), Some(mw)) = (self.sim.windows.get(&liobn), self.model.windows.get(&liobn)) else {
            return Ok(());
        };
        let want = mw.tces.get(&page).copied().unwrap_or(0);
        let got = page.checked_sub(w.geometry().offset()).and_then(|rel| w.table().get(store, rel)).unwrap_or(0);
        if got != want {
            return Err(format!("window {liobn:#x} page {page:#x}: core {got:#x} model {want:#x}"));
        }
        Ok(())
    }

    /// Compares `n` guest entries of `liobn` from `page` (a run `hcall` recorded).
    fn compare_run(&self, liobn: u64, page: u64, n: u64) -> Result<(), String> {
        (0..n).try_for_each(|i| self.compare_entry(liobn, page + i))
    }

    fn compare_host(&self, id: u32, index: u64) -> Result<(), String> {
        let got = self.sim.host.tables[&id].entries.get(&index);
        let want = self.model.tables[&id].entries.get(&index);
        if got != want {
            return Err(format!("host table {id} index {index:#x}: core {got:x?} model {want:x?}"));
        }
        Ok(())
    }

    /// Checks what the last operation could have changed.
    fn compare_step(&mut self) -> Result<(), String> {
        self.compare_windows()?;
        if let Some((liobn, first, n)) = self.step.take() {
            self.compare_run(liobn, first, n)?;
        }
        let mut log = std::mem::take(&mut self.sim.host.log);
        log.append(&mut self.model.log);
        for (id, index) in log {
            self.compare_host(id, index)?;
        }
        for (id, t) in &self.sim.host.tables {
            if !t.dirty.is_empty() {
                return Err(format!("host table {id}: entries exchanged but not invalidated: {:?}", t.dirty));
            }
        }
        Ok(())
    }

    /// Checks the whole state.
    pub fn compare_full(&self) -> Result<(), String> {
        self.compare_windows()?;
        for &(liobn, first, n) in &self.touched {
            self.compare_run(liobn, first, n)?;
        }
        for (liobn, mw) in &self.model.windows {
            for page in mw.tces.keys() {
                self.compare_entry(*liobn, *page)?;
            }
        }
        for (id, t) in &self.sim.host.tables {
            let want = &self.model.tables[id].entries;
            if t.entries.len() != want.len() || want.iter().any(|(k, v)| t.entries.get(k) != Some(v)) {
                return Err(format!("host table {id} differs"));
            }
        }
        Ok(())
    }

    fn drop_window(&mut self, liobn: u64) {
        if let Some((mut w, mut store)) = self.sim.windows.remove(&liobn) {
            w.release(&mut store);
            assert_eq!(store.in_use, 0, "release must free every page");
        }
        self.touched.retain(|&(l, _, _)| l != liobn);
    }

    pub fn run(&mut self, op: &Op) -> Result<(), String> {
        self.stats.ops += 1;
        match op {
            Op::Hcall { nr, args, list } => {
                if let Some(list) = list {
                    self.sim.host.write_list(args[2], list);
                    if let Some(ua) = self.sim.host.gpa_to_ua_pub(args[2]) {
                        for (i, t) in list.iter().enumerate() {
                            self.model.mem.insert(ua + 8 * i as u64, t.to_be());
                        }
                    }
                }
                self.hcall(*nr, *args)?;
            }
            Op::Retry => {
                if let Some((nr, args)) = self.last_too_hard.take() {
                    self.stats.retries += 1;
                    self.hcall(nr, args)?;
                }
            }
            Op::Link { liobn, table } => {
                let got = match self.sim.windows.get_mut(liobn) {
                    Some((w, _)) => w.link(&self.sim.host, HostTableId(*table)).ok().map(|o| o == LinkOutcome::Linked),
                    None => None,
                };
                let want = self.model.link(*liobn, *table);
                if got != want {
                    return Err(format!("link {liobn:#x} {table}: core {got:?} model {want:?}"));
                }
                if got.is_some() {
                    self.stats.links_ok += 1;
                }
            }
            Op::Unlink { liobn, table } => {
                let got = self.sim.windows.get_mut(liobn).is_some_and(|(w, _)| w.unlink(HostTableId(*table)));
                let want = self.model.unlink(*liobn, *table);
                if got != want {
                    return Err(format!("unlink {liobn:#x} {table}: core {got} model {want}"));
                }
            }
            Op::Create { page_shift, window_shift } => {
                let got = self.pe.create(*page_shift, *window_shift);
                let want = self.model.ddw_create(*page_shift, *window_shift);
                match (got, want) {
                    (Ok(c), Ok((liobn, bus))) if c.liobn.0 == liobn && c.geometry.bus_start() == bus => {
                        self.stats.ddw_creates_ok += 1;
                        self.sim.windows.insert(liobn, (Window::new(c.liobn, c.geometry), VecStore::new()));
                    }
                    (Err(e), Err(code)) if e.as_i32() == code => {}
                    (g, w) => return Err(format!("create {page_shift} {window_shift}: core {g:?} model {w:?}")),
                }
            }
            Op::Remove { liobn } => {
                let got = self.pe.remove(Liobn(*liobn)).map_or_else(|e| e.as_i32(), |_| 0);
                let want = self.model.ddw_remove(*liobn);
                if got != want {
                    return Err(format!("remove {liobn:#x}: core {got} model {want}"));
                }
                if got == 0 {
                    self.drop_window(*liobn);
                }
            }
            Op::Reset => {
                let r = self.pe.reset().map_err(|e| format!("reset failed {e:?}"))?;
                for liobn in r.removed.iter().flatten() {
                    self.drop_window(liobn.0);
                }
                let d = r.default;
                self.sim.windows.insert(d.liobn.0, (Window::new(d.liobn, d.geometry), VecStore::new()));
                self.model.ddw_reset();
            }
            Op::Query => {
                let q = self.pe.query().map_err(|e| format!("query failed {e:?}"))?;
                let want = self.model.ddw_query();
                if (q.windows_available, q.page_size_mask) != want {
                    return Err(format!("query: core {q:?} model {want:?}"));
                }
            }
            Op::Unready { table, block } => {
                if let Some(t) = self.sim.host.tables.get_mut(table) {
                    t.unready.insert(*block);
                }
                if let Some(t) = self.model.tables.get_mut(table) {
                    t.unready.insert(*block);
                }
            }
            Op::ReadyAll => {
                for t in self.sim.host.tables.values_mut() {
                    t.unready.clear();
                }
                for t in self.model.tables.values_mut() {
                    t.unready.clear();
                }
            }
        }
        self.compare_step()
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl super::sim::SimHost {
    pub fn gpa_to_ua_pub(&self, gpa: u64) -> Option<u64> {
        pvtce_core::host::Host::gpa_to_ua(self, gpa)
    }
}

/// Reads bytes as choices; past the end every read is 0.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, pos: 0 }
    }
    pub fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, i| v | (u64::from(self.u8()) << (8 * i)))
    }
}

/// Window geometry the decoder aims at (by LIOBN), from the model's view.
fn geometry(model: &Model, liobn: u64) -> Option<(u32, u64, u64)> {
    model.windows.get(&liobn).map(|w| (w.shift, w.offset, w.size))
}

/// Most entries one batch may touch on `liobn` so that entries x fan-out stays near 2^14: keeps each
/// operation cheap for the fuzzer (the semantics do not depend on the size past that).
fn work_cap(model: &Model, liobn: u64) -> u64 {
    let Some(w) = model.windows.get(&liobn) else { return 1 << 12 };
    let max_sub = w.links.iter().map(|(id, _)| 1u64 << (w.shift - model.tables[id].shape.page_shift)).max();
    (1u64 << 12) / max_sub.unwrap_or(1)
}

fn pick_liobn(b: &mut Bytes) -> u64 {
    match b.u8() % 8 {
        0..=3 => LIOBNS[0],
        4..=6 => LIOBNS[1],
        _ => 0x1234,
    }
}

fn pick_ioba(b: &mut Bytes, g: Option<(u32, u64, u64)>) -> u64 {
    let Some((shift, offset, size)) = g else { return b.u64() };
    let k = b.u8();
    let page = match k % 16 {
        0..=9 => offset + u64::from(b.u8() % 64),
        10..=11 => offset + size.saturating_sub(1 + u64::from(b.u8() % 4)),
        12 => offset + size,
        13 => offset.wrapping_sub(1),
        14 => return (offset << shift) | (1 << (b.u8() % 12)),
        _ => return b.u64(),
    };
    page << shift
}

fn pick_tce(b: &mut Bytes, shift: u32) -> u64 {
    let perm = u64::from(b.u8() % 4);
    let perm = if perm == 0 && b.u8().is_multiple_of(2) { 3 } else { perm };
    let psize = 1u64 << shift;
    let idx = u64::from(b.u16());
    let gpa = match b.u8() % 16 {
        0..=6 => (idx * psize) % (world::RAM_SIZE / 2),
        7 => world::RAM_SIZE / 2 + (idx * psize) % (world::RAM_SIZE / 2),
        8..=9 => world::RAM2_GPA + (idx * psize) % world::RAM2_SIZE,
        10 => 512 << 20,
        11 => ((idx * psize) % (world::RAM_SIZE / 2)) + 0x1000 + 4 * u64::from(b.u8() % 2),
        12 => return 0,
        13 => return (idx * psize) & !3,
        14 => world::RAM_SIZE / 2 - 0x1000,
        _ => return b.u64(),
    };
    gpa | perm
}

/// Decodes one operation; the model supplies the current windows so most calls aim inside them.
pub fn decode_op(b: &mut Bytes, model: &Model) -> Op {
    let kind = b.u8() % 32;
    match kind {
        0..=6 => {
            let liobn = pick_liobn(b);
            let g = geometry(model, liobn);
            let ioba = pick_ioba(b, g);
            let tce = pick_tce(b, g.map_or(12, |g| g.0));
            Op::Hcall { nr: 0x20, args: [liobn, ioba, tce, 0], list: None }
        }
        7..=9 => {
            let liobn = pick_liobn(b);
            let g = geometry(model, liobn);
            Op::Hcall { nr: 0x1C, args: [liobn, pick_ioba(b, g), 0, 0], list: None }
        }
        10..=12 => {
            let liobn = pick_liobn(b);
            let g = geometry(model, liobn);
            let ioba = pick_ioba(b, g);
            let value = match b.u8() % 8 {
                0..=4 => 0,
                5 => 0x1000,
                6 => 1 + u64::from(b.u8() % 3),
                _ => b.u64(),
            };
            let npages = match b.u8() % 16 {
                0..=11 => u64::from(b.u8() % 80),
                12 => u64::from(b.u16() % 2048),
                13 => g.map_or(1, |g| g.2),
                14 => u64::MAX,
                _ => b.u64(),
            };
            let npages = if value != 0 && npages > 4096 { npages % 4096 } else { npages };
            // Huge counts stay (they must fail the range check); counts that fit are capped.
            let cap = work_cap(model, liobn);
            let fits = g.is_some_and(|g| npages <= g.2);
            let npages = if fits && npages > cap { cap } else { npages };
            Op::Hcall { nr: 0x138, args: [liobn, ioba, value, npages], list: None }
        }
        13..=18 => {
            let liobn = pick_liobn(b);
            let g = geometry(model, liobn);
            let ioba = pick_ioba(b, g);
            let npages = match b.u8() % 16 {
                0..=12 => u64::from(b.u8() % 24),
                13 => 512,
                14 => 513,
                _ => u64::from(b.u16() % 600),
            };
            let list_gpa = match b.u8() % 8 {
                0..=5 => 0x10_0000 + 0x1000 * u64::from(b.u8() % 16),
                6 => 512 << 20,
                _ => 0x10_0000 + 8,
            };
            let shift = g.map_or(12, |g| g.0);
            let npages = if npages <= 512 { npages.min(work_cap(model, liobn)) } else { npages };
            let list = (0..npages.min(512)).map(|_| pick_tce(b, shift)).collect();
            Op::Hcall { nr: 0x13C, args: [liobn, ioba, list_gpa, npages], list: Some(list) }
        }
        19 => Op::Retry,
        20..=22 => {
            let liobn = pick_liobn(b);
            // Mostly tables that can fit the window's bus offset: 0, 1 at bus 0; 2..5 at 1 << 59.
            let table = match (b.u8() % 4, geometry(model, liobn)) {
                (0, _) | (_, None) => u32::from(b.u8() % 8),
                (_, Some((_, 0, _))) => [0, 1, 6][usize::from(b.u8() % 3)],
                _ => 2 + u32::from(b.u8() % 4),
            };
            Op::Link { liobn, table }
        }
        23 => Op::Unlink { liobn: pick_liobn(b), table: u32::from(b.u8() % 8) },
        24..=25 => {
            let page_shift = [12, 16, 21, 24, 13, 40, 64, 200][usize::from(b.u8() % 8)];
            let window_shift = match b.u8() % 8 {
                0..=5 => page_shift + u32::from(b.u8() % 20),
                6 => page_shift.wrapping_sub(1),
                _ => u32::from(b.u8()),
            };
            Op::Create { page_shift, window_shift }
        }
        26 => Op::Remove { liobn: pick_liobn(b) },
        27 => Op::Reset,
        28 => Op::Query,
        29 => Op::Unready { table: u32::from(b.u8() % 7), block: u64::from(b.u8() % 4) },
        30 => Op::ReadyAll,
        _ => {
            let nr = [0x1C, 0x20, 0x138, 0x13C, 0x04, 0x1D][usize::from(b.u8() % 6)];
            Op::Hcall { nr, args: [pick_liobn(b), b.u64(), b.u64(), b.u64() % 1024], list: None }
        }
    }
}

/// Decodes `data` into operations and runs them all, comparing after each; at most `max_ops`.
pub fn run_bytes(data: &[u8], max_ops: usize) -> Result<Stats, String> {
    let mut world = World::new();
    let mut b = Bytes::new(data);
    let mut n = 0;
    while !b.done() && n < max_ops {
        let op = decode_op(&mut b, &world.model);
        world.run(&op).map_err(|e| format!("op {n} {op:x?}: {e}"))?;
        n += 1;
    }
    world.compare_full().map_err(|e| format!("after {n} ops: {e}"))?;
    Ok(world.stats)
}
