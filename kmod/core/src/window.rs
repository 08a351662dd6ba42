//! One guest DMA window (one LIOBN): its geometry, its guest-visible table and the host tables linked to
//! it, with the four TCE hypercalls as methods.
//!
//! Every call validates the whole request before changing anything. The order of the checks and the codes
//! follow Linux 7.3 `arch/powerpc/kvm/book3s_64_vio.c`; where pvtce differs it says so.

use super::error::{HResult, HcallError};
use super::host::{
    check_link, ua_to_hpa, Host, HostEntry, HostTableId, HostTce, Link, LinkError, Planned, Region, RunFailed,
    MAX_LINKS,
};
use super::table::{GuestTable, NeedAlloc, PageStore};
use super::types::{Ioba, Liobn, Tce, WindowGeometry};
use core::cell::Cell;

/// Most TCEs in one H_PUT_TCE_INDIRECT list (PAPR: the list fits one 4 KiB page).
pub const MAX_INDIRECT_TCES: u64 = 512;
/// Required alignment of the H_PUT_TCE_INDIRECT list address.
pub const TCE_LIST_ALIGN: u64 = 4096;
/// Host entries a caller's plan buffer holds for [`Window::execute_planned`]: an H_PUT_TCE_INDIRECT of 512
/// entries into one linked table of the window's page size. A batch that writes more host entries (over all
/// linked tables, sub-pages included) runs without a plan.
pub const PLAN_SLOTS: usize = 512;

/// [`Window::indirect_precheck`] on the window's geometry alone, which never changes: a caller that keeps the
/// geometry beside the window needs no lock for it.
pub fn indirect_precheck(geometry: &WindowGeometry, ioba: Ioba, list_gpa: u64, npages: u64) -> HResult<()> {
    if npages > MAX_INDIRECT_TCES || list_gpa & (TCE_LIST_ALIGN - 1) != 0 {
        return Err(HcallError::Parameter);
    }
    geometry.check_ioba(ioba, npages).map(|_| ()).ok_or(HcallError::Parameter)
}

/// What a batch writes, entry by entry.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// H_PUT_TCE: one entry.
    Put {
        /// Bus address of the entry.
        ioba: Ioba,
        /// New value.
        tce: Tce,
    },
    /// H_STUFF_TCE: `npages` entries, all set to `value` (which must be clear).
    Stuff {
        /// Bus address of the first entry.
        ioba: Ioba,
        /// Value for every entry.
        value: Tce,
        /// Number of entries.
        npages: u64,
    },
    /// H_PUT_TCE_INDIRECT: one entry per word of `list`, a copy of the guest's list made once, each word
    /// as loaded from memory (big-endian in memory; the core decodes with `u64::from_be`).
    Indirect {
        /// Bus address of the first entry.
        ioba: Ioba,
        /// The copied list; its length is `npages`.
        list: &'a [u64],
    },
}

impl Request<'_> {
    /// Number of entries the request writes.
    pub fn npages(&self) -> u64 {
        match self {
            Request::Put { .. } => 1,
            Request::Stuff { npages, .. } => *npages,
            Request::Indirect { list, .. } => list.len() as u64,
        }
    }

    fn ioba(&self) -> Ioba {
        match self {
            Request::Put { ioba, .. } | Request::Stuff { ioba, .. } | Request::Indirect { ioba, .. } => *ioba,
        }
    }

    /// Entry `i` of the request, decoded (`i < npages()`).
    pub fn entry(&self, i: u64) -> Tce {
        match self {
            Request::Put { tce, .. } => *tce,
            Request::Stuff { value, .. } => *value,
            Request::Indirect { list, .. } => {
                Tce(usize::try_from(i).ok().and_then(|i| list.get(i)).map_or(0, |w| u64::from_be(*w)))
            }
        }
    }
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// `Ok(r4)` or the PAPR error.
    pub result: HResult<u64>,
    /// Entries now in effect in the guest table and every linked host table: all of the request's on
    /// success, 0 on an error (a call is applied whole or not at all).
    pub applied: u64,
}

