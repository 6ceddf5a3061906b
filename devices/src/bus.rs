//! The bus every device model sits behind: a device sees only offsets into its own window, and a [`Bus`]
//! routes guest port or MMIO accesses to the device whose window holds the address.

use std::sync::{Arc, Mutex};

use thiserror::Error;

/// A device model as the bus sees it. Offsets are relative to the device's base address.
pub trait BusDevice: Send {
    /// Fills `data` with what the guest reads at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Takes what the guest writes at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors while wiring devices onto a bus.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    /// Two devices asked for overlapping windows.
    #[error("device window {base:#x}+{len:#x} overlaps one at {other_base:#x}+{other_len:#x}")]
    Overlap {
        /// Base of the window being inserted.
        base: u64,
        /// Length of the window being inserted.
        len: u64,
        /// Base of the window already there.
        other_base: u64,
        /// Length of the window already there.
        other_len: u64,
    },
    /// A window of length zero, or one that wraps around the address space.
    #[error("invalid device window {base:#x}+{len:#x}")]
    InvalidWindow {
        /// Base of the window.
        base: u64,
        /// Length of the window.
        len: u64,
    },
}

/// A shared device: vCPU threads reach the same model through the bus.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

struct Window {
    base: u64,
    len: u64,
    device: SharedDevice,
}

/// Address-range router for one address space (port I/O or MMIO).
#[derive(Default)]
pub struct Bus {
    // Sorted by base; few devices, so a binary search over a Vec beats a tree.
    windows: Vec<Window>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges: Vec<_> = self.windows.iter().map(|w| (w.base, w.len)).collect();
        f.debug_struct("Bus").field("windows", &ranges).finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `device` at `base..base+len`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len).is_none() {
            return Err(BusError::InvalidWindow { base, len });
        }
        if let Some(w) = self.windows.iter().find(|w| base < w.base + w.len && w.base < base + len) {
            return Err(BusError::Overlap { base, len, other_base: w.base, other_len: w.len });
        }
        let at = self.windows.partition_point(|w| w.base < base);
        self.windows.insert(at, Window { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(&Window, u64)> {
        let idx = self.windows.partition_point(|w| w.base <= addr).checked_sub(1)?;
        let w = &self.windows[idx];
        let offset = addr - w.base;
        // An access that straddles the window's end is not the device's.
        (offset.checked_add(size as u64)? <= w.len).then_some((w, offset))
    }

    /// Routes a read; returns false (and leaves `data` alone) when no device claims the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((w, offset)) => {
                lock(&w.device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Routes a write; returns false when no device claims the address.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((w, offset)) => {
                lock(&w.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering from a poisoned lock: a device whose previous user panicked is still the
/// best state we have, and the VMM must keep serving the other vCPUs.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        reads: Vec<(u64, usize)>,
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            self.reads.push((offset, data.len()));
            data.fill(0xab);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_offset_within_window() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b[0], 0xab);
        assert!(bus.write(0x3f8, &[0x41]));
        let d = dev.lock().unwrap();
        assert_eq!(d.reads, vec![(5, 1)]);
        assert_eq!(d.writes, vec![(0, vec![0x41])]);
    }

    #[test]
    fn misses_outside_and_straddling() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(dev.clone(), 0x600, 3).unwrap();
        let mut b = [0u8; 4];
        assert!(!bus.read(0x5ff, &mut b[..1]));
        assert!(!bus.read(0x603, &mut b[..1]));
        // 4 bytes at 0x600 run past the 3-byte window.
        assert!(!bus.read(0x600, &mut b));
        assert!(!bus.write(u64::MAX, &[1, 2]));
        assert_eq!(b, [0; 4]);
        assert!(dev.lock().unwrap().reads.is_empty());
    }

    #[test]
    fn rejects_overlap_and_empty_windows() {
        let mut bus = Bus::new();
        let a = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(a.clone(), 0x100, 0x10).unwrap();
        assert!(matches!(bus.insert(a.clone(), 0x10f, 1), Err(BusError::Overlap { .. })));
        assert!(matches!(bus.insert(a.clone(), 0xf8, 0x9), Err(BusError::Overlap { .. })));
        assert!(matches!(bus.insert(a.clone(), 0x200, 0), Err(BusError::InvalidWindow { .. })));
        assert!(matches!(bus.insert(a.clone(), u64::MAX, 2), Err(BusError::InvalidWindow { .. })));
        // Adjacent windows are fine, and lookups pick the right one.
        let b = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(b.clone(), 0x110, 4).unwrap();
        bus.insert(a.clone(), 0xf0, 0x10).unwrap();
        assert!(bus.write(0x110, &[9]));
        assert_eq!(b.lock().unwrap().writes, vec![(0, vec![9])]);
    }
}
