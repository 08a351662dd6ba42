//! QEMU's `edu` educational PCI device (1234:11e8), driven through VFIO: its DMA engine copies between a bus
//! address and its 4 KiB internal buffer, which is how the tests prove what a TCE maps.
//!
//! Registers (BAR0): 0x00 id, 0x04 liveness (reads back inverted), 0x80 DMA source, 0x88 DMA destination,
//! 0x90 count, 0x98 command (bit 0 start/busy, bit 1 direction: 0 bus -> buffer, 1 buffer -> bus).
//! The buffer sits at device address 0x40000. QEMU aborts on a DMA outside the buffer, so every request is
//! checked here first.
//!
//! edu's MMIO is `DEVICE_NATIVE_ENDIAN` in QEMU: big-endian on `qemu-system-ppc64`, little-endian on x86.
//! The byte order is read off the id register (0x010000ed) once and used for every access.

use crate::{Error, Result};
use pvtce_vmm_glue::vfio::{Device, Region};
use std::time::{Duration, Instant};

pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x11e8;
pub const BUF: u64 = 0x40000;
pub const BUF_SIZE: u64 = 4096;

pub struct Edu<'a> {
    dev: &'a Device,
    bar: Region,
    big_endian: bool,
}

impl<'a> Edu<'a> {
    pub fn new(dev: &'a Device) -> Result<Self> {
        let bar = dev.region(pvtce_vmm_glue::sys::VFIO_PCI_BAR0_REGION_INDEX)?;
        dev.enable_bus_master()?;
        let mut e = Edu { dev, bar, big_endian: false };
        let id = e.read32(0)?;
        e.big_endian = match id {
            0x0100_00ed => false,
            0xed00_0001 => true,
            _ => return Err(Error::Edu(format!("unexpected id register {id:#x}"))),
        };
        Ok(e)
    }

    pub fn read32(&self, off: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.dev.read(&self.bar, off, &mut b)?;
        Ok(if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    fn write32(&self, off: u64, v: u32) -> Result<()> {
        let b = if self.big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        Ok(self.dev.write(&self.bar, off, &b)?)
    }

    fn write64(&self, off: u64, v: u64) -> Result<()> {
        let b = if self.big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
        Ok(self.dev.write(&self.bar, off, &b)?)
    }

    fn read64(&self, off: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.dev.read(&self.bar, off, &mut b)?;
        Ok(if self.big_endian { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) })
    }

    /// The liveness check: writing x to 0x04 reads back !x.
    pub fn alive(&self) -> Result<bool> {
        self.write32(4, 0x1234_5678)?;
        Ok(self.read32(4)? == !0x1234_5678u32)
    }

    fn dma(&self, src: u64, dst: u64, len: u64, to_bus: bool) -> Result<()> {
        let (buf_addr, _) = if to_bus { (src, dst) } else { (dst, src) };
        let end = buf_addr.checked_add(len).ok_or_else(|| Error::Edu("length overflows".into()))?;
        if len == 0 || buf_addr < BUF || end > BUF + BUF_SIZE {
            return Err(Error::Edu(format!("buffer range {buf_addr:#x}+{len:#x} outside the device buffer")));
        }
        self.write64(0x80, src)?;
        self.write64(0x88, dst)?;
        self.write64(0x90, len)?;
        self.write64(0x98, if to_bus { 3 } else { 1 })?;
        // QEMU runs the transfer from a 100 ms virtual-clock timer.
        let t = Instant::now();
        while self.read64(0x98)? & 1 != 0 {
            if t.elapsed() > Duration::from_secs(20) {
                return Err(Error::Edu("DMA did not complete in 20 s".into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// DMA `len` bytes from bus address `bus` into the device buffer at `buf_off`.
    pub fn bus_to_buf(&self, bus: u64, buf_off: u64, len: u64) -> Result<()> {
        self.dma(bus, BUF + buf_off, len, false)
    }

    /// DMA `len` bytes from the device buffer at `buf_off` to bus address `bus`.
    pub fn buf_to_bus(&self, buf_off: u64, bus: u64, len: u64) -> Result<()> {
        self.dma(BUF + buf_off, bus, len, true)
    }
}
