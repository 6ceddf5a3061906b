//! ACPI table builders for the guest: one function per table, each returning the table's bytes, ready to be
//! copied into guest memory. This module owns the identity every table carries (OEM and creator ids), the
//! builders' error type and the helpers they share; the VMM decides where each table goes and links them
//! (RSDP -> XSDT -> FADT/MADT/SRAT/..., FADT -> DSDT).
//!
//! The tables describe a hardware-reduced ACPI 6.x x86 machine (docs/guest-interface.md): no PM1 event or
//! control blocks, no GPEs and no SCI; power-off and reset go through the FADT's sleep control and reset
//! registers in the PM block at [`crate::layout::ACPI_PM_PORT`].

mod dsdt;
mod fadt;
mod fault_aml;
mod madt;
mod nfit;
mod nvdimm_aml;
mod rsdp;
mod srat;
mod virtio_aml;
mod xsdt;

pub use dsdt::{dsdt, DsdtConfig};
pub use fadt::{fadt, HYPERVISOR_VENDOR_ID};
pub use fault_aml::{fault_injector_aml, FAULT_INJECTOR_HID};
pub use madt::{madt, IOAPIC_ID};
pub use nfit::{nfit, nvdimm_handle, NvdimmRegion, MAX_NVDIMM_SLOTS, NVDIMM_ALIGN};
pub use nvdimm_aml::{nvdimm_root_aml, NVDIMM_ROOT_HID};
pub use rsdp::rsdp;
pub use srat::srat;
pub use virtio_aml::{virtio_mmio_aml, VirtioMmioDevice, VIRTIO_MMIO_HID};
pub use xsdt::xsdt;

use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use crate::layout::MAX_VCPUS;

/// OEM id in every table header and in the RSDP.
pub const OEM_ID: [u8; 6] = *b"DAXVMM";
/// OEM table id in every table header. Linux keys its ACPI quirks on (OEM id, OEM table id), so one stable
/// value for the whole machine keeps us out of any real platform's quirk list.
pub const OEM_TABLE_ID: [u8; 8] = *b"DAXVMM  ";
/// OEM revision in every table header; bump it when the tables change in a way a guest could care about.
pub const OEM_REVISION: u32 = 1;
/// Creator id in every table header. The `acpi_tables` crate would write its own ("RVAT"); ours makes
/// `acpidump` in the guest say which VMM laid the tables out.
pub const CREATOR_ID: [u8; 4] = *b"DAXV";
/// Creator revision in every table header.
pub const CREATOR_REVISION: u32 = 1;

/// Why a table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcpiError {
    /// The vCPU count is outside what the machine supports.
    #[error("invalid vCPU count {cpus}: must be 1..={max}", max = MAX_VCPUS)]
    InvalidCpuCount {
        /// The count that was asked for.
        cpus: u8,
    },
    /// An NVDIMM slot has no AML device name or NFIT indexes.
    #[error("NVDIMM slot {slot} out of range: must be below {max}", max = MAX_NVDIMM_SLOTS)]
    NvdimmSlotOutOfRange {
        /// The slot that was asked for.
        slot: u16,
    },
    /// Two NVDIMM regions claim the same slot.
    #[error("NVDIMM slot {slot} is used twice")]
    NvdimmDuplicateSlot {
        /// The repeated slot.
        slot: u16,
    },
    /// An NVDIMM region has size 0.
    #[error("NVDIMM slot {slot}: region is empty")]
    NvdimmEmptyRegion {
        /// The region's slot.
        slot: u16,
    },
    /// An NVDIMM region's base or size is not a multiple of [`NVDIMM_ALIGN`].
    #[error("NVDIMM slot {slot}: base {base:#x} and size {size:#x} must be multiples of {NVDIMM_ALIGN:#x}")]
    NvdimmMisaligned {
        /// The region's slot.
        slot: u16,
        /// The region's base.
        base: u64,
        /// The region's size.
        size: u64,
    },
    /// An NVDIMM region ends beyond the 64-bit address space.
    #[error("NVDIMM slot {slot}: region at {base:#x} of size {size:#x} ends beyond 2^64")]
    NvdimmRegionOverflow {
        /// The region's slot.
        slot: u16,
        /// The region's base.
        base: u64,
        /// The region's size.
        size: u64,
    },
    /// Two NVDIMM regions share guest-physical addresses.
    #[error("NVDIMM regions of slots {slot} and {other} overlap")]
    NvdimmOverlap {
        /// The slot of the region with the lower base.
        slot: u16,
        /// The slot of the other region.
        other: u16,
    },
    /// A memory range given to the SRAT has size 0.
    #[error("SRAT memory range at {base:#x} is empty: every guest RAM and pmem range needs a size")]
    SratEmptyRange {
        /// The range's base.
        base: u64,
    },
    /// A memory range given to the SRAT ends beyond the 64-bit address space.
    #[error("SRAT memory range at {base:#x} of size {size:#x} ends beyond 2^64")]
    SratRangeOverflow {
        /// The range's base.
        base: u64,
        /// The range's size.
        size: u64,
    },
}

