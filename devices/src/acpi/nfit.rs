//! The NVDIMM Firmware Interface Table (ACPI 6.5, 5.2.26), signature "NFIT": the persistent-memory ranges
//! Linux's nfit driver turns into libnvdimm regions (and `/dev/pmemN`). This module owns the table's
//! layout, the validation of the regions it describes, and the numbering that ties the table to the AML
//! devices of [`super::nvdimm_root_aml`]: device handles (= each child device's `_ADR`), SPA range
//! indexes and control region indexes, all derived from the slot the way QEMU's hw/acpi/nvdimm.c does.
//!
//! Per region the table holds one SPA range (type 0), one memory device to SPA range mapping (type 1), one
//! control region without block windows (type 4) and, for a region whose writes the host can make
//! durable, one flush hint address (type 6); one platform capabilities structure (type 7) ends it.

use super::srat::PROXIMITY_DOMAIN;
use super::{new_sdt, AcpiError, HEADER_LEN};

/// Alignment of every region's base and size. Linux maps pmem with 2 MiB pages when it can, and fsdax's
/// default `align` is 2 MiB; the VMM only hands out regions aligned to at least this.
pub const NVDIMM_ALIGN: u64 = 2 << 20;

/// Slots are `0..MAX_NVDIMM_SLOTS`: each child device is named `NV%02X` after its slot (QEMU's naming),
/// and two hex digits name 256 slots.
pub const MAX_NVDIMM_SLOTS: u16 = 256;

/// One emulated NVDIMM: a guest-physical range backed by persistent memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvdimmRegion {
    /// The DIMM's slot, 0-based; it fixes the device handle, indexes, serial number and AML name.
    pub slot: u16,
    /// Guest-physical base, a multiple of [`NVDIMM_ALIGN`].
    pub base: u64,
    /// Size in bytes, a non-zero multiple of [`NVDIMM_ALIGN`].
    pub size: u64,
    /// Guest-physical address of the DIMM's flush hint, if it has one: a write there asks the host to
    /// make the region's writes durable (Linux's `nvdimm_flush` writes it on fsync and REQ_PREFLUSH).
    pub flush_hint: Option<u64>,
    /// Whether the DIMM has a namespace label area: its AML device then also gets the ACPI label methods
    /// (`_LSI`, `_LSR`, `_LSW`). The NFIT itself does not say.
    pub labels: bool,
}

/// NFIT revision (ACPI 6.5, table 5.141).
const NFIT_REVISION: u8 = 1;
/// The reserved u32 between the header and the first structure.
const NFIT_RESERVED_LEN: u32 = 4;

const SPA_TYPE: u16 = 0;
/// Linux rejects an SPA range structure of any other length (64 would need the location cookie flag).
const SPA_LEN: usize = 56;
const MEMDEV_TYPE: u16 = 1;
const MEMDEV_LEN: usize = 48;
const DCR_TYPE: u16 = 4;
/// A control region without block control windows stops before the window fields.
const DCR_LEN: usize = 32;
const FLUSH_TYPE: u16 = 6;
/// One hint address: the fixed 16 bytes and one u64.
const FLUSH_LEN: usize = 24;
const CAPS_TYPE: u16 = 7;
const CAPS_LEN: usize = 16;

/// Address range type "byte-addressable persistent memory", 66F0D379-B4F3-4074-AC43-0D3318B78CDB, in
/// GUID byte order (first three fields little-endian, the last eight bytes as written).
const PERSISTENT_MEMORY_GUID: [u8; 16] =
    [0x79, 0xd3, 0xf0, 0x66, 0xf3, 0xb4, 0x74, 0x40, 0xac, 0x43, 0x0d, 0x33, 0x18, 0xb7, 0x8c, 0xdb];

/// SPA range flags: bit 1 only, "proximity domain valid": the range's proximity domain field is
/// [`PROXIMITY_DOMAIN`], the SRAT domain that also holds the range (see [`super::srat`]). With it, Linux's
/// nfit driver takes the region's NUMA node and target node from `pxm_to_node()` of that domain. The
/// target node is where `daxctl reconfigure-device --mode=system-ram` hot-adds the memory, and the kmem
/// driver refuses a region without one. With the bit clear, Linux would look the base address up in the
/// SRAT's memory ranges instead: the same node, reached indirectly, with a "changing numa node" message
/// per region.
///
/// QEMU sets 0x3. Bit 0 (control region only for hot add/online) concerns management of hot-plugged
/// DIMMs, which we do not do, and Linux never reads it.
const SPA_FLAGS: u16 = 1 << 1;
/// The range may be mapped write-back (EFI_MEMORY_WB) and is non-volatile (EFI_MEMORY_NV), as QEMU says.
const SPA_MEMORY_ATTRIBUTES: u64 = 0x8 | 0x8000;

