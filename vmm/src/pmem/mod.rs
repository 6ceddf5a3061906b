//! Emulated NVDIMMs: what a `--pmem` argument asks for (`spec`), where each region sits in the
//! guest-physical address space, the host memory behind it (`backing`), its KVM memory slot, and the
//! description the NFIT and DSDT give of it.
//! Placement is checked before any backing is mapped, so bad input never touches a user's file.

pub mod backing;
pub mod file;
pub mod holes;
pub mod hugetlb;
pub mod labels;
pub mod spec;
pub mod view;

use std::path::Path;

use daxvmm_devices::acpi::{nvdimm_handle, NvdimmRegion};
use daxvmm_devices::flush_hint::{self, Flush, FlushHints};
use daxvmm_devices::layout::{MMIO_HOLE_END, MMIO_HOLE_START};
use daxvmm_devices::nvdimm_ars::DimmRange;
use daxvmm_devices::nvdimm_dsm::LabelArea;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use thiserror::Error;

use self::backing::FlushRange;
use self::backing::{BackingError, HostMapping};
use self::labels::Labels;
use self::spec::{Backing, PmemKind, PmemSpec};
use crate::memory::ram_ranges;
use crate::units::{format_size, GIB, MIB};

/// Most NVDIMMs a guest may have.
pub const MAX_PMEM: usize = 8;
/// Where automatic placement aligns regions: 1 GiB suits 1 GiB pages and memory-hotplug sections.
pub const AUTO_ALIGN: u64 = GIB;
/// The least alignment of an explicit `addr=` (the guest maps pmem with 2 MiB pages).
pub const MIN_ALIGN: u64 = 2 * MIB;

