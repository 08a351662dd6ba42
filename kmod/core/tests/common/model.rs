// The reference model: BTreeMaps and straight-line checks, written from the Linux 7.3 / QEMU behaviour
// (see docs/errors.md), independently of the core's code. It does not use pvtce_core at all.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use super::world::{Memslot, Region, TableShape, UNREADY_BLOCK_SHIFT};

pub const TOO_HARD: i64 = 9999;
pub const PARAM: i64 = -4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MWindow {
    pub shift: u32,
    pub offset: u64,
    pub size: u64,
    /// Absolute page number -> TCE (zeros not kept).
    pub tces: BTreeMap<u64, u64>,
    /// (table id, refs) in link order.
    pub links: Vec<(u32, u32)>,
}

pub struct MTable {
    pub shape: TableShape,
    pub entries: BTreeMap<u64, u64>,
    pub unready: BTreeSet<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MResult {
    pub ret: i64,
    pub r4: u64,
    pub applied: u64,
}

fn res(ret: i64) -> MResult {
    MResult { ret, r4: 0, applied: 0 }
}

pub struct Model {
    pub windows: BTreeMap<u64, MWindow>,
    pub tables: BTreeMap<u32, MTable>,
    pub memslots: Vec<Memslot>,
    pub regions: Vec<Region>,
    pub mem: BTreeMap<u64, u64>,
    pub liobns: [u64; 2],
    pub slots: [Option<(u32, u64, u64)>; 2],
    pub page_shift_mask: u64,
    /// (table, index) of every host entry the model changed since the harness last looked.
    pub log: Vec<(u32, u64)>,
    /// Batches refused at an entry after valid ones (nothing applied), for the coverage report.
    pub refused_midway: u64,
}

impl MWindow {
    /// Everything but the entries (cheap to copy).
    fn clone_shape(&self) -> MWindow {
        MWindow {
            shift: self.shift,
            offset: self.offset,
            size: self.size,
            tces: BTreeMap::new(),
            links: self.links.clone(),
        }
    }
}

impl Model {
    pub fn new(liobns: [u64; 2]) -> Model {
        let tables = super::world::tables()
            .into_iter()
            .map(|shape| (shape.id, MTable { shape, entries: BTreeMap::new(), unready: BTreeSet::new() }))
            .collect();
        let mut m = Model {
            windows: BTreeMap::new(),
            tables,
            memslots: super::world::memslots(),
            regions: super::world::regions(),
            mem: BTreeMap::new(),
            liobns,
            slots: [None, None],
            page_shift_mask: (1 << 12) | (1 << 16) | (1 << 21) | (1 << 24),
            log: Vec::new(),
            refused_midway: 0,
        };
        m.open_slot(0, 12, 0, 1 << 18);
        m
    }

    fn open_slot(&mut self, slot: usize, shift: u32, offset: u64, size: u64) {
        self.slots[slot] = Some((shift, offset, size));
        self.windows
            .insert(self.liobns[slot], MWindow { shift, offset, size, tces: BTreeMap::new(), links: Vec::new() });
    }

    fn close_slot(&mut self, slot: usize) {
        self.slots[slot] = None;
        self.windows.remove(&self.liobns[slot]);
    }

    fn ua_of(&self, gpa: u64) -> Option<u64> {
        for s in &self.memslots {
            if gpa >= s.gpa && gpa < s.gpa + s.size {
                return Some(s.ua + (gpa - s.gpa));
            }
        }
        None
    }

    /// Host physical address of the host page at `ua` of 2^hs bytes, or None (H_TOO_HARD).
    fn hpa_of(&self, ua: u128, hs: u32) -> Option<u64> {
        let len = 1u128 << hs;
        for r in &self.regions {
            let start = r.ua as u128;
            let end = start + r.size as u128;
            if ua >= start && ua + len <= end {
                if r.page_shift < hs {
                    return None;
                }
                let off = (ua - start) as u64;
                let page = r.hpas[(off >> r.page_shift) as usize];
                let byte = page + (off & ((1u64 << r.page_shift) - 1));
                return Some(byte & !((1u64 << hs) - 1));
            }
        }
        None
    }

    fn ready(&self, table: u32, first: u64, count: u64) -> bool {
        let t = &self.tables[&table];
        (first..first + count).all(|i| !t.unready.contains(&(i >> UNREADY_BLOCK_SHIFT)))
    }

