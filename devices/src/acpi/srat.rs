//! The System Resource Affinity Table (ACPI 6.5, 5.2.16), signature "SRAT": which proximity domain each
//! processor and each RAM range belongs to. This module owns the table's layout and the machine's one
//! proximity domain, which the NFIT's SPA ranges name too.
//!
//! The machine is not NUMA; the table exists so that Linux knows proximity domain 0. Its kmem driver
//! (`daxctl reconfigure-device --mode=system-ram`) refuses a device-dax region without a target node, and
//! an NFIT region gets one from its SPA range's proximity domain only when the SRAT maps that domain to a
//! node. The pmem ranges themselves are not listed: any SRAT range above 4 GiB raises Linux's
//! `max_possible_pfn` past 32-bit DMA, and x86 then sets aside a 64 MiB swiotlb bounce buffer, a quarter
//! of a small guest's RAM. So a legacy e820 pmem range, which has no proximity domain and is looked up by
//! address (`phys_to_target_node()`), gets no target node, and kmem refuses it.

use acpi_tables::srat::MemoryAffinity;

use super::madt::apic_ids;
use super::{new_sdt, to_bytes, AcpiError, HEADER_LEN};

/// The proximity domain of every processor and memory range; Linux maps it to node 0.
pub(crate) const PROXIMITY_DOMAIN: u32 = 0;

/// SRAT revision of ACPI 6.5. From revision 2 on, Linux reads the processor structures' 32-bit proximity
/// domain, not just its low byte.
const SRAT_REVISION: u8 = 3;
/// The 4-byte "table revision" field after the header, which must be 1 for backward compatibility,
/// and 8 reserved bytes.
const SRAT_RESERVED_LEN: u32 = 12;
const SRAT_TABLE_REVISION_OFFSET: usize = 36;
const SRAT_TABLE_REVISION: u32 = 1;

const PROCESSOR_AFFINITY_TYPE: u8 = 0;
/// Linux rejects a processor local APIC affinity structure of any other length.
const PROCESSOR_AFFINITY_LEN: usize = 16;
/// Processor affinity flag: the entry is in use (Linux skips it otherwise).
const PROCESSOR_ENABLED: u32 = 1 << 0;

/// Type 0, Processor Local APIC/SAPIC Affinity (ACPI 6.5, 5.2.16.1), for the processor whose local APIC
/// id is `apic_id`. The local SAPIC EID (Itanium; SGI UV machines fold it into the APIC id) and the clock
/// domain stay 0. `acpi_tables` has no such structure.
fn processor_affinity(apic_id: u8) -> [u8; PROCESSOR_AFFINITY_LEN] {
    let [domain_lo, domain_hi @ ..] = PROXIMITY_DOMAIN.to_le_bytes();
    let mut s = [0u8; PROCESSOR_AFFINITY_LEN];
    s[0] = PROCESSOR_AFFINITY_TYPE;
    s[1] = PROCESSOR_AFFINITY_LEN as u8;
    s[2] = domain_lo;
    s[3] = apic_id;
    s[4..8].copy_from_slice(&PROCESSOR_ENABLED.to_le_bytes());
    // Local SAPIC EID (8).
    s[9..12].copy_from_slice(&domain_hi);
    // Clock domain (12..16).
    s
}

/// Type 1, Memory Affinity (ACPI 6.5, 5.2.16.2): `size` bytes of RAM at `base`, enabled. Not
/// hot-pluggable: every range is there from boot on, and stays.
fn memory_affinity(base: u64, size: u64) -> Result<Vec<u8>, AcpiError> {
    if size == 0 {
        return Err(AcpiError::SratEmptyRange { base });
    }
    if base.checked_add(size).is_none() {
        return Err(AcpiError::SratRangeOverflow { base, size });
    }
    Ok(to_bytes(&MemoryAffinity::new(PROXIMITY_DOMAIN, base, size).enabled()))
}

