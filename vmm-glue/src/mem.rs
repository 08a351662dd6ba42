//! Guest RAM: one shmem-backed shared mapping (VFIO memory registration of non-shmem anonymous memory fails
//! on the pseries L1 without SHMEM, and shmem is what QEMU uses for shareable RAM).

use crate::error::{Error, Result};
use crate::sys;

/// A contiguous block of guest RAM at guest physical 0.
///
/// # Invariants
/// `ptr` is a live shared mapping of `len` bytes owned by this value until drop.
pub struct GuestMem {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; every access is a volatile byte access through a
// raw pointer, from whichever thread.
unsafe impl Send for GuestMem {}
// SAFETY: every access is a volatile byte read or write through a raw pointer (no reference into the mapping
// is ever made), so the guest's vCPUs and the device writing the same memory concurrently is no data race
// in Rust's sense, only a torn value the caller validates (as it must any guest-written data).
unsafe impl Sync for GuestMem {}

impl GuestMem {
    pub fn new(len: usize) -> Result<Self> {
        let ptr = sys::mmap_shared(None, len, 0).map_err(|source| Error::Mmap { what: "guest RAM", len, source })?;
        // INVARIANT: `ptr` maps `len` bytes.
        Ok(GuestMem { ptr, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Host virtual address of guest physical 0.
    pub fn host_addr(&self) -> u64 {
        self.ptr as u64
    }

    fn range(&self, gpa: u64, len: usize) -> Result<usize> {
        let end = gpa.checked_add(len as u64);
        match end {
            Some(e) if e <= self.len as u64 => Ok(gpa as usize),
            _ => Err(Error::GuestRange { gpa, len: len as u64, size: self.len as u64 }),
        }
    }

    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<()> {
        let off = self.range(gpa, data.len())?;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: `off + i < off + len`, inside the mapping (checked above); the guest and devices may
            // access it concurrently, so each byte is a volatile write and no reference into it is made.
            unsafe { self.ptr.add(off + i).write_volatile(*b) };
        }
        Ok(())
    }

    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let off = self.range(gpa, buf.len())?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: as in `write`: inside the mapping, a volatile read, no reference into guest memory.
            *b = unsafe { self.ptr.add(off + i).read_volatile() };
        }
        Ok(())
    }

    pub fn write_u64(&self, gpa: u64, v: u64) -> Result<()> {
        self.write(gpa, &v.to_le_bytes())
    }

    pub fn read_u64(&self, gpa: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: by the type invariant `ptr`/`len` is our mapping; no reference into it escapes this type.
        unsafe { sys::munmap(self.ptr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let m = GuestMem::new(1 << 16).unwrap();
        m.write_u64(8, 0x1122).unwrap();
        assert_eq!(m.read_u64(8).unwrap(), 0x1122);
        assert!(matches!(m.write_u64((1 << 16) - 4, 1), Err(Error::GuestRange { .. })));
        assert!(matches!(m.read_u64(u64::MAX - 2), Err(Error::GuestRange { .. })));
    }
}