    /// Can the kernel map `tce` at absolute page `page` of window `w`? (None = yes)
    fn problem(&self, w: &MWindow, page: u64, tce: u64) -> Option<i64> {
        if tce & 3 == 0 {
            return None;
        }
        let gpa = tce & !3;
        if !gpa.is_multiple_of(1u64 << w.shift) {
            return Some(TOO_HARD);
        }
        let ua = match self.ua_of(gpa) {
            Some(u) => u,
            None => return Some(TOO_HARD),
        };
        for (id, _) in &w.links {
            let hs = self.tables[id].shape.page_shift;
            let sub = 1u64 << (w.shift - hs);
            for j in 0..sub {
                let uaj = ua as u128 + ((j as u128) << hs);
                if self.hpa_of(uaj, hs).is_none() {
                    return Some(TOO_HARD);
                }
            }
            if !self.ready(*id, page * sub, sub) {
                return Some(TOO_HARD);
            }
        }
        None
    }

    fn apply(&mut self, liobn: u64, page: u64, tce: u64) {
        let (shift, links) = (self.windows[&liobn].shift, self.windows[&liobn].links.clone());
        for (id, _) in &links {
            let hs = self.tables[id].shape.page_shift;
            let sub = 1u64 << (shift - hs);
            let ua = if tce & 3 != 0 { self.ua_of(tce & !3) } else { None };
            for j in 0..sub {
                let idx = page * sub + j;
                let value = ua.and_then(|ua| self.hpa_of(ua as u128 + ((j as u128) << hs), hs)).map(|h| h | (tce & 3));
                self.log.push((*id, idx));
                let t = self.tables.get_mut(id).unwrap();
                match value {
                    Some(v) => {
                        t.entries.insert(idx, v);
                    }
                    None => {
                        t.entries.remove(&idx);
                    }
                }
            }
        }
        let w = self.windows.get_mut(&liobn).unwrap();
        if tce == 0 {
            w.tces.remove(&page);
        } else {
            w.tces.insert(page, tce);
        }
    }

    /// Clears `n` entries from `page` quickly (STUFF with value 0 over a big range).
    fn clear_range(&mut self, liobn: u64, page: u64, n: u64) {
        let (shift, links) = (self.windows[&liobn].shift, self.windows[&liobn].links.clone());
        for (id, _) in &links {
            let hs = self.tables[id].shape.page_shift;
            let sub = 1u64 << (shift - hs);
            let t = self.tables.get_mut(id).unwrap();
            let keys: Vec<u64> = t.entries.range(page * sub..(page + n) * sub).map(|(k, _)| *k).collect();
            for k in keys {
                t.entries.remove(&k);
                self.log.push((*id, k));
            }
        }
        let w = self.windows.get_mut(&liobn).unwrap();
        let keys: Vec<u64> = w.tces.range(page..page + n).map(|(k, _)| *k).collect();
        for k in keys {
            w.tces.remove(&k);
        }
    }

    fn page_of(w: &MWindow, ioba: u64, n: u64) -> Option<u64> {
        let size = 1u64 << w.shift;
        if !ioba.is_multiple_of(size) {
            return None;
        }
        let page = ioba / size;
        if page < w.offset {
            return None;
        }
        if (page - w.offset) as u128 + n as u128 > w.size as u128 {
            return None;
        }
        Some(page)
    }

