//! Poisoned NVDIMM pages as holes in KVM's memory slots. While a 4 KiB page of an NFIT region holds
//! poison, no slot maps it, so every guest access to the page leaves the guest as an MMIO exit, which
//! [`PoisonHoles`] answers: a load that touches poisoned bytes is a machine check for the vCPU
//! ([`crate::mce`]); any other access reads or writes the backing as the mapping would have. A store
//! into poison keeps the poison, as on hardware, where only the clear-error call clears it.
//!
//! The NVDIMM root device ([`daxvmm_devices::nvdimm_ars`]) owns the poison list and reports every
//! change; [`PoisonHoles::update`] then re-registers the slots of each region whose holes changed:
//! it deletes the region's slots and adds one per unpoisoned stretch. Accesses in between leave the
//! guest too and are answered from the backing, so they see the same memory.

use std::sync::Mutex;

use daxvmm_devices::bus::lock;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use thiserror::Error;

/// The page a hole covers.
const PAGE: u64 = 4096;

/// Errors re-registering a region's slots.
#[derive(Debug, Error)]
pub enum HoleError {
    /// KVM has no slot number left.
    #[error("no KVM memory slot left for the unpoisoned parts of pmem{0} (KVM offers {1})")]
    NoSlot(usize, u32),
    /// KVM refused a slot.
    #[error("KVM refused memory slot {slot} of pmem{index} while punching poison holes: {source}")]
    Kvm {
        /// The region.
        index: usize,
        /// The slot.
        slot: u32,
        /// What KVM said.
        source: kvm_ioctls::Error,
    },
}

/// Where slot changes go: KVM's VM, or a recorder in tests.
pub trait SlotTable: Send + Sync {
    /// Maps `size` bytes at guest-physical `gpa` to host address `host` as `slot`; deletes the slot
    /// when `size` is 0.
    ///
    /// # Safety
    /// `[host, host + size)` must stay mapped while the guest can reach the slot.
    unsafe fn set(&self, slot: u32, gpa: u64, size: u64, host: u64) -> Result<(), kvm_ioctls::Error>;
}

impl SlotTable for VmFd {
    unsafe fn set(&self, slot: u32, gpa: u64, size: u64, host: u64) -> Result<(), kvm_ioctls::Error> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host,
        };
        // SAFETY: the caller guarantees the host range stays mapped while the guest can reach it.
        unsafe { self.set_user_memory_region(region) }
    }
}

/// One NFIT region: guest-physical base and size, host address of its mapping, the slot it was
/// registered with (which it keeps as its first piece's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoleRegion {
    /// Index of the region among the `--pmem` options (for messages).
    pub index: usize,
    /// Guest-physical base.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// Host address of the mapping.
    pub host: u64,
    /// The slot [`crate::pmem::register`] gave it.
    pub slot: u32,
}

/// A registered piece: slot, guest-physical start, size.
type Piece = (u32, u64, u64);

#[derive(Debug)]
struct State {
    /// The poisoned ranges (start, length), as the root device last reported them.
    poison: Vec<(u64, u64)>,
    /// Each region's registered pieces.
    pieces: Vec<Vec<Piece>>,
    /// Slot numbers given back by deleted pieces.
    free: Vec<u32>,
    /// The next never-used slot number.
    next: u32,
}

/// The outcome of a guest access to a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Answered from the backing.
    Done,
    /// A load touched poison: the vCPU takes a machine check.
    Poisoned,
}

/// The holes of every NFIT region and the accesses that fall into them.
pub struct PoisonHoles {
    table: Box<dyn SlotTable>,
    regions: Vec<HoleRegion>,
    /// One past the highest slot number KVM accepts.
    slot_limit: u32,
    state: Mutex<State>,
}

impl std::fmt::Debug for PoisonHoles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoisonHoles").field("regions", &self.regions).field("state", &self.state).finish()
    }
}

impl PoisonHoles {
    /// Holes for `regions`, each registered whole with its own slot; new slots are numbered from
    /// `first_spare` up to `slot_limit`.
    ///
    /// # Safety
    /// Each region's host range must stay mapped while this object or the guest can reach it.
    pub unsafe fn new(
        table: Box<dyn SlotTable>,
        regions: Vec<HoleRegion>,
        first_spare: u32,
        slot_limit: u32,
    ) -> Self {
        let pieces = regions.iter().map(|r| vec![(r.slot, r.gpa, r.size)]).collect();
        let state = State { poison: Vec::new(), pieces, free: Vec::new(), next: first_spare };
        PoisonHoles { table, regions, slot_limit, state: Mutex::new(state) }
    }

    /// Takes the new poison list and re-registers the regions whose holes it changes. A region that
    /// fails keeps working (its unmapped parts are answered here) and the error is returned.
    pub fn update(&self, poison: &[(u64, u64)]) -> Result<(), HoleError> {
        let mut st = lock(&self.state);
        st.poison = poison.to_vec();
        let mut result = Ok(());
        for (i, r) in self.regions.iter().enumerate() {
            let want = stretches(r.gpa, r.size, poison);
            let have: Vec<(u64, u64)> = st.pieces[i].iter().map(|&(_, g, s)| (g, s)).collect();
            if want != have {
                if let Err(e) = self.reslot(&mut st, i, r, &want) {
                    result = result.and(Err(e));
                }
            }
        }
        result
    }

