//! Guest RAM: where it sits in the guest-physical address space (below the 32-bit MMIO hole and above
//! 4 GiB), the e820 map that describes it to Linux, and its registration as KVM memory slots.

use daxvmm_devices::layout::{MMIO_HOLE_END, MMIO_HOLE_START};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use thiserror::Error;
use vm_memory::mmap::FromRangesError;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap};

/// End of the low RAM Linux may use for real-mode data (the EBDA and BIOS area start here).
pub const LOW_RAM_END: u64 = 0x9_fc00;
/// Start of the memory above the legacy BIOS area.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;

/// e820 entry type for usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 entry type for reserved ranges.
pub const E820_RESERVED: u32 = 2;
/// e820 entry type 12: legacy persistent memory (Linux's E820_TYPE_PRAM, what `memmap=nn!ss` makes),
/// which Linux's nd_e820 driver puts on the "e820" nvdimm bus.
pub const E820_PMEM: u32 = 12;

/// Errors creating or registering guest RAM.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// The host refused the mapping.
    #[error("cannot allocate {size} bytes of guest RAM: {source}")]
    Allocate {
        /// Requested size.
        size: u64,
        /// What vm-memory reported.
        source: vm_memory::mmap::FromRangesError,
    },
    /// KVM refused a memory slot.
    #[error("KVM refused guest memory slot {slot} ({size:#x} bytes at {gpa:#x}): {source}")]
    Register {
        /// Slot number.
        slot: u32,
        /// Guest-physical address.
        gpa: u64,
        /// Size in bytes.
        size: u64,
        /// What KVM said.
        source: kvm_ioctls::Error,
    },
}

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820_RAM, E820_RESERVED or E820_PMEM.
    pub kind: u32,
}

/// The guest-physical RAM ranges for `mem` bytes: low RAM up to the MMIO hole, the rest above 4 GiB.
pub fn ram_ranges(mem: u64) -> Vec<(GuestAddress, u64)> {
    let low = mem.min(MMIO_HOLE_START);
    let mut ranges = vec![(GuestAddress(0), low)];
    if mem > low {
        ranges.push((GuestAddress(MMIO_HOLE_END), mem - low));
    }
    ranges
}

/// The e820 map Linux sees: the legacy area below 1 MiB with its BIOS hole reserved, RAM, then the
/// legacy pmem ranges `pmem` (base, size; placed above RAM by pmem::place).
pub fn e820_map(mem: u64, pmem: &[(u64, u64)]) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry { addr: 0, size: LOW_RAM_END, kind: E820_RAM },
        E820Entry { addr: LOW_RAM_END, size: HIGH_MEMORY_START - LOW_RAM_END, kind: E820_RESERVED },
    ];
    for (start, size) in ram_ranges(mem) {
        let end = start.0 + size;
        // The first range starts at 0; its part below 1 MiB is already described above.
        let start = start.0.max(HIGH_MEMORY_START);
        if end > start {
            map.push(E820Entry { addr: start, size: end - start, kind: E820_RAM });
        }
    }
    map.extend(pmem.iter().map(|&(addr, size)| E820Entry { addr, size, kind: E820_PMEM }));
    map.sort_by_key(|e| e.addr);
    map
}

/// Allocates guest RAM (anonymous, private, not committed until the guest touches it).
/// Each range is mapped at a 2 MiB-aligned host address with transparent huge pages asked for
/// (crate::ram_align), so KVM can give the guest 2 MiB pages.
pub fn create(mem: u64) -> Result<GuestMemoryMmap, MemoryError> {
    let allocate = |source: FromRangesError| MemoryError::Allocate { size: mem, source };
    let regions = ram_ranges(mem)
        .into_iter()
        .map(|(addr, size)| {
            let mapping = crate::ram_align::map(size as usize).map_err(|e| allocate(e.into()))?;
            GuestRegionMmap::new(mapping, addr).ok_or(allocate(FromRangesError::InvalidGuestRegion))
        })
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_regions(regions).map_err(|e| allocate(e.into()))
}

/// Registers every region of `gm` as a KVM memory slot, starting at slot `first_slot`.
/// Returns the next free slot number.
pub fn register(vm: &VmFd, gm: &GuestMemoryMmap, first_slot: u32) -> Result<u32, MemoryError> {
    let mut slot = first_slot;
    for region in gm.iter() {
        let gpa = region.start_addr().0;
        let size = region.len();
        let host = gm.get_host_address(region.start_addr()).map_err(|_| MemoryError::Register {
            slot,
            gpa,
            size,
            source: kvm_ioctls::Error::new(libc::EFAULT),
        })?;
        let mr = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host as u64,
        };
        // SAFETY: the mapping behind `host` belongs to `gm` and is exactly `size` bytes long. The caller,
        // machine::Machine, owns both `gm` and the VM, and unmaps `gm` only after every vCPU thread has
        // been joined and the VM closed (or never, when a vCPU would not stop).
        unsafe { vm.set_user_memory_region(mr) }.map_err(|source| MemoryError::Register {
            slot,
            gpa,
            size,
            source,
        })?;
        slot += 1;
    }
    Ok(slot)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::units::{GIB, MIB};

    #[test]
    fn small_guest_has_one_range() {
        assert_eq!(ram_ranges(512 * MIB), vec![(GuestAddress(0), 512 * MIB)]);
        let map = e820_map(512 * MIB, &[]);
        assert_eq!(map.len(), 3);
        assert_eq!(
            map[2],
            E820Entry { addr: HIGH_MEMORY_START, size: 512 * MIB - HIGH_MEMORY_START, kind: E820_RAM }
        );
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(map[0].addr + map[0].size, map[1].addr);
    }

    #[test]
    fn large_guest_splits_around_the_hole() {
        let mem = 4 * GIB;
        let r = ram_ranges(mem);
        assert_eq!(r, vec![(GuestAddress(0), 3 * GIB), (GuestAddress(4 * GIB), GIB)]);
        let map = e820_map(mem, &[]);
        let ram: u64 = map.iter().filter(|e| e.kind == E820_RAM).map(|e| e.size).sum();
        assert_eq!(ram, mem - (HIGH_MEMORY_START - LOW_RAM_END));
        assert!(map.iter().all(|e| e.addr + e.size <= MMIO_HOLE_START || e.addr >= MMIO_HOLE_END));
        assert_eq!(map.last().unwrap(), &E820Entry { addr: 4 * GIB, size: GIB, kind: E820_RAM });
    }

    #[test]
    fn legacy_pmem_ranges_are_type_12_in_address_order() {
        let map = e820_map(4 * GIB, &[(8 * GIB, GIB), (6 * GIB, 2 * GIB)]);
        let pmem: Vec<&E820Entry> = map.iter().filter(|e| e.kind == E820_PMEM).collect();
        assert_eq!(pmem.len(), 2);
        assert_eq!(*pmem[0], E820Entry { addr: 6 * GIB, size: 2 * GIB, kind: 12 });
        assert_eq!(*pmem[1], E820Entry { addr: 8 * GIB, size: GIB, kind: 12 });
        assert!(map.windows(2).all(|w| w[0].addr + w[0].size <= w[1].addr), "sorted, no overlap: {map:?}");
    }

    #[test]
    fn create_maps_all_ranges() {
        let gm = create(64 * MIB).unwrap();
        assert_eq!(gm.num_regions(), 1);
        assert_eq!(gm.iter().map(|r| r.len()).sum::<u64>(), 64 * MIB);
    }
}
