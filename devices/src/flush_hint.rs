//! The NVDIMM flush hint window: one page per DIMM slot at [`address`], named in the NFIT's flush hint
//! structures. Linux's `nvdimm_flush()` (on fsync of a DAX file, on REQ_PREFLUSH and REQ_FUA) writes to
//! the hint of every DIMM of the region; a write anywhere in a slot's page asks the host to make that
//! DIMM's writes durable, through the slot's [`Flush`]. Reads return zeros. A failed flush is counted
//! and logged once per slot, so a guest cannot flood the log.

use crate::bus::BusDevice;
use crate::layout::{FLUSH_HINT_BASE, FLUSH_HINT_STRIDE};

/// Makes one DIMM's writes durable (msync of its backing file, for the VMM).
pub type Flush = Box<dyn Fn() -> std::io::Result<()> + Send>;

/// Guest-physical address of the flush hint of the DIMM in `slot`.
pub fn address(slot: u16) -> u64 {
    FLUSH_HINT_BASE + u64::from(slot) * FLUSH_HINT_STRIDE
}

/// Flushes done and failed for one slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushCount {
    /// Flushes that succeeded.
    pub done: u64,
    /// Flushes that failed.
    pub failed: u64,
}

/// The window's device: a [`Flush`] per slot that has one.
pub struct FlushHints {
    slots: Vec<(u16, Flush, FlushCount)>,
}

impl std::fmt::Debug for FlushHints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushHints").field("slots", &self.counts()).finish()
    }
}

impl FlushHints {
    /// A window serving `slots` (slot, flush).
    pub fn new(slots: Vec<(u16, Flush)>) -> Self {
        FlushHints { slots: slots.into_iter().map(|(s, f)| (s, f, FlushCount::default())).collect() }
    }

    /// How many flushes each slot had.
    pub fn counts(&self) -> Vec<(u16, FlushCount)> {
        self.slots.iter().map(|(s, _, c)| (*s, *c)).collect()
    }
}

impl BusDevice for FlushHints {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, _data: &[u8]) {
        let Ok(slot) = u16::try_from(offset / FLUSH_HINT_STRIDE) else { return };
        let Some((_, flush, count)) = self.slots.iter_mut().find(|(s, ..)| *s == slot) else {
            return;
        };
        match flush() {
            Ok(()) => count.done += 1,
            Err(e) => {
                if count.failed == 0 {
                    log::error!(
                        "pmem{slot}: the guest's flush failed: {e} (later failures are only counted)"
                    );
                }
                count.failed += 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    fn counting(n: &Arc<AtomicU64>, ok: bool) -> Flush {
        let n = n.clone();
        Box::new(move || {
            n.fetch_add(1, Ordering::SeqCst);
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::from_raw_os_error(libc::EIO))
            }
        })
    }

    #[test]
    fn a_write_in_a_slots_page_flushes_that_slot_only() {
        let (a, b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut d = FlushHints::new(vec![(0, counting(&a, true)), (3, counting(&b, false))]);
        d.write(0, &1u64.to_le_bytes());
        d.write(8, &[1]);
        d.write(3 * FLUSH_HINT_STRIDE + 16, &1u64.to_le_bytes());
        // A slot without a flush, and offsets past any slot, do nothing.
        d.write(FLUSH_HINT_STRIDE, &[1]);
        d.write(u64::MAX, &[1]);
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (2, 1));
        let counts = d.counts();
        assert_eq!(counts[0], (0, FlushCount { done: 2, failed: 0 }));
        assert_eq!(counts[1], (3, FlushCount { done: 0, failed: 1 }));
        let mut buf = [0xffu8; 8];
        d.read(0, &mut buf);
        assert_eq!(buf, [0; 8]);
    }

    #[test]
    fn hint_addresses_are_a_page_apart() {
        assert_eq!(address(0), FLUSH_HINT_BASE);
        assert_eq!(address(2) - address(1), 4096);
    }
}
