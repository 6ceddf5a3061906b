//! The virtio-mmio devices in the ACPI namespace: one `Device(VRnn)` per transport with `_HID
//! "LNRO0005"` (the id Linux's virtio_mmio driver matches), its register window and its interrupt, so
//! the guest finds them without `virtio_mmio.device=` on the kernel command line. They go into the DSDT
//! through [`super::DsdtConfig::extra_sb_aml`].

use acpi_tables::aml::{Device, Interrupt, Memory32Fixed, Name, ResourceTemplate};

use super::to_bytes;

/// `_HID` of a virtio-mmio transport (Linux's `virtio_mmio_acpi_match`).
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";

/// `_STA` of a device that is present, enabled, shown in the UI and working.
const STA_PRESENT: u8 = 0x0f;

/// One virtio-mmio transport as the DSDT describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioDevice {
    /// Guest-physical base of the register window (below 4 GiB).
    pub base: u32,
    /// Length of the window.
    pub len: u32,
    /// Its IOAPIC input.
    pub gsi: u32,
}

/// `Device(VRnn) { _HID "LNRO0005", _UID n, _STA 0x0F, _CRS { Memory32Fixed(ReadWrite, base, len),
/// Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) {gsi} } }` for each of `devices` (n in hex,
/// at most 256 devices). Edge-triggered because the VMM signals it through an irqfd, which pulses the line.
pub fn virtio_mmio_aml(devices: &[VirtioMmioDevice]) -> Vec<u8> {
    let mut aml = Vec::new();
    for (n, d) in devices.iter().enumerate().take(256) {
        let hid = Name::new("_HID".into(), &VIRTIO_MMIO_HID);
        let uid = Name::new("_UID".into(), &(n as u8));
        let sta = Name::new("_STA".into(), &STA_PRESENT);
        let window = Memory32Fixed::new(true, d.base, d.len);
        let irq = Interrupt::new(true, true, false, false, d.gsi);
        let crs = Name::new("_CRS".into(), &ResourceTemplate::new(vec![&window, &irq]));
        let name = format!("VR{n:02X}");
        aml.extend(to_bytes(&Device::new(name.as_str().into(), vec![&hid, &uid, &sta, &crs])));
    }
    aml
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::find;
    use super::*;

    #[test]
    fn exact_bytes_of_one_device() {
        let aml = virtio_mmio_aml(&[VirtioMmioDevice { base: 0xfeb1_8000, len: 0x200, gsi: 16 }]);
        // DeviceOp, then a two-byte PkgLength of 66 (0x42: two bytes, low nibble 2; 0x04: 4 << 4).
        let mut expected = vec![0x5b, 0x82, 0x42, 0x04];
        expected.extend(b"VR00");
        expected.extend(b"\x08_HID\x0dLNRO0005\x00");
        expected.extend(b"\x08_UID\x00");
        expected.extend(b"\x08_STA\x0a\x0f");
        // Name(_CRS, Buffer(PkgLength 26) { BytePrefix 23: Memory32Fixed (12), Interrupt (9), EndTag (2) }).
        expected.extend(b"\x08_CRS\x11\x1a\x0a\x17");
        expected.extend([0x86, 0x09, 0x00, 0x01]);
        expected.extend(0xfeb1_8000u32.to_le_bytes());
        expected.extend(0x200u32.to_le_bytes());
        // Extended Interrupt: length 6, flags consumer|edge (active high, exclusive), one interrupt.
        expected.extend([0x89, 0x06, 0x00, 0x03, 0x01]);
        expected.extend(16u32.to_le_bytes());
        expected.extend([0x79, 0x00]);
        assert_eq!(aml, expected);
    }

    #[test]
    fn devices_are_numbered_in_order() {
        let d = |i: u32| VirtioMmioDevice { base: 0xfeb1_8000 + i * 0x1000, len: 0x200, gsi: 16 + i };
        let aml = virtio_mmio_aml(&[d(0), d(1), d(10)]);
        let (a, b, c) =
            (find(&aml, b"VR00").unwrap(), find(&aml, b"VR01").unwrap(), find(&aml, b"VR02").unwrap());
        assert!(a < b && b < c);
        assert_eq!(aml.windows(8).filter(|w| w == b"LNRO0005").count(), 3);
        assert!(find(&aml, &(0xfeb1_8000u32 + 0xa000).to_le_bytes()).is_some());
        assert!(virtio_mmio_aml(&[]).is_empty());
    }
}
