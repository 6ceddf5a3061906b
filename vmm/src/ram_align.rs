//! Places each guest RAM mapping at a 2 MiB-aligned host address and asks for transparent huge pages
//! on it. KVM maps guest memory with 2 MiB pages in its second-level page tables only where the host
//! address and the guest-physical address agree modulo 2 MiB and a huge page backs the host address;
//! an anonymous mmap is only 4 KiB aligned, so without this a guest never gets them.
//!
//! The mapping itself stays vm-memory's own (it unmaps it when the last region reference goes): this
//! module only reserves a larger range, opens a hole of exactly the RAM's size at an aligned address
//! inside it for vm-memory's mmap to land in, and releases the rest of the reservation afterwards.

use std::ptr::null_mut;

use vm_memory::mmap::MmapRegionError;
use vm_memory::MmapRegion;

/// The huge page size the mappings are aligned to.
pub const HUGE_PAGE: usize = 2 << 20;

/// A PROT_NONE reservation of `len` bytes at `start`, with the hole `[hole, hole + size)` unmapped
/// again; dropping it unmaps what is left of the reservation on both sides of the hole.
struct Reservation {
    start: usize,
    len: usize,
    hole: usize,
    size: usize,
}

impl Reservation {
    /// Reserves `size + HUGE_PAGE` bytes and opens a `size`-byte hole at the first aligned address in it.
    fn with_aligned_hole(size: usize) -> Option<Reservation> {
        let len = size.checked_add(HUGE_PAGE)?;
        // SAFETY: a new anonymous PROT_NONE mapping at an address the kernel picks (no MAP_FIXED): it
        // cannot overlap anything of ours, and nothing reads or writes it.
        let p = unsafe {
            libc::mmap(
                null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let start = p as usize;
        let hole = start.next_multiple_of(HUGE_PAGE);
        // SAFETY: [hole, hole + size) lies inside the reservation just made (hole - start < HUGE_PAGE),
        // which nothing else uses.
        unsafe { libc::munmap(hole as *mut libc::c_void, size) };
        Some(Reservation { start, len, hole, size })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let end = self.start + self.len;
        let tail = self.hole + self.size;
        // SAFETY: both ranges are the reservation's own PROT_NONE pages around the hole, which only
        // this struct knows of; the hole (and whatever was mapped into it) is left alone.
        unsafe {
            if self.hole > self.start {
                libc::munmap(self.start as *mut libc::c_void, self.hole - self.start);
            }
            if end > tail {
                libc::munmap(tail as *mut libc::c_void, end - tail);
            }
        }
    }
}

/// How often [`map`] tries for an aligned address before it takes whatever the kernel gave.
const ATTEMPTS: usize = 3;

/// An anonymous private mapping of `size` bytes for guest RAM (vm-memory's), at a 2 MiB-aligned host
/// address, advised for transparent huge pages. The kernel puts it in the hole made for it unless
/// another thread maps something there first; then it tries again, and after [`ATTEMPTS`] keeps the
/// mapping where it is, saying so at debug level (the guest then runs on 4 KiB pages).
pub fn map(size: usize) -> Result<MmapRegion, MmapRegionError> {
    let mut attempt = 1;
    let region = loop {
        let reservation = Reservation::with_aligned_hole(size);
        // Top-down placement takes the highest free gap that fits: the hole, sized exactly, just below
        // the rest of the reservation.
        let region = MmapRegion::new(size)?;
        drop(reservation);
        let addr = region.as_ptr() as usize;
        if addr.is_multiple_of(HUGE_PAGE) {
            break region;
        }
        if attempt == ATTEMPTS {
            log::debug!("guest RAM of {size} bytes is at {addr:#x}, not 2 MiB aligned: no huge pages for it");
            return Ok(region);
        }
        attempt += 1;
    };
    // SAFETY: advice on the region's own mapping, which it keeps mapped while it lives; MADV_HUGEPAGE
    // changes how the kernel backs it, not its contents.
    if unsafe { libc::madvise(region.as_ptr().cast(), size, libc::MADV_HUGEPAGE) } != 0 {
        log::debug!("madvise(MADV_HUGEPAGE) on guest RAM: {}", std::io::Error::last_os_error());
    }
    Ok(region)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ram_lands_aligned_and_usable() {
        for size in [HUGE_PAGE, 64 << 20, (64 << 20) + 4096] {
            let r = map(size).unwrap();
            let addr = r.as_ptr() as usize;
            assert!(addr.is_multiple_of(HUGE_PAGE), "{size} bytes at {addr:#x}");
            assert_eq!(r.size(), size);
            // SAFETY: writes inside the region's own mapping, `size` bytes long.
            unsafe { std::ptr::write_bytes(r.as_ptr(), 0xa5, size) };
            // SAFETY: reads the last byte of the same mapping.
            assert_eq!(unsafe { r.as_ptr().add(size - 1).read() }, 0xa5);
        }
    }
}