/// Errors setting up pmem.
#[derive(Debug, Error)]
pub enum PmemError {
    /// More regions than slots.
    #[error("{0} --pmem regions given; at most {MAX_PMEM} are supported")]
    TooMany(usize),
    /// An explicit address with the wrong alignment.
    #[error("pmem{index}: addr={addr:#x} must be a multiple of {align}")]
    Misaligned {
        /// Region.
        index: usize,
        /// Address given.
        addr: u64,
        /// Needed alignment.
        align: String,
    },
    /// A region overlapping RAM, the MMIO hole or another region.
    #[error("pmem{index}: {start:#x}..{end:#x} overlaps {what}")]
    Overlap {
        /// Region.
        index: usize,
        /// Start.
        start: u64,
        /// End.
        end: u64,
        /// What it overlaps.
        what: String,
    },
    /// Beyond what the CPU can address.
    #[error("pmem{index}: {end:#x} is beyond the {bits}-bit guest-physical address space")]
    TooHigh {
        /// Region.
        index: usize,
        /// End address.
        end: u64,
        /// Physical address bits.
        bits: u32,
    },
    /// Host memory for a region.
    #[error(transparent)]
    Backing(#[from] BackingError),
    /// KVM refused the memory slot.
    #[error("KVM refused the memory slot for pmem{index}: {err}")]
    Register {
        /// Region.
        index: usize,
        /// KVM's error.
        err: kvm_ioctls::Error,
    },
}

/// One NVDIMM, mapped.
#[derive(Debug)]
pub struct PmemRegion {
    /// Guest-physical base.
    pub gpa: u64,
    /// Host memory.
    pub mapping: HostMapping,
    /// How the guest sees it (`type=`).
    pub kind: PmemKind,
    /// Its namespace label area (`label-size=`).
    pub labels: Option<Labels>,
    /// Ranges (offset, length) poisoned from the start (`poison=`).
    pub poison: Vec<(u64, u64)>,
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Guest-physical bases for `specs` in a guest with `mem` bytes of RAM and `phys_bits` address bits.
pub fn place(mem: u64, specs: &[PmemSpec], phys_bits: u32) -> Result<Vec<u64>, PmemError> {
    if specs.len() > MAX_PMEM {
        return Err(PmemError::TooMany(specs.len()));
    }
    let ram_end = ram_ranges(mem).last().map_or(0, |(a, s)| a.0 + s);
    let mut next = align_up(ram_end.max(MMIO_HOLE_END), AUTO_ALIGN);
    let mut taken: Vec<(u64, u64, String)> =
        ram_ranges(mem).iter().map(|(a, s)| (a.0, a.0 + s, "guest RAM".into())).collect();
    taken.push((MMIO_HOLE_START, MMIO_HOLE_END, "the 32-bit MMIO hole (LAPIC, IOAPIC)".into()));
    let limit = 1u64.checked_shl(phys_bits).unwrap_or(u64::MAX);
    let mut bases = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let base = match spec.addr {
            Some(a) => {
                let align = if spec.backing == Backing::Hugetlb1G { GIB } else { MIN_ALIGN };
                if a % align != 0 {
                    return Err(PmemError::Misaligned { index, addr: a, align: format_size(align) });
                }
                a
            }
            None => next,
        };
        let end = base.checked_add(spec.size).ok_or(PmemError::TooHigh {
            index,
            end: u64::MAX,
            bits: phys_bits,
        })?;
        if let Some((_, _, what)) = taken.iter().find(|(s, e, _)| base < *e && *s < end) {
            return Err(PmemError::Overlap { index, start: base, end, what: what.clone() });
        }
        if end > limit {
            return Err(PmemError::TooHigh { index, end, bits: phys_bits });
        }
        taken.push((base, end, format!("pmem{index}")));
        next = next.max(align_up(end, AUTO_ALIGN));
        bases.push(base);
    }
    Ok(bases)
}

/// The host CPU's physical address width (CPUID 0x80000008), which bounds guest-physical addresses.
pub fn host_phys_bits() -> u32 {
    // SAFETY: CPUID has no side effects; leaf 0x80000000 tells whether 0x80000008 exists.
    #[allow(unused_unsafe)]
    let max_ext = unsafe { std::arch::x86_64::__cpuid(0x8000_0000) }.eax;
    if max_ext < 0x8000_0008 {
        return 36;
    }
    // SAFETY: as above; the leaf exists.
    #[allow(unused_unsafe)]
    let bits = unsafe { std::arch::x86_64::__cpuid(0x8000_0008) }.eax & 0xff;
    bits
}

/// Places and maps every region; logs what backs each one.
pub fn setup(mem: u64, specs: &[PmemSpec], pools: &Path) -> Result<Vec<PmemRegion>, PmemError> {
    let bases = place(mem, specs, host_phys_bits())?;
    let mut regions = Vec::with_capacity(specs.len());
    for (index, (spec, gpa)) in specs.iter().zip(bases).enumerate() {
        // Files the earlier regions of a failed start created go too.
        let discard = |regions: &[PmemRegion]| {
            for r in regions {
                r.mapping.discard_if_created();
                r.labels.iter().for_each(Labels::discard_if_created);
            }
        };
        let mapping = match backing::map(index, spec, pools) {
            Ok(m) => m,
            Err(e) => {
                discard(&regions);
                return Err(e.into());
            }
        };
        let labels = match Labels::open(index, spec) {
            Ok(l) => l,
            Err(e) => {
                mapping.discard_if_created();
                discard(&regions);
                return Err(e.into());
            }
        };
        if gpa % mapping.align() != 0 {
            log::warn!(
                "pmem{index}: guest address {gpa:#x} is not {}-aligned; KVM will use smaller pages",
                format_size(mapping.align())
            );
        }
        log::info!("{} at guest-physical {gpa:#x}", backing::describe(index, &mapping));
        if let Some(l) = &labels {
            let only = if l.dsm() { "" } else { ", served by the ACPI label methods only (label-dsm=off)" };
            log::info!("pmem{index}: a {}-byte namespace label area{only}", l.size());
        }
        regions.push(PmemRegion { gpa, mapping, kind: spec.kind, labels, poison: spec.poison.clone() });
    }
    Ok(regions)
}

/// Registers each region as a KVM memory slot from `first_slot` on.
pub fn register(vm: &VmFd, regions: &[PmemRegion], first_slot: u32) -> Result<(), PmemError> {
    for (index, r) in regions.iter().enumerate() {
        let mr = kvm_userspace_memory_region {
            slot: first_slot + index as u32,
            flags: 0,
            guest_phys_addr: r.gpa,
            memory_size: r.mapping.size(),
            userspace_addr: r.mapping.host_addr(),
        };
        // SAFETY: the mapping is owned by `r` and is exactly memory_size bytes long. The caller,
        // machine::Machine, owns the regions and the VM, and drops the regions only after every vCPU
        // thread has been joined and the VM closed (or never, when a vCPU would not stop).
        unsafe { vm.set_user_memory_region(mr) }.map_err(|err| PmemError::Register { index, err })?;
    }
    Ok(())
}

/// The NFIT regions as [`holes::PoisonHoles`] sees them, registered from `first_slot` on by [`register`].
pub fn hole_regions(regions: &[PmemRegion], first_slot: u32) -> Vec<holes::HoleRegion> {
    let nfit = regions.iter().enumerate().filter(|(_, r)| r.kind == PmemKind::Nfit);
    nfit.map(|(index, r)| holes::HoleRegion {
        index,
        gpa: r.gpa,
        size: r.mapping.size(),
        host: r.mapping.host_addr(),
        slot: first_slot + index as u32,
    })
    .collect()
}

/// How the ACPI tables describe the NFIT regions (an e820 region is in the e820 map instead; the others
/// keep their index as their slot).
pub fn acpi_regions(regions: &[PmemRegion]) -> Vec<NvdimmRegion> {
    regions
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == PmemKind::Nfit)
        .map(|(i, r)| NvdimmRegion {
            slot: i as u16,
            base: r.gpa,
            size: r.mapping.size(),
            // Only a shared file has anything a flush could make durable.
            flush_hint: r.mapping.durable_file().map(|_| flush_hint::address(i as u16)),
            labels: r.labels.is_some(),
        })
        .collect()
}