/// The SRAT for `cpus` vCPUs and the guest RAM ranges `ram` ((base, size), each one memory affinity
/// structure in the order given), all in [`PROXIMITY_DOMAIN`]. Processors are named by the local APIC ids the MADT gives them.
///
/// Fails if the vCPU count is out of range, or a range is empty or does not end below 2^64. Linux would
/// skip such a range (warning about one that wraps), leaving the memory it was meant to cover without a
/// node; either is a mistake in the caller's layout, better caught before the guest boots.
pub fn srat(cpus: u8, ram: &[(u64, u64)]) -> Result<Vec<u8>, AcpiError> {
    let mut sdt = new_sdt(*b"SRAT", HEADER_LEN + SRAT_RESERVED_LEN, SRAT_REVISION);
    sdt.write_u32(SRAT_TABLE_REVISION_OFFSET, SRAT_TABLE_REVISION);
    for id in apic_ids(cpus)? {
        sdt.append_slice(&processor_affinity(id));
    }
    for &(base, size) in ram {
        sdt.append_slice(&memory_affinity(base, size)?);
    }
    Ok(sdt.as_slice().to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::{assert_header, subtables, u32_at, u64_at, GIB, MIB};
    use super::*;

    /// The structures after the 48-byte fixed part.
    fn structures(b: &[u8]) -> Vec<&[u8]> {
        subtables(b, 48)
    }

    /// (base, length, flags, proximity domain) of a memory affinity structure, checking its fixed fields.
    fn memory(s: &[u8]) -> (u64, u64, u32, u32) {
        assert_eq!(s[0], 1, "type");
        assert_eq!(s[1], 40, "length");
        assert_eq!(&s[6..8], &[0, 0], "reserved");
        assert_eq!(u32_at(s, 24), 0, "reserved");
        assert_eq!(u64_at(s, 32), 0, "reserved");
        // Base and length are each split into low and high u32s.
        let base = u64::from(u32_at(s, 8)) | u64::from(u32_at(s, 12)) << 32;
        let len = u64::from(u32_at(s, 16)) | u64::from(u32_at(s, 20)) << 32;
        (base, len, u32_at(s, 28), u32_at(s, 2))
    }

    #[test]
    fn header_reserved_fields_and_length() {
        let b = srat(2, &[(0, 3 * GIB), (4 * GIB, GIB)]).unwrap();
        assert_header(&b, b"SRAT", 3);
        assert_eq!(u32_at(&b, 36), 1, "table revision: 1 for backward compatibility");
        assert_eq!(u64_at(&b, 40), 0, "reserved");
        assert_eq!(b.len(), 48 + 2 * 16 + 2 * 40);
        assert_eq!(u32_at(&b, 4) as usize, b.len(), "length field");
    }

    #[test]
    fn one_enabled_processor_per_cpu_with_its_apic_id() {
        for cpus in 1..=8u8 {
            let b = srat(cpus, &[(0, 512 * MIB)]).unwrap();
            assert_header(&b, b"SRAT", 3);
            let s = structures(&b);
            assert_eq!(s.len(), usize::from(cpus) + 1);
            // The MADT's local APIC ids are the vCPU indexes.
            for (i, p) in s[..usize::from(cpus)].iter().enumerate() {
                assert_eq!(p[0], 0, "cpu {i}: type");
                assert_eq!(p[1], 16, "cpu {i}: length");
                assert_eq!(p[2], 0, "cpu {i}: proximity domain bits 0..8");
                assert_eq!(p[3] as usize, i, "cpu {i}: APIC id");
                assert_eq!(u32_at(p, 4), 1, "cpu {i}: flags: enabled");
                assert_eq!(p[8], 0, "cpu {i}: local SAPIC EID");
                assert_eq!(&p[9..12], &[0, 0, 0], "cpu {i}: proximity domain bits 8..32");
                assert_eq!(u32_at(p, 12), 0, "cpu {i}: clock domain");
            }
        }
    }

    #[test]
    fn ram_ranges_enabled_in_domain_0() {
        let ram = [(0, 3 * GIB), (4 * GIB, 5 * GIB / 2), (0x1_0000_0000_0000, 4 * GIB)];
        let b = srat(1, &ram).unwrap();
        assert_header(&b, b"SRAT", 3);
        let s = structures(&b);
        assert_eq!(s.len(), 1 + ram.len());
        for (i, &(base, size)) in ram.iter().enumerate() {
            let m = memory(s[1 + i]);
            assert_eq!(m, (base, size, 0b001, 0), "RAM {i}: enabled, not hot-pluggable or non-volatile");
        }
    }

    #[test]
    fn a_processor_is_where_its_entries_begin() {
        let b = srat(1, &[]).unwrap();
        assert_eq!(b.len(), 48 + 16);
        assert_eq!((b[48], b[49], b[51]), (0, 16, 0), "type 0 at offset 48, APIC id 0");
    }

    #[test]
    fn rejects_bad_cpu_counts_and_ranges() {
        for cpus in [0u8, 9, 255] {
            assert_eq!(srat(cpus, &[(0, GIB)]), Err(AcpiError::InvalidCpuCount { cpus }));
        }
        let top = u64::MAX - (2 * MIB - 1);
        assert_eq!(srat(1, &[(4 * GIB, 0)]), Err(AcpiError::SratEmptyRange { base: 4 * GIB }));
        assert_eq!(srat(1, &[(0, GIB), (8 * GIB, 0)]), Err(AcpiError::SratEmptyRange { base: 8 * GIB }));
        // Linux computes the end as base + size, which would wrap to 0 here.
        assert_eq!(
            srat(1, &[(0, GIB), (top, 2 * MIB)]),
            Err(AcpiError::SratRangeOverflow { base: top, size: 2 * MIB })
        );
        assert!(srat(1, &[(0, GIB), (top - 2 * MIB, 2 * MIB)]).is_ok());
        let msg = AcpiError::SratEmptyRange { base: 8 * GIB }.to_string();
        assert!(msg.contains("0x200000000"), "{msg}");
    }
}