    /// Replaces region `i`'s pieces by `want`.
    fn reslot(&self, st: &mut State, i: usize, r: &HoleRegion, want: &[(u64, u64)]) -> Result<(), HoleError> {
        let kvm = |slot| move |source| HoleError::Kvm { index: r.index, slot, source };
        for (slot, ..) in std::mem::take(&mut st.pieces[i]) {
            // SAFETY: deleting a slot maps nothing.
            unsafe { self.table.set(slot, 0, 0, 0) }.map_err(kvm(slot))?;
            st.free.push(slot);
        }
        // The region's own slot comes back first, so a region without holes has it again.
        if let Some(at) = st.free.iter().position(|&s| s == r.slot) {
            let own = st.free.swap_remove(at);
            st.free.push(own);
        }
        for &(gpa, size) in want {
            let slot = match st.free.pop() {
                Some(s) => s,
                None if st.next < self.slot_limit => {
                    st.next += 1;
                    st.next - 1
                }
                None => return Err(HoleError::NoSlot(r.index, self.slot_limit)),
            };
            let host = r.host + (gpa - r.gpa);
            // SAFETY: [host, host + size) lies inside the region's mapping (stretches() keeps every
            // piece inside the region), which `new`'s caller keeps mapped.
            unsafe { self.table.set(slot, gpa, size, host) }.map_err(kvm(slot))?;
            st.pieces[i].push((slot, gpa, size));
        }
        log::debug!("pmem{}: {} slot(s) around {} poisoned range(s)", r.index, want.len(), st.poison.len());
        Ok(())
    }

    /// The host address of `[gpa, gpa + len)` if it lies inside one region.
    fn host(&self, gpa: u64, len: usize) -> Option<u64> {
        let end = gpa.checked_add(len as u64)?;
        let r = self.regions.iter().find(|r| gpa >= r.gpa && end <= r.gpa + r.size)?;
        Some(r.host + (gpa - r.gpa))
    }

    /// Answers a guest load of `data.len()` bytes at `gpa`; `None` when that is not inside a region.
    pub fn read(&self, gpa: u64, data: &mut [u8]) -> Option<Access> {
        let host = self.host(gpa, data.len())?;
        let st = lock(&self.state);
        if overlaps(&st.poison, gpa, data.len() as u64) {
            data.fill(0);
            return Some(Access::Poisoned);
        }
        for (i, b) in data.iter_mut().enumerate() {
            // SAFETY: the bytes lie inside a region's mapping (host() checked the whole range), which
            // `new`'s caller keeps mapped while the guest can reach this object; other vCPUs may write
            // the same memory concurrently, hence volatile byte accesses.
            *b = unsafe { std::ptr::read_volatile((host as usize + i) as *const u8) };
        }
        Some(Access::Done)
    }

    /// Stores a guest write of `data` at `gpa` in the backing (poison or not); false when that is not
    /// inside a region.
    pub fn write(&self, gpa: u64, data: &[u8]) -> bool {
        let Some(host) = self.host(gpa, data.len()) else { return false };
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as in read().
            unsafe { std::ptr::write_volatile((host as usize + i) as *mut u8, *b) };
        }
        true
    }
}

/// Whether any of `poison` (start, length) overlaps `[gpa, gpa + len)`.
fn overlaps(poison: &[(u64, u64)], gpa: u64, len: u64) -> bool {
    poison.iter().any(|&(start, plen)| start < gpa.saturating_add(len) && gpa < start.saturating_add(plen))
}

