//! The Fixed ACPI Description Table (ACPI 6.5, 5.2.9), signature "FACP": a hardware-reduced ACPI 6.5 FADT
//! that points at the DSDT and at the PM block's sleep control, sleep status and reset registers. It is
//! how the guest finds out how to power off and reboot.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};

use super::{to_bytes, CREATOR_ID, CREATOR_REVISION, OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout::{
    ACPI_PM_PORT, ACPI_RESET_OFFSET, ACPI_RESET_VALUE, ACPI_SLEEP_CONTROL_OFFSET, ACPI_SLEEP_STATUS_OFFSET,
};

/// The FADT's hypervisor vendor identity (offset 268), which guests may use to tell which VMM they run on.
pub const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"DAXVMM\0\0";

/// IA-PC boot architecture flags (ACPI 6.5, table 5.11): only CMOS RTC Not Present. What that tells Linux:
/// - LEGACY_DEVICES and 8042 clear: no legacy ISA devices to probe and no i8042, so the keyboard driver
///   does not poll a controller we do not have; the reset pulse on port 0x64 does not depend on this flag.
/// - VGA Not Present clear: harmless, as the zeroed boot_params screen_info already keeps vgacon away.
/// - MSI Not Supported clear: MSI stays allowed, for a PCI device added later.
/// - CMOS RTC Not Present set: the guest interface has no CMOS, so Linux must not probe ports 0x70/0x71
///   (kvmclock gives it the time; the probe would only cost boot time and read floating ports).
const IAPC_BOOT_ARCH: u16 = 1 << 5;

/// A byte-wide register in I/O port space, the form every register of the PM block takes.
fn io_byte_register(port: u16) -> GAS {
    GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, u64::from(port))
}

/// The FADT for a hardware-reduced machine whose DSDT is at guest physical address `dsdt_addr`.
///
/// X_DSDT always holds `dsdt_addr`; the 32-bit DSDT field holds it too when it fits, which is what older
/// parsers read and what ACPICA accepts without a mismatch warning, since both agree.
pub fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup);
    f.creator_id = CREATOR_ID;
    f.creator_revision = CREATOR_REVISION.to_le_bytes();
    f.dsdt = u32::try_from(dsdt_addr).unwrap_or(0).into();
    f.x_dsdt = dsdt_addr.into();
    f.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    f.reset_reg = io_byte_register(ACPI_PM_PORT + ACPI_RESET_OFFSET);
    f.reset_value = ACPI_RESET_VALUE;
    // Linux powers a hardware-reduced machine off by writing ((SLP_TYP << 2) & 0x1c) | 0x20 (SLP_EN) here,
    // SLP_TYP coming from the DSDT's \_S5_ package; the PM block turns that into a power-off.
    f.sleep_control_reg = io_byte_register(ACPI_PM_PORT + ACPI_SLEEP_CONTROL_OFFSET);
    f.sleep_status_reg = io_byte_register(ACPI_PM_PORT + ACPI_SLEEP_STATUS_OFFSET);
    f.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();
    to_bytes(&f.finalize())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{assert_header, u16_at, u32_at, u64_at};
    use super::*;

    /// Checks a GAS (ACPI 6.5, table 5.1) describing a byte-wide I/O port register.
    fn assert_io_byte_gas(b: &[u8], offset: usize, port: u64, what: &str) {
        assert_eq!(b[offset], 1, "{what}: address space SystemIO");
        assert_eq!(b[offset + 1], 8, "{what}: bit width");
        assert_eq!(b[offset + 2], 0, "{what}: bit offset");
        assert_eq!(b[offset + 3], 1, "{what}: byte access");
        assert_eq!(u64_at(b, offset + 4), port, "{what}: address");
    }

    #[test]
    fn header_and_size_are_acpi_6_5() {
        let b = fadt(0x000e_0100);
        assert_eq!(b.len(), 276);
        assert_header(&b, b"FACP", 6);
        assert_eq!(b[131], 5, "FADT minor version");
    }

    #[test]
    fn hardware_reduced_with_reset_register() {
        let b = fadt(0x000e_0100);
        let flags = u32_at(&b, 112);
        assert_eq!(flags, (1 << 20) | (1 << 10), "exactly HW_REDUCED_ACPI and RESET_REG_SUP");
        assert_eq!(u16_at(&b, 109), 1 << 5, "IA-PC boot arch flags: CMOS RTC not present");
        assert_io_byte_gas(&b, 116, 0x602, "RESET_REG");
        assert_eq!(b[128], 0x01, "RESET_VALUE");
    }

    #[test]
    fn sleep_registers_point_at_the_pm_block() {
        let b = fadt(0x000e_0100);
        assert_io_byte_gas(&b, 244, 0x600, "SLEEP_CONTROL_REG");
        assert_io_byte_gas(&b, 256, 0x601, "SLEEP_STATUS_REG");
        // Legacy PM1/GPE blocks are absent: their 32-bit and extended forms are all zero.
        assert!(b[56..88].iter().all(|&x| x == 0), "PM1/PM2/PM_TMR/GPE blocks");
        assert!(b[148..244].iter().all(|&x| x == 0), "X_PM1a_EVT_BLK..X_GPE1_BLK");
        assert_eq!(u16_at(&b, 46), 0, "no SCI");
    }

    #[test]
    fn dsdt_below_4g_fills_both_fields() {
        let b = fadt(0x000e_0100);
        assert_eq!(u32_at(&b, 40), 0x000e_0100, "DSDT");
        assert_eq!(u64_at(&b, 140), 0x000e_0100, "X_DSDT");
        assert_eq!(u32_at(&b, 36), 0, "no FACS");
        assert_eq!(u64_at(&b, 132), 0, "no X_FACS");
    }

    #[test]
    fn dsdt_above_4g_only_in_x_dsdt() {
        let b = fadt(0x1_0000_0000);
        assert_eq!(u32_at(&b, 40), 0, "DSDT");
        assert_eq!(u64_at(&b, 140), 0x1_0000_0000, "X_DSDT");
        assert_header(&b, b"FACP", 6);
    }

    #[test]
    fn hypervisor_vendor_identity() {
        let b = fadt(0x000e_0100);
        assert_eq!(&b[268..276], b"DAXVMM\0\0");
    }
}
