// Plain data both sides read: guest memory layout, preregistered regions, host table shapes.
// Shared by the in-memory trait implementations (sim.rs) and the reference model (model.rs).

/// One memslot: guest physical [gpa, gpa + size) at user address ua.
#[derive(Clone, Debug)]
pub struct Memslot {
    pub gpa: u64,
    pub size: u64,
    pub ua: u64,
}

/// One preregistered region: [ua, ua + size), pinned in pages of 2^page_shift bytes whose host
/// physical addresses are `hpas` (deliberately not contiguous).
#[derive(Clone, Debug)]
pub struct Region {
    pub ua: u64,
    pub size: u64,
    pub page_shift: u32,
    pub hpas: Vec<u64>,
}

/// A host IOMMU table's shape; `unready` lists blocks (index >> UNREADY_BLOCK_SHIFT) whose levels are
/// not allocated, so mapping there is H_TOO_HARD.
#[derive(Clone, Debug)]
pub struct TableShape {
    pub id: u32,
    pub page_shift: u32,
    pub offset: u64,
    pub size: u64,
}

pub const UNREADY_BLOCK_SHIFT: u32 = 12;
pub const RAM_UA: u64 = 0x7fff_0000_0000;
pub const RAM2_UA: u64 = 0x7ffe_0000_0000;
pub const RAM_SIZE: u64 = 256 << 20;
pub const RAM2_GPA: u64 = 1 << 30;
pub const RAM2_SIZE: u64 = 64 << 20;

pub fn memslots() -> Vec<Memslot> {
    vec![Memslot { gpa: 0, size: RAM_SIZE, ua: RAM_UA }, Memslot { gpa: RAM2_GPA, size: RAM2_SIZE, ua: RAM2_UA }]
}

/// First half of RAM preregistered in 64K pages (scrambled), RAM2 in 16M huge pages, the second half of
/// RAM not preregistered.
pub fn regions() -> Vec<Region> {
    let n64k = (RAM_SIZE / 2) >> 16;
    let hpas = (0..n64k).map(|i| 0x40_0000_0000 + ((n64k - 1 - i) << 16)).collect();
    let n16m = RAM2_SIZE >> 24;
    let hpas2 = (0..n16m).map(|i| 0x80_0000_0000 + (((i * 3) % n16m) << 24)).collect();
    vec![
        Region { ua: RAM_UA, size: RAM_SIZE / 2, page_shift: 16, hpas },
        Region { ua: RAM2_UA, size: RAM2_SIZE, page_shift: 24, hpas: hpas2 },
    ]
}

pub const DMA64: u64 = 1 << 59;

pub fn tables() -> Vec<TableShape> {
    vec![
        TableShape { id: 0, page_shift: 12, offset: 0, size: (1 << 30) >> 12 },
        TableShape { id: 1, page_shift: 16, offset: 0, size: (1 << 30) >> 16 },
        TableShape { id: 2, page_shift: 12, offset: DMA64 >> 12, size: (1u64 << 40) >> 12 },
        TableShape { id: 3, page_shift: 16, offset: DMA64 >> 16, size: (1u64 << 40) >> 16 },
        TableShape { id: 4, page_shift: 24, offset: DMA64 >> 24, size: (1u64 << 40) >> 24 },
        TableShape { id: 5, page_shift: 16, offset: DMA64 >> 16, size: (1u64 << 40) >> 16 },
        TableShape { id: 6, page_shift: 12, offset: 0, size: (1 << 31) >> 12 },
    ]
}