/// The stretches (start, size) of `[base, base + size)` that no poisoned page touches.
fn stretches(base: u64, size: u64, poison: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let end = base + size;
    let mut holes: Vec<(u64, u64)> = poison
        .iter()
        .filter(|&&(s, l)| l > 0 && s < end && base < s.saturating_add(l))
        .map(|&(s, l)| {
            let first = s.max(base) / PAGE * PAGE;
            let last = s.saturating_add(l).min(end).div_ceil(PAGE) * PAGE;
            (first, last.min(end))
        })
        .collect();
    holes.sort_unstable();
    let mut out = Vec::new();
    let mut at = base;
    for (hs, he) in holes {
        if hs > at {
            out.push((at, hs - at));
        }
        at = at.max(he);
    }
    if at < end {
        out.push((at, end - at));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Slot number to guest-physical address, size, host address.
    type Table = Arc<Mutex<std::collections::BTreeMap<u32, (u64, u64, u64)>>>;

    /// Records slot changes and keeps the current table.
    #[derive(Default)]
    struct Recorder(Table);

    impl SlotTable for Recorder {
        unsafe fn set(&self, slot: u32, gpa: u64, size: u64, host: u64) -> Result<(), kvm_ioctls::Error> {
            let mut t = lock(&self.0);
            if size == 0 {
                assert!(t.remove(&slot).is_some(), "slot {slot} deleted twice");
            } else {
                assert!(t.insert(slot, (gpa, size, host)).is_none(), "slot {slot} reused while in use");
            }
            Ok(())
        }
    }

    const BASE: u64 = 0x1_0000_0000;

    fn holes(mem: &mut [u8], limit: u32) -> (PoisonHoles, Table) {
        let rec = Recorder::default();
        let table = rec.0.clone();
        let host = mem.as_mut_ptr() as u64;
        lock(&table).insert(3, (BASE, mem.len() as u64, host));
        let region = HoleRegion { index: 0, gpa: BASE, size: mem.len() as u64, host, slot: 3 };
        // SAFETY: `mem` outlives the object in every test.
        (unsafe { PoisonHoles::new(Box::new(rec), vec![region], 10, limit) }, table)
    }

    #[test]
    fn stretches_skip_whole_poisoned_pages() {
        assert_eq!(stretches(0, 0x10000, &[]), vec![(0, 0x10000)]);
        // 512 bytes in page 5 and a range over pages 7-8: pages 5, 7, 8 go.
        let p = [(0x5200, 512), (0x7e00, 0x400)];
        assert_eq!(stretches(0, 0x10000, &p), vec![(0, 0x5000), (0x6000, 0x1000), (0x9000, 0x7000)]);
        assert_eq!(stretches(0, 0x2000, &[(0, 0x2000)]), vec![]);
        assert_eq!(stretches(0x1000, 0x2000, &[(0, 0x1800), (0x9000, 5)]), vec![(0x2000, 0x1000)], "clipped");
        assert_eq!(stretches(0, 0x4000, &[(0x1000, 0x1000), (0x1800, 0x2000)]), vec![(0, 0x1000)], "overlap");
        assert_eq!(stretches(0, 0x4000, &[(u64::MAX - 1, 10)]), vec![(0, 0x4000)], "no overflow");
    }

    #[test]
    fn poison_punches_slots_and_clearing_restores_the_one_slot() {
        let mut mem = vec![0u8; 0x10000];
        let (h, table) = holes(&mut mem, 100);
        let host = mem.as_ptr() as u64;
        h.update(&[(BASE + 0x5000, 0x1000)]).unwrap();
        let t: Vec<_> = lock(&table).values().copied().collect();
        assert_eq!(t, vec![(BASE, 0x5000, host), (BASE + 0x6000, 0xa000, host + 0x6000)]);
        h.update(&[(BASE + 0x5000, 0x1000), (BASE, 512)]).unwrap();
        assert_eq!(lock(&table).len(), 2, "pages 0 and 5 out: two stretches");
        h.update(&[]).unwrap();
        let t: Vec<_> = lock(&table).iter().map(|(s, v)| (*s, *v)).collect();
        assert_eq!(t, vec![(3, (BASE, 0x10000, host))], "the region's own slot again");
    }

    #[test]
    fn loads_of_poison_are_machine_checks_and_the_rest_reads_the_backing() {
        let mut mem = vec![0u8; 0x10000];
        mem[0x5000] = 0xaa;
        mem[0x5400] = 0xbb;
        let (h, _) = holes(&mut mem, 100);
        h.update(&[(BASE + 0x5200, 512)]).unwrap();
        let mut b = [1u8; 8];
        assert_eq!(h.read(BASE + 0x5000, &mut b), Some(Access::Done), "same page, clean bytes");
        assert_eq!(b[0], 0xaa);
        assert_eq!(h.read(BASE + 0x53fc, &mut b), Some(Access::Poisoned), "straddles the poison's end");
        assert_eq!(b, [0; 8]);
        assert_eq!(h.read(BASE + 0x5400, &mut b), Some(Access::Done));
        assert_eq!(b[0], 0xbb);
        assert!(h.write(BASE + 0x5200, &[0xcc; 4]), "a store into poison goes to the backing");
        assert_eq!(h.read(BASE + 0x5200, &mut b), Some(Access::Poisoned), "and keeps the poison");
        assert_eq!(h.read(BASE - 8, &mut b), None, "below the region");
        assert_eq!(h.read(BASE + 0xfffc, &mut b), None, "runs past the end");
        assert!(!h.write(u64::MAX - 2, &[0; 8]), "overflow");
        drop(h);
        assert_eq!(mem[0x5200..0x5204], [0xcc; 4]);
    }

    #[test]
    fn running_out_of_slots_is_an_error_and_the_region_still_answers() {
        let mut mem = vec![0u8; 0x10000];
        let (h, _) = holes(&mut mem, 11);
        // Three stretches need the region's slot and two more; only slot 10 is spare.
        let e = h.update(&[(BASE + 0x2000, 1), (BASE + 0x8000, 1)]).unwrap_err();
        assert!(e.to_string().contains("no KVM memory slot left"), "{e}");
        let mut b = [0u8; 4];
        assert_eq!(h.read(BASE + 0x9000, &mut b), Some(Access::Done));
    }
}