    /// One hypercall, applied whole or not at all; None if `nr` is not a TCE hypercall.
    pub fn hcall(&mut self, nr: u64, args: [u64; 4]) -> Option<MResult> {
        let [liobn, ioba, arg, npages] = args;
        if ![0x1C, 0x20, 0x138, 0x13C].contains(&nr) {
            return None;
        }
        let Some(w) = self.windows.get(&liobn) else { return Some(res(TOO_HARD)) };
        let w = MWindow { tces: BTreeMap::new(), ..w.clone_shape() };
        let tces_ref = &self.windows[&liobn].tces;
        let n;
        let entries: Vec<u64>;
        if nr == 0x1C {
            let Some(page) = Self::page_of(&w, ioba, 1) else { return Some(res(PARAM)) };
            return Some(MResult { ret: 0, r4: tces_ref.get(&page).copied().unwrap_or(0), applied: 0 });
        } else if nr == 0x20 {
            n = 1;
            entries = vec![arg];
        } else if nr == 0x138 {
            n = npages;
            entries = Vec::new();
        } else {
            if npages > 512 || arg % 4096 != 0 {
                return Some(res(PARAM));
            }
            n = npages;
            entries = Vec::new();
        }
        let Some(page) = Self::page_of(&w, ioba, n) else { return Some(res(PARAM)) };
        if nr == 0x138 && arg & 3 != 0 {
            return Some(res(PARAM));
        }
        let entries = if nr == 0x13C {
            let Some(ua) = self.ua_of(arg) else { return Some(res(TOO_HARD)) };
            (0..n).map(|i| u64::from_be(self.mem.get(&(ua + 8 * i)).copied().unwrap_or(0))).collect()
        } else {
            entries
        };
        if nr == 0x138 {
            if arg == 0 {
                self.clear_range(liobn, page, n);
            } else {
                for i in 0..n {
                    self.apply(liobn, page + i, arg);
                }
            }
            return Some(MResult { ret: 0, r4: 0, applied: n });
        }
        for i in 0..n {
            if let Some(c) = self.problem(&w, page + i, entries[i as usize]) {
                if i > 0 {
                    self.refused_midway += 1;
                }
                return Some(res(c));
            }
        }
        for i in 0..n {
            self.apply(liobn, page + i, entries[i as usize]);
        }
        Some(MResult { ret: 0, r4: 0, applied: n })
    }

    /// Link table `id` to window `liobn`: Some(true) linked, Some(false) already linked, None refused.
    pub fn link(&mut self, liobn: u64, id: u32) -> Option<bool> {
        let shape = self.tables.get(&id)?.shape.clone();
        let w = self.windows.get_mut(&liobn)?;
        let hs = shape.page_shift;
        let ok = hs <= w.shift
            && (shape.offset as u128) << hs == (w.offset as u128) << w.shift
            && (shape.size as u128) << hs >= (w.size as u128) << w.shift;
        if !ok {
            return None;
        }
        if let Some(l) = w.links.iter_mut().find(|l| l.0 == id) {
            l.1 += 1;
            return Some(false);
        }
        if w.links.len() >= 8 {
            return None;
        }
        w.links.push((id, 1));
        Some(true)
    }

    pub fn unlink(&mut self, liobn: u64, id: u32) -> bool {
        let Some(w) = self.windows.get_mut(&liobn) else { return false };
        let Some(pos) = w.links.iter().position(|l| l.0 == id) else { return false };
        w.links[pos].1 -= 1;
        if w.links[pos].1 == 0 {
            w.links.remove(pos);
        }
        true
    }

    pub fn ddw_query(&self) -> (u32, u32) {
        let avail = self.slots.iter().filter(|s| s.is_none()).count() as u32;
        let mut mask = 0;
        for (shift, bit) in [(12, 1), (16, 2), (24, 4), (25, 8), (26, 16), (27, 32), (28, 64), (34, 128), (21, 256)] {
            if self.page_shift_mask & (1u64 << shift) != 0 {
                mask |= bit;
            }
        }
        (avail, mask)
    }

    /// RTAS create: Ok((liobn, bus offset)) or Err(rtas code).
    pub fn ddw_create(&mut self, ps: u32, ws: u32) -> Result<(u64, u64), i32> {
        if ps >= 64 || self.page_shift_mask & (1u64 << ps) == 0 || ws < ps {
            return Err(-3);
        }
        let active = self.slots.iter().filter(|s| s.is_some()).count();
        let Some(slot) = self.slots.iter().position(|s| s.is_none()) else { return Err(-1) };
        if !(12..=34).contains(&ps) || ws - ps >= 64 {
            return Err(-3);
        }
        let bus: u64 = if active == 0 { 0 } else { 1 << 59 };
        let pages = 1u64 << (ws - ps);
        let offset = bus >> ps;
        if (offset as u128 + pages as u128) << ps > 1u128 << 64 {
            return Err(-3);
        }
        self.open_slot(slot, ps, offset, pages);
        Ok((self.liobns[slot], bus))
    }

    pub fn ddw_remove(&mut self, liobn: u64) -> i32 {
        match self.liobns.iter().position(|l| *l == liobn) {
            Some(slot) if self.slots[slot].is_some() => {
                self.close_slot(slot);
                0
            }
            _ => -3,
        }
    }

    pub fn ddw_reset(&mut self) {
        self.close_slot(0);
        self.close_slot(1);
        self.open_slot(0, 12, 0, 1 << 18);
    }
}