/// The answer of a state-changing call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The call finished (successfully, or with an error and nothing changed).
    Done(Completion),
    /// Nothing changed: add `pages` pages to the store's reserve (outside any lock) and call again.
    NeedAlloc(NeedAlloc),
}

impl Outcome {
    fn err(e: HcallError, applied: u64) -> Outcome {
        Outcome::Done(Completion { result: Err(e), applied })
    }
}

/// Whether [`Window::link`] added a table or took one more reference on a linked one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkOutcome {
    /// The table is now linked.
    Linked,
    /// The table was already linked; its reference count went up.
    AlreadyLinked,
}

/// One guest DMA window.
#[derive(Debug)]
pub struct Window {
    liobn: Liobn,
    geometry: WindowGeometry,
    table: GuestTable,
    links: [Option<Link>; MAX_LINKS],
}

impl Window {
    /// A new empty window. It costs no table page until the first non-zero entry.
    pub fn new(liobn: Liobn, geometry: WindowGeometry) -> Window {
        Window { liobn, geometry, table: GuestTable::new(geometry.size()), links: [None; MAX_LINKS] }
    }

    /// The window's LIOBN.
    pub fn liobn(&self) -> Liobn {
        self.liobn
    }

    /// The window's geometry.
    pub fn geometry(&self) -> &WindowGeometry {
        &self.geometry
    }

    /// The guest-visible table.
    pub fn table(&self) -> &GuestTable {
        &self.table
    }

    /// Bytes this window uses: descriptor plus table pages.
    pub fn bytes_used(&self) -> usize {
        self.table.bytes_used().saturating_add(core::mem::size_of::<Self>() - core::mem::size_of::<GuestTable>())
    }

    /// Frees all table pages (before dropping the window).
    pub fn release<S: PageStore>(&mut self, store: &mut S) {
        self.table.release(store);
    }

