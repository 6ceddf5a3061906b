//! The fault-injection device in the ACPI namespace: `Device(DXFI)` with `_HID "DAXF0001"`, `_UID 0`,
//! `_STA 0x0F` and one `Memory32Fixed` window in `_CRS`, which the guest's `dax_refcount` driver binds to
//! (docs/fault-injection.md). It goes into the DSDT through [`super::DsdtConfig::extra_sb_aml`], so its path
//! is `\_SB_.DXFI`.
//!
//! Why a string `_HID`: "DAXF0001" has the ACPI ID form (four-character vendor prefix, four hex digits),
//! which does not fit a 7-character compressed EISA id, and Linux's `acpi_device_id` tables match string
//! ids directly. "DAXF" is not a registered vendor id; the device exists only under daxvmm, as QEMU's
//! `QEMU0001` pvpanic id exists only under QEMU.

use acpi_tables::aml::{Device, Memory32Fixed, Name, ResourceTemplate};

use super::to_bytes;
use crate::layout::{FAULT_INJECTOR_BASE, FAULT_INJECTOR_LEN};

/// `_HID` of the fault-injection device.
pub const FAULT_INJECTOR_HID: &str = "DAXF0001";

/// `_STA` of a device that is present, enabled, shown in the UI and working.
const STA_PRESENT: u8 = 0x0f;

// The layout's window must be describable by a Memory32Fixed descriptor.
const _: () = assert!(FAULT_INJECTOR_BASE + FAULT_INJECTOR_LEN <= 1 << 32);

/// `Device(DXFI) { _HID "DAXF0001", _UID 0, _STA 0x0F, _CRS { Memory32Fixed(ReadWrite, base, len) } }`.
pub fn fault_injector_aml(base: u32, len: u32) -> Vec<u8> {
    let hid = Name::new("_HID".into(), &FAULT_INJECTOR_HID);
    let uid = Name::new("_UID".into(), &0u8);
    let sta = Name::new("_STA".into(), &STA_PRESENT);
    let window = Memory32Fixed::new(true, base, len);
    let crs = Name::new("_CRS".into(), &ResourceTemplate::new(vec![&window]));
    to_bytes(&Device::new("DXFI".into(), vec![&hid, &uid, &sta, &crs]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::{assert_header, find, pkg_length, u32_at};
    use super::super::{dsdt, DsdtConfig};
    use super::*;
    use crate::layout::{IOAPIC_ADDR, LAPIC_ADDR, MMIO_HOLE_END, MMIO_HOLE_START};

    #[test]
    fn exact_bytes() {
        let aml = fault_injector_aml(0xfeb0_0000, 0x1_0000);
        let mut expected = vec![0x5b, 0x82, 0x38];
        expected.extend(b"DXFI");
        expected.extend(b"\x08_HID\x0dDAXF0001\x00");
        expected.extend(b"\x08_UID\x00");
        expected.extend(b"\x08_STA\x0a\x0f");
        // Name(_CRS, Buffer(PkgLength 17) { BytePrefix 14: descriptor (12), EndTag + checksum 0 (2) }).
        expected.extend(b"\x08_CRS\x11\x11\x0a\x0e");
        expected.extend([0x86, 0x09, 0x00, 0x01]);
        expected.extend(0xfeb0_0000u32.to_le_bytes());
        expected.extend(0x1_0000u32.to_le_bytes());
        expected.extend([0x79, 0x00]);
        assert_eq!(aml, expected);
    }

    #[test]
    fn lengths_and_resource_template_parse_from_the_spec() {
        let aml = fault_injector_aml(0x1234_5000, 0x2000);
        assert_eq!(&aml[..2], &[0x5b, 0x82], "DeviceOp");
        let (len, used) = pkg_length(&aml[2..]);
        assert_eq!(2 + len, aml.len(), "PkgLength covers the device exactly");
        assert_eq!(&aml[2 + used..6 + used], b"DXFI");

        let hid = find(&aml, b"_HID").unwrap();
        assert_eq!(aml[hid + 4], 0x0d, "string _HID, not an EISA id");
        assert_eq!(&aml[hid + 5..hid + 14], b"DAXF0001\x00");

        let crs = find(&aml, b"_CRS").unwrap() + 4;
        assert_eq!(aml[crs], 0x11, "BufferOp");
        let (buf_len, used) = pkg_length(&aml[crs + 1..]);
        assert_eq!(crs + 1 + buf_len, aml.len(), "the buffer ends the device");
        let body = &aml[crs + 1 + used..];
        assert_eq!(&body[..2], &[0x0a, 14], "buffer size: descriptor + end tag");
        let desc = &body[2..];
        // ACPI 6.5, 6.4.3.4: 32-bit fixed memory range descriptor, length 9, write status 1.
        assert_eq!((desc[0], u16::from_le_bytes([desc[1], desc[2]]), desc[3]), (0x86, 9, 1));
        assert_eq!((u32_at(desc, 4), u32_at(desc, 8)), (0x1234_5000, 0x2000));
        assert_eq!(&desc[12..], &[0x79, 0x00], "EndTag");
    }

    #[test]
    fn layout_window_sits_in_the_hole_clear_of_the_apics() {
        let (base, end) = (FAULT_INJECTOR_BASE, FAULT_INJECTOR_BASE + FAULT_INJECTOR_LEN);
        assert!(MMIO_HOLE_START <= base && end <= MMIO_HOLE_END);
        for page in [IOAPIC_ADDR, LAPIC_ADDR] {
            assert!(end <= page || page + 0x1000 <= base, "overlaps the page at {page:#x}");
        }
        assert_eq!(base % FAULT_INJECTOR_LEN, 0, "aligned to its size");
        assert_eq!(FAULT_INJECTOR_LEN, crate::fault::WINDOW_LEN);
    }

    #[test]
    fn goes_into_a_valid_dsdt() {
        let aml = fault_injector_aml(FAULT_INJECTOR_BASE as u32, FAULT_INJECTOR_LEN as u32);
        let table = dsdt(&DsdtConfig { extra_sb_aml: aml.clone(), ..Default::default() });
        assert_header(&table, b"DSDT", 2);
        assert!(table.ends_with(&aml), "the device closes \\_SB_, which closes the table");
    }
}