/// Control region identity, QEMU's values, so ndctl sees the same DIMM ids as under QEMU. Linux prints the
/// ids and serial as big-endian JEDEC fields; like QEMU we store the numbers little-endian, as they are
/// only compared for uniqueness.
const DCR_VENDOR_ID: u16 = 0x8086;
const DCR_DEVICE_ID: u16 = 0x0001;
const DCR_REVISION_ID: u16 = 1;
const DCR_SERIAL_BASE: u32 = 0x0012_3456;
/// Format interface code: byte-addressable, energy backed (JEDEC Annex L), the code QEMU reports.
const DCR_FORMAT_INTERFACE_CODE: u16 = 0x0301;

/// Platform capability bit 1: the memory controller flushes its write queues on power loss (ADR), so
/// Linux reports the region's persistence domain as "memory_controller".
///
/// Bit 0 (CPU caches flushed on power loss, eADR) is deliberately clear. With it, Linux marks the region
/// ND_REGION_PERSIST_CACHE: the pmem disk loses its volatile write cache flag and `dax_flush` becomes a
/// no-op, so fsync/msync on a DAX file never write back CPU caches. Keeping it clear keeps the guest on
/// the cache-flushing path real ADR hardware needs, which is the path fs-dax tests should exercise; and
/// it promises nothing we cannot keep, since a file-backed region is only as durable as the host's page
/// cache.
const CAPABILITIES: u32 = 1 << 1;
/// Highest capability bit the table defines; Linux masks the capabilities with bits 0..=this.
const HIGHEST_VALID_CAPABILITY: u8 = 1;

/// The NFIT device handle of the DIMM in `slot`, which its AML device returns as `_ADR`: slot + 1, as in
/// QEMU, because handle 0 stands for the NVDIMM root device.
pub fn nvdimm_handle(slot: u16) -> u32 {
    u32::from(slot) + 1
}

/// SPA range index of `slot`: (slot + 1) * 2, as QEMU does. Index 0 means "none" in the NFIT; the SPA
/// and control region indexes of one slot share the number space, so they take even and odd values.
/// Only called for slots below [`MAX_NVDIMM_SLOTS`], where it cannot overflow.
fn spa_index(slot: u16) -> u16 {
    (slot + 1) << 1
}

/// Control region index of `slot`: its SPA range index + 1.
fn dcr_index(slot: u16) -> u16 {
    spa_index(slot) + 1
}

/// A zeroed structure of `N` bytes with its type and length filled in.
fn structure<const N: usize>(kind: u16) -> [u8; N] {
    let mut s = [0u8; N];
    s[0..2].copy_from_slice(&kind.to_le_bytes());
    s[2..4].copy_from_slice(&(N as u16).to_le_bytes());
    s
}

