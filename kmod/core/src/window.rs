//! One guest DMA window (one LIOBN): its geometry, its guest-visible table and the host tables linked to
//! it, with the four TCE hypercalls as methods.
//!
//! Every call validates the whole request before changing anything. The order of the checks and the codes
//! follow Linux 7.3 `arch/powerpc/kvm/book3s_64_vio.c`; where pvtce differs it says so.

use super::error::{HResult, HcallError};
use super::host::{check_link, ua_to_hpa, Host, HostTableId, HostTce, Link, LinkError, RunFailed, MAX_LINKS};
use super::table::{GuestTable, NeedAlloc, PageStore};
use super::types::{Ioba, Liobn, Tce, WindowGeometry};
use core::cell::Cell;

/// Most TCEs in one H_PUT_TCE_INDIRECT list (PAPR: the list fits one 4 KiB page).
pub const MAX_INDIRECT_TCES: u64 = 512;
/// Required alignment of the H_PUT_TCE_INDIRECT list address.
pub const TCE_LIST_ALIGN: u64 = 4096;

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
    pub fn execute<S: PageStore, H: Host + ?Sized>(
        &mut self,
        store: &mut S,
        host: &mut H,
        request: &Request<'_>,
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

        // Validate every entry before touching anything (STUFF's value was checked above).
        if !matches!(request, Request::Stuff { .. }) {
            for i in 0..npages {
                if let Err(e) = self.validate_entry(host, first + i, request.entry(i)) {
                    return Outcome::err(e, 0);
                }
            }
        }

        let rel = first - self.geometry.offset();
        let needed = match request {
            // Clearing never allocates: skip the walk (STUFF may cover the whole window).
            Request::Stuff { value, .. } if value.0 == 0 => 0,
            _ => self.table.pages_needed(store, rel, npages, |j| request.entry(j).0 != 0),
        };
        if needed > store.available() {
            return Outcome::NeedAlloc(NeedAlloc { pages: needed - store.available() });
        }

        if npages > 0 {
            if self.apply_host(host, request, first, npages).is_err() {
                // The host's parent refused part of a batch (Linux's kvmppc_tce_iommu_map failing: it clears
                // the entry and answers H_TOO_HARD). Every linked table's range is empty now; so is the
                // guest's, which clearing never allocates for.
                let _ = self.table.write_run(store, rel, npages, |_| 0);
                return Outcome::err(HcallError::TooHard, 0);
            }
            let written = self.table.write_run(store, rel, npages, |j| request.entry(j).0);
            if let Err(need) = written {
                // Cannot happen: the reserve was checked above and nothing else takes from it.
                return Outcome::NeedAlloc(need);
            }
        }
        Outcome::Done(Completion { result: Ok(0), applied: npages })
    }

    /// Linux `kvmppc_tce_validate` for one entry at absolute page `page`, extended to every sub-page
    /// and to the host table's readiness, so that applying cannot fail half-way.
    fn validate_entry<H: Host + ?Sized>(&self, host: &H, page: u64, tce: Tce) -> HResult<()> {
        // Clear entries unmap; Linux lets any other bits through ("poison").
        if tce.is_clear() {
            return Ok(());
        }
        let shift = self.geometry.page_shift();
        // iommu_tce_check_gpa failing gives H_TOO_HARD in 7.3 (not H_PARAMETER).
        if tce.gpa() & shift.offset_mask() != 0 {
            return Err(HcallError::TooHard);
        }
        // kvmppc_tce_to_ua failing in kvmppc_tce_validate gives H_TOO_HARD; the later H_PARAMETER in
        // kvmppc_h_put_tce is unreachable because validate ran first.
        let ua = host.gpa_to_ua(tce.gpa()).ok_or(HcallError::TooHard)?;
        for link in self.links() {
            let diff = shift.get() - link.page_shift.get();
            let subpages = 1u64 << diff;
            for j in 0..subpages {
                let ua_j = ua.checked_add(j << link.page_shift.get()).ok_or(HcallError::TooHard)?;
                ua_to_hpa(host, ua_j, link.page_shift).map_err(|_| HcallError::TooHard)?;
            }
            if !host.table_ready(link.id, page << diff, subpages) {
                return Err(HcallError::TooHard);
            }
        }
        Ok(())
    }

    /// Writes the `npages` (validated) entries into every linked host table, one run and one invalidation per
    /// table. If a host refuses a run, every linked table's range is cleared (and invalidated) and the call
    /// fails as a whole.
    fn apply_host<H: Host + ?Sized>(
        &self,
        host: &mut H,
        request: &Request<'_>,
        first: u64,
        npages: u64,
    ) -> Result<(), RunFailed> {
        let shift = self.geometry.page_shift();
        for link in self.links() {
            let hs = link.page_shift;
            let diff = shift.get() - hs.get();
            // The user address of the last window entry translated: its sub-pages follow one another.
            let last = Cell::new((u64::MAX, None));
            let entry = |h: &H, k: u64| {
                let (i, j) = (k >> diff, k & ((1u64 << diff) - 1));
                let tce = request.entry(i);
                if tce.is_clear() {
                    return (HostTce::EMPTY, 0);
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
                    .and_then(|ua_j| ua_to_hpa(h, ua_j, hs).ok().map(|hpa| (HostTce::new(hpa, tce.perm()), ua_j)))
                    .unwrap_or((HostTce::EMPTY, 0))
            };
            if host.table_run(link.id, first << diff, npages << diff, &entry).is_err() {
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
            let _ = host.table_run(link.id, first << diff, npages << diff, &|_: &H, _| (HostTce::EMPTY, 0));
            host.table_kill(link.id, first << diff, npages << diff);
        }
    }
}