    /// The linked host tables.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.iter().flatten()
    }

    /// The linked host tables in [`Window::links`] order, packed: the hot loops walk these, not the slots.
    fn packed_links(&self) -> ([Link; MAX_LINKS], usize) {
        let mut packed = [Link { id: HostTableId(0), page_shift: self.geometry.page_shift(), refs: 0 }; MAX_LINKS];
        let mut n = 0;
        for (slot, link) in packed.iter_mut().zip(self.links()) {
            *slot = *link;
            n += 1;
        }
        (packed, n)
    }

    /// Links host table `id` (Linux `kvm_spapr_tce_attach_iommu_group`): the table must pass
    /// [`check_link`]; linking it again only counts a reference. Existing entries are not replayed
    /// into the table (the VMM owns that, as with upstream KVM).
    pub fn link<H: Host + ?Sized>(&mut self, host: &H, id: HostTableId) -> Result<LinkOutcome, LinkError> {
        let geometry = host.table_geometry(id).ok_or(LinkError::UnknownTable)?;
        check_link(&self.geometry, &geometry)?;
        for link in self.links.iter_mut().flatten() {
            if link.id == id {
                link.refs = link.refs.saturating_add(1);
                return Ok(LinkOutcome::AlreadyLinked);
            }
        }
        let free = self.links.iter_mut().find(|l| l.is_none()).ok_or(LinkError::TooManyLinks)?;
        *free = Some(Link { id, page_shift: geometry.page_shift, refs: 1 });
        Ok(LinkOutcome::Linked)
    }

    /// Drops one reference on host table `id` (Linux `kvm_spapr_tce_release_iommu_group`); the link goes
    /// away with the last one. Later hypercalls keep updating the guest table; with no table linked
    /// nothing else happens. Returns false if `id` was not linked.
    pub fn unlink(&mut self, id: HostTableId) -> bool {
        for slot in self.links.iter_mut() {
            if let Some(link) = slot {
                if link.id == id {
                    link.refs = link.refs.saturating_sub(1);
                    if link.refs == 0 {
                        *slot = None;
                    }
                    return true;
                }
            }
        }
        false
    }

    /// H_GET_TCE (Linux `kvmppc_h_get_tce`): the guest-visible entry, 0 where nothing was stored.
    pub fn get_tce<S: PageStore>(&self, store: &S, ioba: Ioba) -> HResult<u64> {
        let page = self.geometry.check_ioba(ioba, 1).ok_or(HcallError::Parameter)?;
        self.table.get(store, page - self.geometry.offset()).ok_or(HcallError::Parameter)
    }

    /// H_PUT_TCE (Linux `kvmppc_h_put_tce`).
    pub fn put_tce<S: PageStore, H: Host + ?Sized>(
        &mut self,
        store: &mut S,
        host: &mut H,
        ioba: Ioba,
        tce: Tce,
    ) -> Outcome {
        self.execute(store, host, &Request::Put { ioba, tce })
    }

    /// H_STUFF_TCE (Linux `kvmppc_h_stuff_tce`).
    pub fn stuff_tce<S: PageStore, H: Host + ?Sized>(
        &mut self,
        store: &mut S,
        host: &mut H,
        ioba: Ioba,
        value: Tce,
        npages: u64,
    ) -> Outcome {
        self.execute(store, host, &Request::Stuff { ioba, value, npages })
    }

    /// The H_PUT_TCE_INDIRECT checks made before the list is read (Linux order: `npages > 512`, list
    /// alignment, then the bus range). The caller then translates `list_gpa` (no memslot: `H_TOO_HARD`),
    /// copies `npages` words once, and calls [`Window::put_tce_indirect`].
    pub fn indirect_precheck(&self, ioba: Ioba, list_gpa: u64, npages: u64) -> HResult<()> {
        indirect_precheck(&self.geometry, ioba, list_gpa, npages)
    }

    /// H_PUT_TCE_INDIRECT on the copied list (Linux `kvmppc_h_put_tce_indirect`).
    pub fn put_tce_indirect<S: PageStore, H: Host + ?Sized>(
        &mut self,
        store: &mut S,
        host: &mut H,
        ioba: Ioba,
        list: &[u64],
    ) -> Outcome {
        self.execute(store, host, &Request::Indirect { ioba, list })
    }

    /// Runs `request` as Linux does: the request-level checks, then every entry is validated before any is
    /// written (Linux `kvmppc_h_put_tce_indirect` validates the whole list first). On a validation failure
    /// nothing is applied and the error comes back with `applied == 0`; after `H_TOO_HARD` the VMM redoes the
    /// whole call, since the stock uAPI cannot tell it how far a batch got.
    ///
    /// This is [`Window::execute_planned`] without a plan buffer: the apply step translates every entry
    /// again.
    pub fn execute<S: PageStore, H: Host + ?Sized>(
        &mut self,
        store: &mut S,
        host: &mut H,
        request: &Request<'_>,
    ) -> Outcome {
        self.execute_planned(store, host, request, &mut [])
    }

    /// [`Window::execute`] carrying one plan per host entry from validation to apply in `plan` (the caller's
    /// reusable buffer, [`PLAN_SLOTS`] long; its contents on entry do not matter): validation decodes and
    /// translates each entry once into the host entries it writes, with their region holds
    /// ([`Host::take_region`]), apply hands each linked table its run from the plan as it stands
    /// ([`Host::table_run_planned`]), and every hold is given back ([`Host::put_region`]) when the batch is
    /// refused (a later entry fails, the store needs pages, or a host run fails). A batch with more host
    /// entries than `plan` holds runs without one, as [`Window::execute`]. The answer is the same either way.
    // In pvtce.ko (`--cfg MODULE`), with the module's other early-path functions (kmod/glue.c `PVTCE_HOT`).
    #[cfg_attr(MODULE, link_section = ".text.pvtce_hot")]
    pub fn execute_planned<S: PageStore, H: Host + ?Sized>(
        &mut self,
        store: &mut S,
        host: &mut H,
        request: &Request<'_>,
        plan: &mut [Planned],
    ) -> Outcome {
        let npages = request.npages();
        if let Request::Indirect { .. } = request {
            if npages > MAX_INDIRECT_TCES {
                return Outcome::err(HcallError::Parameter, 0);
            }
        }
        let Some(first) = self.geometry.check_ioba(request.ioba(), npages) else {
            return Outcome::err(HcallError::Parameter, 0);
        };
        if let Request::Stuff { value, .. } = request {
            // Linux: only permission bits are checked, so userspace may poison entries.
            if !value.is_clear() {
                return Outcome::err(HcallError::Parameter, 0);
            }
        }

        // The entries as the guest stored them: one big-endian word each (H_PUT_TCE's value encoded so),
        // decoded where it is read; H_STUFF_TCE's are all `value`, checked above.
        let put;
        let (words, fill) = match request {
            Request::Put { tce, .. } => {
                put = [tce.0.to_be()];
                (&put[..], None)
            }
            Request::Indirect { list, .. } => (*list, None),
            Request::Stuff { value, .. } => (&[][..], Some(*value)),
        };

        // Validate every entry before touching anything (STUFF's value was checked above; it maps nothing, so
        // it needs no plan).
        let (packed, nlinks) = self.packed_links();
        let links = &packed[..nlinks];
        let mut plan = match fill {
            Some(_) => None,
            None => self.plan_layout(npages, plan),
        };
        if fill.is_none() {
            if let Err(e) = self.validate(host, links, first, words, plan.as_mut()) {
                return Outcome::err(e, 0);
            }
        }
        let plan = plan.as_ref();

        let rel = first - self.geometry.offset();
        let needed = match fill {
            // Clearing never allocates: skip the walk (STUFF may cover the whole window).
            Some(value) if value.0 == 0 => 0,
            // A word is 0 exactly when the entry it encodes is.
            _ => self.table.pages_needed(store, rel, npages, |j| fill.map_or_else(|| word(words, j), |v| v.0) != 0),
        };
        if needed > store.available() {
            // Refused for now: nothing may stay held until the retry, which validates again.
            if let Some(p) = plan {
                self.release_plan(host, links, p, 0, npages);
            }
            return Outcome::NeedAlloc(NeedAlloc { pages: needed - store.available() });
        }

        if npages > 0 {
            if self.apply_host(host, links, words, first, npages, plan).is_err() {
                // The host's parent refused part of a batch (Linux's kvmppc_tce_iommu_map failing: it clears
                // the entry and answers H_TOO_HARD). Every linked table's range is empty now; so is the
                // guest's, which clearing never allocates for.
                let _ = self.table.write_run(store, rel, npages, |_| 0);
                return Outcome::err(HcallError::TooHard, 0);
            }
            let written = self
                .table
                .write_run(store, rel, npages, |j| fill.map_or_else(|| u64::from_be(word(words, j)), |v| v.0));
            if let Err(need) = written {
                // Cannot happen: the reserve was checked above and nothing else takes from it.
                return Outcome::NeedAlloc(need);
            }
        }
        Outcome::Done(Completion { result: Ok(0), applied: npages })
    }

    /// The plan of a batch of `npages` window entries in `plan`, cut to the batch; `None` when their host entries
    /// do not all fit in it.
    fn plan_layout<'p>(&self, npages: u64, plan: &'p mut [Planned]) -> Option<Plan<'p>> {
        let shift = self.geometry.page_shift().get();
        let mut bases = [0usize; MAX_LINKS];
        let mut total = 0usize;
        for (base, link) in bases.iter_mut().zip(self.links()) {
            *base = total;
            let n = npages
                .checked_shl(shift - link.page_shift.get())
                .filter(|n| n >> (shift - link.page_shift.get()) == npages)?;
            total = total.checked_add(usize::try_from(n).ok()?)?;
        }
        plan.get_mut(..total).map(|slots| Plan { slots, bases })
    }

    /// Gives back the holds of window entries `0..entries` of the plan, in every linked table from the
    /// `from`-th (in [`Window::links`] order) on.
    fn release_plan<H: Host + ?Sized>(&self, host: &H, links: &[Link], plan: &Plan<'_>, from: usize, entries: u64) {
        let shift = self.geometry.page_shift().get();
        for (n, link) in links.iter().enumerate().skip(from) {
            release(host, plan.run(n, shift - link.page_shift.get(), entries));
        }
    }

    /// Linux `kvmppc_tce_validate` for every entry of `words` (a request's entries as stored, the first at
    /// absolute page `first`), extended to every sub-page and to the host tables' readiness, so that applying
    /// cannot fail half-way. With a plan (laid out by [`Window::plan_layout`]) each sub-page's host entry goes
    /// into it, with its translation and the region hold [`Host::take_region`] took, or [`HostEntry::EMPTY`]
    /// for an entry that maps nothing; on an error every hold taken is given back. Without one, the apply step
    /// translates again.
    fn validate<H: Host + ?Sized>(
        &self,
        host: &H,
        links: &[Link],
        first: u64,
        words: &[u64],
        mut plan: Option<&mut Plan<'_>>,
    ) -> HResult<()> {
        if let (Some(p), [link]) = (&mut plan, links) {
            if link.page_shift == self.geometry.page_shift() {
                return self.validate_one_to_one(host, link, first, words, p.slots);
            }
        }
        for (i, word) in words.iter().enumerate() {
            let tce = Tce(u64::from_be(*word));
            if let Err(e) = self.validate_entry(host, links, first + i as u64, tce, plan.as_deref_mut().map(|p| (p, i)))
            {
                if let Some(p) = &plan {
                    // `validate_entry` gave back this entry's holds; now those of the entries before it.
                    self.release_plan(host, links, p, 0, i as u64);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// [`Window::validate`] with a plan, for the common case of one linked table of the window's page size:
    /// entry `i` is host entry `i`, the plan is that table's run. The same checks and host calls in the same
    /// order.
    fn validate_one_to_one<H: Host + ?Sized>(
        &self,
        host: &H,
        link: &Link,
        first: u64,
        words: &[u64],
        plan: &mut [Planned],
    ) -> HResult<()> {
        let shift = link.page_shift;
        for (i, (word, slot)) in words.iter().zip(plan.iter_mut()).enumerate() {
            let tce = Tce(u64::from_be(*word));
            if tce.is_clear() {
                *slot = HostEntry::EMPTY;
                continue;
            }
            let refused = match self.translate(host, tce) {
                Err(e) => e,
                Ok(ua) => match host.take_region(ua, shift) {
                    Err(_) => HcallError::TooHard,
                    Ok((hpa, region)) => {
                        *slot = HostEntry { tce: HostTce::new(hpa, tce.perm()), ua, region };
                        if host.table_ready(link.id, first + i as u64, 1) {
                            continue;
                        }
                        // This entry's hold first, then those of the entries before it.
                        release(host, core::slice::from_ref(slot));
                        HcallError::TooHard
                    }
                },
            };
            release(host, plan.get(..i).unwrap_or_default());
            return Err(refused);
        }
        Ok(())
    }

    /// Linux `kvmppc_tce_to_ua`'s part of `kvmppc_tce_validate`: the user address of a mapping entry.
    fn translate<H: Host + ?Sized>(&self, host: &H, tce: Tce) -> HResult<u64> {
        // iommu_tce_check_gpa failing gives H_TOO_HARD in 7.3 (not H_PARAMETER).
        if tce.gpa() & self.geometry.page_shift().offset_mask() != 0 {
            return Err(HcallError::TooHard);
        }
        // kvmppc_tce_to_ua failing in kvmppc_tce_validate gives H_TOO_HARD; the later H_PARAMETER in
        // kvmppc_h_put_tce is unreachable because validate ran first.
        host.gpa_to_ua(tce.gpa()).ok_or(HcallError::TooHard)
    }

    /// [`Window::validate`] for one entry (`tce`, at absolute page `page`): every linked table's sub-pages in
    /// turn, then the table's readiness. With a plan (`Some((plan, i))`: this is the batch's entry `i`), each
    /// sub-page's host entry goes into it; on an error every hold this entry took is given back.
    fn validate_entry<H: Host + ?Sized>(
        &self,
        host: &H,
        links: &[Link],
        page: u64,
        tce: Tce,
        mut plan: Option<(&mut Plan<'_>, usize)>,
    ) -> HResult<()> {
        let shift = self.geometry.page_shift().get();
        // Clear entries unmap; Linux lets any other bits through ("poison").
        if tce.is_clear() {
            if let Some((p, i)) = &mut plan {
                for (n, link) in links.iter().enumerate() {
                    p.entry(n, shift - link.page_shift.get(), *i).fill(HostEntry::EMPTY);
                }
            }
            return Ok(());
        }
        let ua = self.translate(host, tce)?;
        for (n, link) in links.iter().enumerate() {
            let hs = link.page_shift;
            let diff = shift - hs.get();
            for j in 0..1usize << diff {
                let ok = match (ua.checked_add((j as u64) << hs.get()), &mut plan) {
                    (None, _) => false,
                    (Some(ua_j), None) => ua_to_hpa(host, ua_j, hs).is_ok(),
                    (Some(ua_j), Some((p, i))) => match host.take_region(ua_j, hs) {
                        Ok((hpa, region)) => {
                            p.entry(n, diff, *i)[j] =
                                HostEntry { tce: HostTce::new(hpa, tce.perm()), ua: ua_j, region };
                            true
                        }
                        Err(_) => false,
                    },
                };
                if !ok {
                    if let Some((p, i)) = &mut plan {
                        release_entry(host, links, shift, p, *i, n, j);
                    }
                    return Err(HcallError::TooHard);
                }
            }
            if !host.table_ready(link.id, page << diff, 1 << diff) {
                if let Some((p, i)) = &mut plan {
                    release_entry(host, links, shift, p, *i, n, 1 << diff);
                }
                return Err(HcallError::TooHard);
            }
        }
        Ok(())
    }

    /// Writes the `npages` (validated) entries into every linked host table, one run and one invalidation per
    /// table: the plan's run when validation made one, else `words` (as [`Window::execute_planned`] has them;
    /// none for a STUFF, which only clears) translated again. If a host refuses a run, every linked table's
    /// range is cleared (and invalidated), the holds of the tables not yet run are given back, and the call
    /// fails as a whole.
    #[cfg_attr(MODULE, link_section = ".text.pvtce_hot")]
    fn apply_host<H: Host + ?Sized>(
        &self,
        host: &mut H,
        links: &[Link],
        words: &[u64],
        first: u64,
        npages: u64,
        plan: Option<&Plan<'_>>,
    ) -> Result<(), RunFailed> {
        let shift = self.geometry.page_shift();
        for (n, link) in links.iter().enumerate() {
            let hs = link.page_shift;
            let diff = shift.get() - hs.get();
            let result = match plan {
                Some(p) => host.table_run_planned(link.id, first << diff, p.run(n, diff, npages)),
                None => {
                    // The user address of the last window entry translated: its sub-pages follow one another.
                    let last = Cell::new((u64::MAX, None));
                    let translate = |h: &H, k: u64| {
                        let (i, j) = (k >> diff, k & ((1u64 << diff) - 1));
                        let tce = Tce(u64::from_be(word(words, i)));
                        if tce.is_clear() {
                            return HostEntry::EMPTY;
                        }
                        let ua = match last.get() {
                            (at, ua) if at == i => ua,
                            _ => {
                                let ua = h.gpa_to_ua(tce.gpa());
                                last.set((i, ua));
                                ua
                            }
                        };
                        ua.and_then(|ua| ua.checked_add(j << hs.get()))
                            .and_then(|ua_j| {
                                ua_to_hpa(h, ua_j, hs).ok().map(|hpa| HostEntry {
                                    tce: HostTce::new(hpa, tce.perm()),
                                    ua: ua_j,
                                    region: Region::NONE,
                                })
                            })
                            .unwrap_or(HostEntry::EMPTY)
                    };
                    host.table_run(link.id, first << diff, npages << diff, &translate)
                }
            };
            if result.is_err() {
                if let Some(p) = plan {
                    self.release_plan(host, links, p, n + 1, npages);
                }
                self.clear_host(host, first, npages);
                return Err(RunFailed);
            }
            host.table_kill(link.id, first << diff, npages << diff);
        }
        Ok(())
    }

    /// Empties window entries `first..first + npages` in every linked host table, with one invalidation each.
    fn clear_host<H: Host + ?Sized>(&self, host: &mut H, first: u64, npages: u64) {
        for link in self.links() {
            let diff = self.geometry.page_shift().get() - link.page_shift.get();
            // A clear refused too leaves nothing more to do: the host has emptied what it could.
            let _ = host.table_run(link.id, first << diff, npages << diff, &|_: &H, _| HostEntry::EMPTY);
            host.table_kill(link.id, first << diff, npages << diff);
        }
    }
}

/// Word `i` of a request's entries as stored (0, an entry that maps nothing, past the end).
fn word(words: &[u64], i: u64) -> u64 {
    usize::try_from(i).ok().and_then(|i| words.get(i)).map_or(0, |w| *w)
}

/// Gives back the holds batch entry `i`'s validation took into the plan (window page shift `shift`): every
/// sub-page of the linked tables before the `link`-th, and its first `subpages` in that one.
fn release_entry<H: Host + ?Sized>(
    host: &H,
    links: &[Link],
    shift: u32,
    plan: &mut Plan<'_>,
    i: usize,
    link: usize,
    subpages: usize,
) {
    for (n, l) in links.iter().enumerate().take(link + 1) {
        let slots = plan.entry(n, shift - l.page_shift.get(), i);
        let len = if n == link { subpages } else { slots.len() };
        release(host, slots.get(..len).unwrap_or_default());
    }
}

/// A batch's plan ([`Window::plan_layout`]): each linked table's run of host entries, one after the other in
/// [`Window::links`] order; entry `i`'s sub-page `j` of a table is at its run's start `+ (i << diff) + j`
/// (`diff`: the window's page shift less the table's).
struct Plan<'p> {
    slots: &'p mut [Planned],
    /// Where each linked table's run starts.
    bases: [usize; MAX_LINKS],
}

impl Plan<'_> {
    /// Window entry `i`'s host entries in linked table `n`.
    fn entry(&mut self, n: usize, diff: u32, i: usize) -> &mut [Planned] {
        let start = self.bases[n] + (i << diff);
        &mut self.slots[start..start + (1 << diff)]
    }

    /// Linked table `n`'s host entries for window entries `0..entries`: its run when `entries` is the batch's.
    fn run(&self, n: usize, diff: u32, entries: u64) -> &[Planned] {
        &self.slots[self.bases[n]..self.bases[n] + ((entries as usize) << diff)]
    }
}

/// Gives back every hold in `slots`.
fn release<H: Host + ?Sized>(host: &H, slots: &[Planned]) {
    for s in slots.iter().filter(|s| s.region != Region::NONE) {
        host.put_region(s.region);
    }
}