/// The legacy e820 ranges (base, size).
pub fn e820_ranges(regions: &[PmemRegion]) -> Vec<(u64, u64)> {
    regions.iter().filter(|r| r.kind == PmemKind::E820).map(|r| (r.gpa, r.mapping.size())).collect()
}

/// The virtio-pmem regions in order (device `i` of them is virtio-mmio slot `i`): guest-physical base,
/// size, and the range a guest flush writes back (`None`: nothing to make durable without a shared file).
pub fn virtio_regions(regions: &[PmemRegion]) -> Vec<(u64, u64, Option<FlushRange>)> {
    let virtio = regions.iter().filter(|r| r.kind == PmemKind::Virtio);
    virtio.map(|r| (r.gpa, r.mapping.size(), r.mapping.flush_range())).collect()
}

/// The NFIT regions' ranges and device handles, for the root device's scrub and error injection.
pub fn dimm_ranges(regions: &[PmemRegion]) -> Vec<DimmRange> {
    let nfit = regions.iter().enumerate().filter(|(_, r)| r.kind == PmemKind::Nfit);
    nfit.map(|(i, r)| DimmRange { handle: nvdimm_handle(i as u16), base: r.gpa, size: r.mapping.size() })
        .collect()
}

/// The ranges `poison=` asked for, as guest-physical (address, length).
pub fn host_poison(regions: &[PmemRegion]) -> Vec<(u64, u64)> {
    regions.iter().flat_map(|r| r.poison.iter().map(|&(off, len)| (r.gpa + off, len))).collect()
}

/// The label areas of the NFIT regions that have one, by NFIT device handle, for the _DSM mailbox.
pub fn label_stores(regions: &[PmemRegion]) -> Vec<LabelArea> {
    let nfit = regions.iter().enumerate().filter(|(_, r)| r.kind == PmemKind::Nfit);
    nfit.filter_map(|(i, r)| Some(r.labels.as_ref()?.area(nvdimm_handle(i as u16)))).collect()
}

/// The flush hint device for `regions`: a guest flush of a shared file-backed NFIT region msyncs it (an
/// e820 range has no flush hint; it is written back at exit).
pub fn flush_hints(regions: &[PmemRegion]) -> FlushHints {
    let slots = regions.iter().enumerate().filter(|(_, r)| r.kind == PmemKind::Nfit).filter_map(|(i, r)| {
        let range = r.mapping.flush_range()?;
        let flush: Flush = Box::new(move || range.flush());
        Some((i as u16, flush))
    });
    FlushHints::new(slots.collect())
}

/// Logs how often the guest flushed each region that has a flush hint.
pub fn log_flushes(hints: &FlushHints) {
    for (slot, c) in hints.counts() {
        let failed = if c.failed > 0 { format!(", {} failed", c.failed) } else { String::new() };
        log::info!("pmem{slot}: the guest flushed it {} times (each an msync of its file){failed}", c.done);
    }
}

