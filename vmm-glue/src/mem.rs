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

// SAFETY: the mapping is plain memory; concurrent access goes through volatile reads/writes of `Copy` data.
unsafe impl Send for GuestMem {}
// SAFETY: every access copies bytes through raw pointers (no reference into the mapping is ever made), the
// same way the guest's vCPUs access it concurrently; threads that share one (the vCPU threads of one VM) work
// on disjoint ranges.
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
        // SAFETY: `off..off+len` lies inside the mapping (checked above); the guest may run concurrently, so we
        // copy bytes without creating references into guest memory.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) };
        Ok(())
    }

    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let off = self.range(gpa, buf.len())?;
        // SAFETY: as in `write`.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), buf.as_mut_ptr(), buf.len()) };
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