fn put(s: &mut [u8], offset: usize, bytes: &[u8]) {
    s[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// Type 0, System Physical Address Range (ACPI 6.5, 5.2.26.2), in the SRAT's proximity domain (see
/// [`SPA_FLAGS`]).
fn spa(r: &NvdimmRegion) -> [u8; SPA_LEN] {
    let mut s = structure::<SPA_LEN>(SPA_TYPE);
    put(&mut s, 4, &spa_index(r.slot).to_le_bytes());
    put(&mut s, 6, &SPA_FLAGS.to_le_bytes());
    // Reserved (8..12).
    put(&mut s, 12, &PROXIMITY_DOMAIN.to_le_bytes());
    put(&mut s, 16, &PERSISTENT_MEMORY_GUID);
    put(&mut s, 32, &r.base.to_le_bytes());
    put(&mut s, 40, &r.size.to_le_bytes());
    put(&mut s, 48, &SPA_MEMORY_ATTRIBUTES.to_le_bytes());
    s
}

/// Type 1, Memory Device to SPA Range Mapping (ACPI 6.5, 5.2.26.3): the whole DIMM, from device address
/// 0, backs the whole range without interleave. Physical id, region id and state flags stay 0 (a healthy
/// DIMM).
fn memdev(r: &NvdimmRegion) -> [u8; MEMDEV_LEN] {
    const INTERLEAVE_WAYS: u16 = 1;
    let mut s = structure::<MEMDEV_LEN>(MEMDEV_TYPE);
    put(&mut s, 4, &nvdimm_handle(r.slot).to_le_bytes());
    put(&mut s, 12, &spa_index(r.slot).to_le_bytes());
    put(&mut s, 14, &dcr_index(r.slot).to_le_bytes());
    put(&mut s, 16, &r.size.to_le_bytes());
    // Region offset (24), DPA base (32) and interleave index (40) are all 0.
    put(&mut s, 42, &INTERLEAVE_WAYS.to_le_bytes());
    s
}

/// Type 4, NVDIMM Control Region (ACPI 6.5, 5.2.26.6), without block control windows.
fn dcr(r: &NvdimmRegion) -> [u8; DCR_LEN] {
    let mut s = structure::<DCR_LEN>(DCR_TYPE);
    put(&mut s, 4, &dcr_index(r.slot).to_le_bytes());
    put(&mut s, 6, &DCR_VENDOR_ID.to_le_bytes());
    put(&mut s, 8, &DCR_DEVICE_ID.to_le_bytes());
    put(&mut s, 10, &DCR_REVISION_ID.to_le_bytes());
    put(&mut s, 24, &(DCR_SERIAL_BASE + u32::from(r.slot)).to_le_bytes());
    put(&mut s, 28, &DCR_FORMAT_INTERFACE_CODE.to_le_bytes());
    s
}

/// Type 6, Flush Hint Address (ACPI 6.5, 5.2.26.8): one hint address for the DIMM in `slot`.
fn flush_hint(slot: u16, address: u64) -> [u8; FLUSH_LEN] {
    const HINTS: u16 = 1;
    let mut s = structure::<FLUSH_LEN>(FLUSH_TYPE);
    put(&mut s, 4, &nvdimm_handle(slot).to_le_bytes());
    put(&mut s, 8, &HINTS.to_le_bytes());
    // Reserved (10..16).
    put(&mut s, 16, &address.to_le_bytes());
    s
}

/// Type 7, Platform Capabilities (ACPI 6.5, 5.2.26.9).
fn platform_capabilities() -> [u8; CAPS_LEN] {
    let mut s = structure::<CAPS_LEN>(CAPS_TYPE);
    s[4] = HIGHEST_VALID_CAPABILITY;
    put(&mut s, 8, &CAPABILITIES.to_le_bytes());
    s
}

/// Checks `regions` and returns them in slot order.
fn checked(regions: &[NvdimmRegion]) -> Result<Vec<NvdimmRegion>, AcpiError> {
    for &NvdimmRegion { slot, base, size, .. } in regions {
        if slot >= MAX_NVDIMM_SLOTS {
            return Err(AcpiError::NvdimmSlotOutOfRange { slot });
        }
        if size == 0 {
            return Err(AcpiError::NvdimmEmptyRegion { slot });
        }
        if base % NVDIMM_ALIGN != 0 || size % NVDIMM_ALIGN != 0 {
            return Err(AcpiError::NvdimmMisaligned { slot, base, size });
        }
        if base.checked_add(size).is_none() {
            return Err(AcpiError::NvdimmRegionOverflow { slot, base, size });
        }
    }
    let mut by_base = regions.to_vec();
    by_base.sort_by_key(|r| r.base);
    for pair in by_base.windows(2) {
        // Sorted by base and checked above, so base + size cannot overflow.
        if pair[0].base + pair[0].size > pair[1].base {
            return Err(AcpiError::NvdimmOverlap { slot: pair[0].slot, other: pair[1].slot });
        }
    }
    let mut by_slot = by_base;
    by_slot.sort_by_key(|r| r.slot);
    if let Some(pair) = by_slot.windows(2).find(|p| p[0].slot == p[1].slot) {
        return Err(AcpiError::NvdimmDuplicateSlot { slot: pair[0].slot });
    }
    Ok(by_slot)
}

/// The NFIT for `regions`, whose structures come in slot order whatever order `regions` is in. No regions
/// gives a valid table with only the platform capabilities.
///
/// Fails if a slot is out of range or repeated, or a region is empty, not [`NVDIMM_ALIGN`]-aligned, runs
/// past 2^64 or overlaps another.
pub fn nfit(regions: &[NvdimmRegion]) -> Result<Vec<u8>, AcpiError> {
    let regions = checked(regions)?;
    let mut sdt = new_sdt(*b"NFIT", HEADER_LEN + NFIT_RESERVED_LEN, NFIT_REVISION);
    for r in &regions {
        sdt.append_slice(&spa(r));
        sdt.append_slice(&memdev(r));
        sdt.append_slice(&dcr(r));
        if let Some(address) = r.flush_hint {
            sdt.append_slice(&flush_hint(r.slot, address));
        }
    }
    sdt.append_slice(&platform_capabilities());
    Ok(sdt.as_slice().to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::{assert_header, u16_at, u32_at, u64_at, GIB, MIB};
    use super::*;

    /// A GUID's on-disk bytes from its string form: the first three groups little-endian, the rest as is.
    fn guid_bytes(s: &str) -> Vec<u8> {
        let g: Vec<&str> = s.split('-').collect();
        let mut out = u32::from_str_radix(g[0], 16).unwrap().to_le_bytes().to_vec();
        out.extend(u16::from_str_radix(g[1], 16).unwrap().to_le_bytes());
        out.extend(u16::from_str_radix(g[2], 16).unwrap().to_le_bytes());
        let tail = format!("{}{}", g[3], g[4]);
        out.extend((0..8).map(|i| u8::from_str_radix(&tail[2 * i..2 * i + 2], 16).unwrap()));
        out
    }

    /// The structures after the 40-byte fixed part, checking that their lengths tile the table.
    fn structures(b: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut off = 40;
        while off < b.len() {
            let len = u16_at(b, off + 2) as usize;
            assert!(len >= 4 && off + len <= b.len(), "structure at {off} overruns the table");
            out.push(&b[off..off + len]);
            off += len;
        }
        out
    }

    fn region(slot: u16, base: u64, size: u64) -> NvdimmRegion {
        NvdimmRegion { slot, base, size, flush_hint: None, labels: false }
    }

    #[test]
    fn header_reserved_and_length() {
        for n in 0..3u16 {
            let regions: Vec<_> = (0..n).map(|i| region(i, 4 * GIB * (u64::from(i) + 1), GIB)).collect();
            let b = nfit(&regions).unwrap();
            assert_header(&b, b"NFIT", 1);
            assert_eq!(u32_at(&b, 36), 0, "reserved");
            assert_eq!(b.len(), 40 + usize::from(n) * (56 + 48 + 32) + 16);
        }
    }

    #[test]
    fn one_region_structures_in_order() {
        let b = nfit(&[region(0, 0x1_0000_0000, 256 * MIB)]).unwrap();
        let s = structures(&b);
        let layout: Vec<(u16, usize)> = s.iter().map(|s| (u16_at(s, 0), s.len())).collect();
        assert_eq!(layout, [(0, 56), (1, 48), (4, 32), (7, 16)]);
        assert_eq!(s[0].as_ptr(), b[40..].as_ptr(), "first structure at offset 40");
    }

    #[test]
    fn spa_range_fields() {
        let b = nfit(&[region(0, 0x1_4000_0000, 3 * GIB)]).unwrap();
        let spa = &b[40..96];
        assert_eq!(u16_at(spa, 0), 0, "type");
        assert_eq!(u16_at(spa, 2), 56, "length");
        assert_eq!(u16_at(spa, 4), 2, "SPA range index (slot + 1) * 2");
        assert_eq!(u16_at(spa, 6), 0b10, "flags: proximity domain valid only");
        assert_eq!(u32_at(spa, 8), 0, "reserved");
        assert_eq!(u32_at(spa, 12), 0, "proximity domain: the SRAT's domain 0");
        assert_eq!(&spa[16..32], &guid_bytes("66F0D379-B4F3-4074-AC43-0D3318B78CDB")[..], "PM GUID");
        assert_eq!(&spa[16..20], &[0x79, 0xd3, 0xf0, 0x66], "GUID starts little-endian");
        assert_eq!(u64_at(spa, 32), 0x1_4000_0000, "base");
        assert_eq!(u64_at(spa, 40), 3 * GIB, "length");
        assert_eq!(u64_at(spa, 48), 0x8008, "EFI_MEMORY_WB | EFI_MEMORY_NV");
    }

    #[test]
    fn memdev_fields() {
        let b = nfit(&[region(0, 0x1_0000_0000, 512 * MIB)]).unwrap();
        let m = &b[96..144];
        assert_eq!(u16_at(m, 0), 1, "type");
        assert_eq!(u16_at(m, 2), 48, "length");
        assert_eq!(u32_at(m, 4), 1, "device handle = slot + 1");
        assert_eq!(u16_at(m, 8), 0, "physical id");
        assert_eq!(u16_at(m, 10), 0, "region id");
        assert_eq!(u16_at(m, 12), 2, "SPA range index");
        assert_eq!(u16_at(m, 14), 3, "control region index");
        assert_eq!(u64_at(m, 16), 512 * MIB, "region size");
        assert_eq!(u64_at(m, 24), 0, "region offset");
        assert_eq!(u64_at(m, 32), 0, "DPA base");
        assert_eq!(u16_at(m, 40), 0, "interleave index");
        assert_eq!(u16_at(m, 42), 1, "interleave ways");
        assert_eq!(u16_at(m, 44), 0, "state flags");
        assert_eq!(u16_at(m, 46), 0, "reserved");
    }

    #[test]
    fn control_region_fields() {
        let b = nfit(&[region(0, 0x1_0000_0000, 512 * MIB)]).unwrap();
        let d = &b[144..176];
        assert_eq!(u16_at(d, 0), 4, "type");
        assert_eq!(u16_at(d, 2), 32, "length");
        assert_eq!(u16_at(d, 4), 3, "control region index");
        assert_eq!(u16_at(d, 6), 0x8086, "vendor id");
        assert_eq!(u16_at(d, 8), 1, "device id");
        assert_eq!(u16_at(d, 10), 1, "revision id");
        assert_eq!(&d[12..18], &[0; 6], "subsystem vendor, device, revision ids");
        assert_eq!(d[18], 0, "valid fields");
        assert_eq!(d[19], 0, "manufacturing location");
        assert_eq!(u16_at(d, 20), 0, "manufacturing date");
        assert_eq!(&d[22..24], &[0, 0], "reserved");
        assert_eq!(u32_at(d, 24), 0x123456, "serial number");
        assert_eq!(u16_at(d, 28), 0x0301, "format interface code");
        assert_eq!(u16_at(d, 30), 0, "block control windows");
    }

    #[test]
    fn flush_hint_fields() {
        let hinted = NvdimmRegion { flush_hint: Some(0xfeb1_2000), ..region(2, 0x1_0000_0000, 512 * MIB) };
        let b = nfit(&[region(0, 0x2_0000_0000, GIB), hinted]).unwrap();
        let s = structures(&b);
        assert_eq!(s.iter().map(|s| u16_at(s, 0)).collect::<Vec<_>>(), [0, 1, 4, 0, 1, 4, 6, 7]);
        let f = s[6];
        assert_eq!(u16_at(f, 0), 6, "type");
        assert_eq!(u16_at(f, 2), 24, "length: 16 + 8 per hint (Linux rejects any other)");
        assert_eq!(u32_at(f, 4), 3, "device handle of slot 2");
        assert_eq!(u16_at(f, 8), 1, "hint count");
        assert_eq!(&f[10..16], &[0; 6], "reserved");
        assert_eq!(u64_at(f, 16), 0xfeb1_2000, "hint address");
    }

    #[test]
    fn platform_capabilities_fields() {
        let b = nfit(&[region(0, 0x1_0000_0000, 512 * MIB)]).unwrap();
        let c = &b[176..];
        assert_eq!(c.len(), 16);
        assert_eq!(u16_at(c, 0), 7, "type");
        assert_eq!(u16_at(c, 2), 16, "length");
        assert_eq!(c[4], 1, "highest valid capability");
        assert_eq!(&c[5..8], &[0, 0, 0], "reserved");
        assert_eq!(u32_at(c, 8), 0b10, "memory controller flush only, not CPU cache flush");
        assert_eq!(u32_at(c, 12), 0, "reserved");
    }

    #[test]
    fn regions_come_in_slot_order_with_their_own_indexes() {
        // Given out of order, and with the higher slot at the lower address.
        let b = nfit(&[region(3, 0x1_0000_0000, GIB), region(0, 0x2_0000_0000, 2 * GIB)]).unwrap();
        assert_header(&b, b"NFIT", 1);
        let s = structures(&b);
        assert_eq!(s.iter().map(|s| u16_at(s, 0)).collect::<Vec<_>>(), [0, 1, 4, 0, 1, 4, 7]);
        // (slot, base, size): SPA index (slot+1)*2, control region index +1, handle slot+1.
        for (group, (slot, base, size)) in
            [(0u16, 0x2_0000_0000u64, 2 * GIB), (3, 0x1_0000_0000, GIB)].into_iter().enumerate()
        {
            let (spa, m, d) = (s[3 * group], s[3 * group + 1], s[3 * group + 2]);
            let spa_index = (slot + 1) * 2;
            assert_eq!(u16_at(spa, 4), spa_index);
            assert_eq!((u16_at(spa, 6), u32_at(spa, 12)), (0b10, 0), "every range is in domain 0");
            assert_eq!(u64_at(spa, 32), base);
            assert_eq!(u64_at(spa, 40), size);
            assert_eq!(u32_at(m, 4), u32::from(slot) + 1, "handle");
            assert_eq!(u16_at(m, 12), spa_index, "memdev points at its SPA range");
            assert_eq!(u16_at(m, 14), spa_index + 1, "memdev points at its control region");
            assert_eq!(u64_at(m, 16), size);
            assert_eq!(u16_at(d, 4), spa_index + 1);
            assert_eq!(u32_at(d, 24), 0x123456 + u32::from(slot), "serial");
        }
        assert_eq!((nvdimm_handle(0), nvdimm_handle(31), nvdimm_handle(u16::MAX)), (1, 32, 0x1_0000));
    }

    #[test]
    fn rejects_bad_regions() {
        use AcpiError::*;
        let ok = region(0, 4 * GIB, GIB);
        // The last aligned base: a 2 MiB region there would end at exactly 2^64.
        let top = u64::MAX - (2 * MIB - 1);
        let (b, s) = (4 * GIB, GIB);
        let cases = [
            (vec![region(0, 4 * GIB, 0)], NvdimmEmptyRegion { slot: 0 }),
            (vec![region(1, b + MIB, s)], NvdimmMisaligned { slot: 1, base: b + MIB, size: s }),
            (vec![region(1, b, s + 4096)], NvdimmMisaligned { slot: 1, base: b, size: s + 4096 }),
            (vec![region(2, top, 2 * MIB)], NvdimmRegionOverflow { slot: 2, base: top, size: 2 * MIB }),
            (vec![region(256, 4 * GIB, GIB)], NvdimmSlotOutOfRange { slot: 256 }),
            (vec![ok, region(0, 8 * GIB, GIB)], NvdimmDuplicateSlot { slot: 0 }),
            (vec![ok, region(1, 5 * GIB - 2 * MIB, GIB)], NvdimmOverlap { slot: 0, other: 1 }),
            (vec![region(1, 5 * GIB - 2 * MIB, GIB), ok], NvdimmOverlap { slot: 0, other: 1 }),
            (vec![ok, region(1, 4 * GIB + 2 * MIB, 2 * MIB)], NvdimmOverlap { slot: 0, other: 1 }),
            (vec![ok, region(1, 4 * GIB, GIB)], NvdimmOverlap { slot: 0, other: 1 }),
        ];
        for (regions, err) in cases {
            assert_eq!(nfit(&regions), Err(err), "{regions:?}");
        }
        let msg = NvdimmMisaligned { slot: 1, base: b + MIB, size: s }.to_string();
        assert!(msg.contains("0x200000") && msg.contains("0x100100000"), "{msg}");
        // Adjacent regions, and the last slot, are fine.
        assert!(nfit(&[region(0, b, 2 * MIB), region(255, b + 2 * MIB, 2 * MIB)]).is_ok());
    }

    #[test]
    fn no_regions_gives_only_capabilities() {
        let b = nfit(&[]).unwrap();
        assert_header(&b, b"NFIT", 1);
        assert_eq!(b.len(), 40 + 16);
        assert_eq!(u16_at(&b, 40), 7);
    }
}
