//! The Root System Description Pointer (ACPI 6.5, 5.2.5.3): the 36-byte ACPI 2.0+ structure the guest
//! finds first (at [`crate::layout::ACPI_RSDP_ADDR`], or through boot_params.acpi_rsdp_addr) and which
//! points at the XSDT.

use acpi_tables::rsdp::Rsdp;

use super::{to_bytes, OEM_ID};

/// The RSDP pointing at the XSDT at guest physical address `xsdt_addr`.
///
/// The 32-bit RSDT address is left zero: revision 2 tells the OS to use the XSDT, and Linux does.
pub fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    to_bytes(&Rsdp::new(OEM_ID, xsdt_addr))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{byte_sum, u32_at, u64_at};
    use super::*;

    #[test]
    fn layout_matches_acpi_2_rsdp() {
        let xsdt = 0x000e_0040_u64;
        let b = rsdp(xsdt);
        assert_eq!(b.len(), 36);
        assert_eq!(&b[0..8], b"RSD PTR ");
        assert_eq!(&b[9..15], b"DAXVMM");
        assert_eq!(b[15], 2, "revision: ACPI 2.0+ layout");
        assert_eq!(u32_at(&b, 16), 0, "no RSDT");
        assert_eq!(u32_at(&b, 20), 36, "length");
        assert_eq!(u64_at(&b, 24), xsdt);
        assert_eq!(&b[33..36], &[0, 0, 0], "reserved");
    }

    #[test]
    fn both_checksums_hold() {
        for addr in [0, 0x000e_0040, 0xdead_beef_cafe_f00d] {
            let b = rsdp(addr);
            assert_eq!(byte_sum(&b[..20]), 0, "ACPI 1.0 checksum over the first 20 bytes");
            assert_eq!(byte_sum(&b), 0, "extended checksum over all 36 bytes");
        }
    }
}
