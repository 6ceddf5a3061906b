//! A read-only window onto the guest's pmem for the host-side oracle: reads by guest-physical address
//! while a VM runs. The VM attaches its regions once they are mapped and detaches them before they are
//! unmapped; a read after that (or outside every region) fails instead of touching freed memory.

use std::sync::Mutex;

use daxvmm_devices::bus::lock;

use super::PmemRegion;

#[derive(Debug, Clone, Copy)]
struct Window {
    gpa: u64,
    host: usize,
    len: u64,
}

/// Guest-physical reads of pmem, valid between [`PmemView::attach`] and [`PmemView::detach`].
#[derive(Debug, Default)]
pub struct PmemView {
    windows: Mutex<Vec<Window>>,
}

impl PmemView {
    /// Makes `regions` readable. The caller detaches before the regions are dropped.
    pub fn attach(&self, regions: &[PmemRegion]) {
        *lock(&self.windows) = regions
            .iter()
            .map(|r| Window { gpa: r.gpa, host: r.mapping.host_addr() as usize, len: r.mapping.size() })
            .collect();
    }

    /// Forgets the regions; later reads fail.
    pub fn detach(&self) {
        lock(&self.windows).clear();
    }

    /// Copies `buf.len()` bytes at guest-physical `gpa` into `buf`; false unless the whole range lies in
    /// one attached region.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let windows = lock(&self.windows);
        let Some(w) = windows.iter().find(|w| {
            gpa >= w.gpa && gpa.checked_add(buf.len() as u64).is_some_and(|end| end <= w.gpa + w.len)
        }) else {
            return false;
        };
        let base = w.host + (gpa - w.gpa) as usize;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: [base, base + buf.len()) lies inside a live mapping: the range check above, and the
            // lock held across the copy keeps `detach` (which runs before the mapping is dropped) from
            // completing meanwhile. The guest may write concurrently, hence volatile byte reads.
            *b = unsafe { std::ptr::read_volatile((base + i) as *const u8) };
        }
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pmem::backing::map;
    use crate::pmem::spec::PmemSpec;

    #[test]
    fn reads_inside_attached_regions_only() {
        let spec = PmemSpec::parse("2M,backing=thp").unwrap();
        let mapping = map(0, &spec, std::path::Path::new("/nonexistent")).unwrap();
        // SAFETY: writes inside the 2 MiB test mapping just created.
        unsafe { std::ptr::write_bytes((mapping.host_addr() + 4096) as *mut u8, 0xa5, 4096) };
        let regions = vec![PmemRegion {
            gpa: 0x1_0000_0000,
            mapping,
            kind: crate::pmem::spec::PmemKind::Nfit,
            labels: None,
            poison: Vec::new(),
        }];
        let view = PmemView::default();
        let mut buf = [0u8; 4096];
        assert!(!view.read(0x1_0000_1000, &mut buf), "nothing attached yet");
        view.attach(&regions);
        assert!(view.read(0x1_0000_1000, &mut buf));
        assert!(buf.iter().all(|&b| b == 0xa5));
        assert!(view.read(0x1_0000_0000, &mut buf));
        assert!(buf.iter().all(|&b| b == 0));
        assert!(!view.read(0x1_0000_0000 + (2 << 20) - 100, &mut buf), "runs past the end");
        assert!(!view.read(0xffff_f000, &mut buf), "below the region");
        assert!(!view.read(u64::MAX - 10, &mut buf), "overflow");
        view.detach();
        assert!(!view.read(0x1_0000_1000, &mut buf));
    }
}