/// Writes shared file-backed regions back to their files; errors are logged, not fatal, so every region
/// gets its chance. A `share=off` file is left as it was, and says so.
pub fn flush_all(regions: &[PmemRegion]) {
    for (i, r) in regions.iter().enumerate() {
        match (r.mapping.file(), r.mapping.durable_file()) {
            (Some(f), Some(_)) => match r.mapping.flush() {
                Ok(()) => log::info!("pmem{i}: flushed to {}", f.display()),
                Err(e) => log::error!("pmem{i}: msync of {} failed: {e}", f.display()),
            },
            (Some(f), None) => {
                log::info!(
                    "pmem{i}: share=off: the guest's writes are discarded; {} is unchanged",
                    f.display()
                )
            }
            (None, _) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn specs(list: &[&str]) -> Vec<PmemSpec> {
        list.iter().map(|s| PmemSpec::parse(s).unwrap()).collect()
    }

    #[test]
    fn an_e820_region_is_in_the_e820_map_not_the_nfit() {
        let regions = setup(
            512 << 20,
            &specs(&["2M,backing=thp", "2M,backing=thp,type=e820", "2M,backing=anon"]),
            std::path::Path::new("/nonexistent"),
        )
        .unwrap();
        let nfit: Vec<u16> = acpi_regions(&regions).iter().map(|r| r.slot).collect();
        assert_eq!(nfit, [0, 2], "NFIT DIMMs keep their index as slot");
        assert_eq!(e820_ranges(&regions), [(regions[1].gpa, 2 << 20)]);
    }

    #[test]
    fn automatic_placement_above_ram_and_4g() {
        let b = place(512 * MIB, &specs(&["16G", "2M", "1G"]), 46).unwrap();
        assert_eq!(b, vec![4 * GIB, 20 * GIB, 21 * GIB]);
        // 6 GiB of RAM: 3 GiB low, 3 GiB from 4 GiB to 7 GiB; pmem starts at 7 GiB.
        assert_eq!(place(6 * GIB, &specs(&["1G"]), 46).unwrap(), vec![7 * GIB]);
    }

    #[test]
    fn explicit_addresses_are_checked() {
        assert_eq!(place(512 * MIB, &specs(&["2M,addr=0x200000000"]), 46).unwrap(), vec![8 * GIB]);
        let e = place(512 * MIB, &specs(&["2M,addr=0x10000000"]), 46).unwrap_err().to_string();
        assert!(e.contains("overlaps guest RAM"), "{e}");
        let e = place(512 * MIB, &specs(&["2M,addr=0xfec00000"]), 46).unwrap_err().to_string();
        assert!(e.contains("MMIO hole"), "{e}");
        let e = place(512 * MIB, &specs(&["2M,addr=0x100100000"]), 46).unwrap_err().to_string();
        assert!(e.contains("multiple of 2M"), "{e}");
        let e = place(512 * MIB, &specs(&["4G", "2M,addr=5G"]), 46).unwrap_err().to_string();
        assert!(e.contains("overlaps pmem0"), "{e}");
        let e = place(512 * MIB, &specs(&["1G,addr=0,backing=hugetlb-1g"]), 46).unwrap_err().to_string();
        assert!(e.contains("overlaps guest RAM"), "{e}");
    }

    #[test]
    fn limits() {
        let nine: Vec<&str> = vec!["2M"; 9];
        assert!(matches!(place(512 * MIB, &specs(&nine), 46), Err(PmemError::TooMany(9))));
        let e = place(512 * MIB, &specs(&["64G"]), 36).unwrap_err();
        assert!(matches!(e, PmemError::TooHigh { bits: 36, .. }), "{e}");
    }

    #[test]
    fn label_areas_go_to_the_mailbox_by_handle_with_their_label_dsm() {
        let regions = setup(
            512 * MIB,
            &specs(&[
                "2M,backing=anon,label-size=128K,label-dsm=off",
                "2M,backing=anon",
                "2M,backing=anon,type=e820",
                "2M,backing=anon,label-size=256K",
            ]),
            Path::new("/nonexistent"),
        )
        .unwrap();
        let areas: Vec<_> =
            label_stores(&regions).iter().map(|a| (a.handle, a.dsm, a.store.size())).collect();
        assert_eq!(areas, [(1, false, 128 << 10), (4, true, 256 << 10)], "NFIT handles are slot + 1");
        let with_labels: Vec<_> = acpi_regions(&regions).iter().map(|r| (r.slot, r.labels)).collect();
        assert_eq!(with_labels, [(0, true), (1, false), (3, true)], "the e820 range is no NFIT DIMM");
    }

    #[test]
    fn acpi_view_matches_placement() {
        let regions =
            setup(512 * MIB, &specs(&["4M,backing=anon", "2M,backing=thp"]), Path::new("/nonexistent"))
                .unwrap();
        let acpi = acpi_regions(&regions);
        assert_eq!(acpi.len(), 2);
        assert_eq!((acpi[0].slot, acpi[0].base, acpi[0].size), (0, 4 * GIB, 4 * MIB));
        assert_eq!((acpi[1].slot, acpi[1].base, acpi[1].size), (1, 5 * GIB, 2 * MIB));
        // Nothing to make durable without a shared file: no flush hint, and no flush device slot.
        assert!(acpi.iter().all(|r| r.flush_hint.is_none()));
        assert!(flush_hints(&regions).counts().is_empty());
    }
}