/// Offsets inside the common 36-byte system description table header (ACPI 6.5, 5.2.6).
const HEADER_CREATOR_ID_OFFSET: usize = 28;
const HEADER_CREATOR_REVISION_OFFSET: usize = 32;
/// Size of the common system description table header.
pub(crate) const HEADER_LEN: u32 = 36;

/// A table with our header and `length` bytes in all (zero-filled past the header); the checksum is kept
/// valid by every `Sdt` write and append.
pub(crate) fn new_sdt(signature: [u8; 4], length: u32, revision: u8) -> Sdt {
    let mut sdt = Sdt::new(signature, length, revision, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    sdt.write_bytes(HEADER_CREATOR_ID_OFFSET, &CREATOR_ID);
    sdt.write_u32(HEADER_CREATOR_REVISION_OFFSET, CREATOR_REVISION);
    sdt
}

/// Serializes any `acpi_tables` object (typed table, MADT structure, AML term) to bytes.
pub(crate) fn to_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

/// Checks shared by every table's tests, written from the spec's header layout rather than from
/// `acpi_tables`, so a builder that gets the header wrong fails here.
#[cfg(test)]
pub(crate) mod test_util {
    use super::NvdimmRegion;

    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;

    /// Splits the structures that follow a table's fixed part of `fixed` bytes, each with the common ACPI
    /// subtable header (a type byte, then a length byte: MADT, SRAT), checking that their lengths tile
    /// the table exactly.
    pub fn subtables(b: &[u8], fixed: usize) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut off = fixed;
        while off < b.len() {
            let len = b[off + 1] as usize;
            assert!(len >= 2 && off + len <= b.len(), "structure at {off} overruns the table");
            out.push(&b[off..off + len]);
            off += len;
        }
        out
    }

    /// A 1 GiB NVDIMM in `slot`, at 4 GiB + slot GiB, without a flush hint or a label area.
    pub fn region(slot: u16) -> NvdimmRegion {
        NvdimmRegion {
            slot,
            base: (4 + u64::from(slot)) << 30,
            size: 1 << 30,
            flush_hint: None,
            labels: false,
        }
    }

    /// [`region`] with a label area.
    pub fn labelled(slot: u16) -> NvdimmRegion {
        NvdimmRegion { labels: true, ..region(slot) }
    }

    /// Decodes an AML PkgLength (ACPI 6.5, 20.2.4) at `b[0]`: (value, bytes it took).
    pub fn pkg_length(b: &[u8]) -> (usize, usize) {
        let follow = (b[0] >> 6) as usize;
        if follow == 0 {
            return ((b[0] & 0x3f) as usize, 1);
        }
        let mut len = (b[0] & 0x0f) as usize;
        for i in 0..follow {
            len |= (b[1 + i] as usize) << (4 + 8 * i);
        }
        (len, 1 + follow)
    }

    /// Little-endian u16 at `offset`.
    pub fn u16_at(bytes: &[u8], offset: usize) -> u16 {
        u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
    }

    /// Little-endian u32 at `offset`.
    pub fn u32_at(bytes: &[u8], offset: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[offset..offset + 4]);
        u32::from_le_bytes(b)
    }

    /// Little-endian u64 at `offset`.
    pub fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[offset..offset + 8]);
        u64::from_le_bytes(b)
    }

    /// Sum of all bytes mod 256; a valid ACPI table sums to zero.
    pub fn byte_sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
    }

    /// Asserts the 36-byte header (ACPI 6.5, table 5.4): signature, length == actual size, revision,
    /// zero byte sum, and our OEM/creator identity.
    pub fn assert_header(bytes: &[u8], signature: &[u8; 4], revision: u8) {
        assert!(bytes.len() >= 36, "table shorter than its header");
        assert_eq!(&bytes[0..4], signature, "signature");
        assert_eq!(u32_at(bytes, 4) as usize, bytes.len(), "length field");
        assert_eq!(bytes[8], revision, "revision");
        assert_eq!(byte_sum(bytes), 0, "checksum");
        assert_eq!(&bytes[10..16], b"DAXVMM", "OEM id");
        assert_eq!(&bytes[16..24], b"DAXVMM  ", "OEM table id");
        assert_eq!(u32_at(bytes, 24), 1, "OEM revision");
        assert_eq!(&bytes[28..32], b"DAXV", "creator id");
        assert_eq!(u32_at(bytes, 32), 1, "creator revision");
    }

    /// Position of the first occurrence of `needle` in `haystack`.
    pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::assert_header;
    use super::*;

    #[test]
    fn new_sdt_header_carries_our_identity() {
        let sdt = new_sdt(*b"TEST", 40, 3);
        assert_header(sdt.as_slice(), b"TEST", 3);
        assert_eq!(sdt.len(), 40);
    }

    #[test]
    fn cpu_count_error_names_the_limit() {
        let msg = AcpiError::InvalidCpuCount { cpus: 9 }.to_string();
        assert!(msg.contains('9') && msg.contains("1..=8"), "{msg}");
    }
}
