//! The NVDIMM devices in the ACPI namespace (ACPI 6.5, 9.19): the root device `NVDR` with `_HID
//! "ACPI0012"`, which Linux's nfit driver binds to before it reads the NFIT, and under it one device per
//! DIMM whose `_ADR` is the DIMM's NFIT device handle (without it Linux disables the DIMM). This module
//! owns that AML; it goes into the DSDT through [`super::DsdtConfig::extra_sb_aml`], which places it inside
//! `\_SB_`, so the root device is `\_SB_.NVDR` as under QEMU.
//!
//! There is no `_DSM` and no `_LSI`/`_LSR`/`_LSW`: without labels each region gives one label-less
//! namespace, which is all fs-dax needs. There is no `_STA` either: an absent `_STA` means present and
//! enabled (ACPI 6.5, 6.3.7), and QEMU's root device has none.

use acpi_tables::aml::{Device, Name};
use acpi_tables::Aml;

use super::nfit::{nvdimm_handle, NvdimmRegion, MAX_NVDIMM_SLOTS};
use super::to_bytes;

/// `_HID` of the NVDIMM root device.
pub const NVDIMM_ROOT_HID: &str = "ACPI0012";

/// The DIMM device's NameSeg: QEMU's `NV%02X`, so guest tools see the same ACPI paths as under QEMU.
fn child_name(slot: u16) -> String {
    format!("NV{slot:02X}")
}

/// `Device(NVDR) { Name(_HID, "ACPI0012"); Device(NVxx) { Name(_ADR, handle) } ... }` for `regions`, with
/// the DIMM devices in slot order.
///
/// Meant for the regions [`super::nfit()`] accepted, so that every NFIT device handle has its device. Should
/// it get others anyway, it still emits loadable AML: a repeated slot gets one device, and a slot of
/// [`MAX_NVDIMM_SLOTS`] or more, which no NameSeg of this scheme can name, gets none (with a warning).
pub fn nvdimm_root_aml(regions: &[NvdimmRegion]) -> Vec<u8> {
    let mut slots: Vec<u16> = regions.iter().map(|r| r.slot).collect();
    slots.sort_unstable();
    slots.dedup();
    slots.retain(|&slot| {
        let ok = slot < MAX_NVDIMM_SLOTS;
        if !ok {
            log::warn!("NVDIMM slot {slot} has no AML device name; Linux will disable that DIMM");
        }
        ok
    });

    let adrs: Vec<(String, Name)> = slots
        .iter()
        .map(|&slot| (child_name(slot), Name::new("_ADR".into(), &nvdimm_handle(slot))))
        .collect();
    let dimms: Vec<Device> =
        adrs.iter().map(|(name, adr)| Device::new(name.as_str().into(), vec![adr as &dyn Aml])).collect();
    let hid = Name::new("_HID".into(), &NVDIMM_ROOT_HID);
    let mut children: Vec<&dyn Aml> = vec![&hid];
    children.extend(dimms.iter().map(|d| d as &dyn Aml));
    to_bytes(&Device::new("NVDR".into(), children))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::{assert_header, find, pkg_length};
    use super::super::{dsdt, DsdtConfig};
    use super::*;

    fn region(slot: u16) -> NvdimmRegion {
        NvdimmRegion { slot, base: (4 + u64::from(slot)) << 30, size: 1 << 30, flush_hint: None }
    }

    /// Splits a Device object (ExtOpPrefix, DeviceOp, PkgLength, NameSeg, TermList) into its NameSeg and
    /// term list, checking that the PkgLength ends exactly at the end of `b`.
    fn device(b: &[u8]) -> (&[u8], &[u8]) {
        assert_eq!(&b[..2], &[0x5b, 0x82], "DeviceOp");
        let (len, used) = pkg_length(&b[2..]);
        assert_eq!(2 + len, b.len(), "PkgLength covers the device exactly");
        (&b[2 + used..6 + used], &b[6 + used..])
    }

    /// The AML encoding of an integer constant (ACPI 6.5, 20.2.3): ZeroOp, OneOp, or the smallest of the
    /// Byte/Word/DWord prefixes that holds it.
    fn aml_integer(v: u32) -> Vec<u8> {
        match v {
            0 => vec![0x00],
            1 => vec![0x01],
            2..=0xff => vec![0x0a, v as u8],
            0x100..=0xffff => [&[0x0b][..], &(v as u16).to_le_bytes()].concat(),
            _ => [&[0x0c][..], &v.to_le_bytes()].concat(),
        }
    }

    #[test]
    fn one_region_exact_bytes() {
        let mut expected = vec![0x5b, 0x82, 0x21];
        expected.extend(b"NVDR");
        expected.extend(b"\x08_HID\x0dACPI0012\x00");
        expected.extend([0x5b, 0x82, 0x0b]);
        expected.extend(b"NV00\x08_ADR\x01");
        assert_eq!(nvdimm_root_aml(&[region(0)]), expected);
    }

    #[test]
    fn one_device_per_region_in_slot_order_with_handle_as_adr() {
        let slots = [0xff, 0x1f, 0, 1];
        let regions: Vec<_> = slots.iter().map(|&s| region(s)).collect();
        let aml = nvdimm_root_aml(&regions);
        let (name, mut body) = device(&aml);
        assert_eq!(name, b"NVDR");
        let hid = b"\x08_HID\x0dACPI0012\x00";
        assert!(body.starts_with(hid), "_HID string first");
        body = &body[hid.len()..];

        // Handles 1, 2, 0x20, 0x100: OneOp, BytePrefix twice, WordPrefix, which is what acpi_tables emits
        // (the smallest encoding, as QEMU's aml_int does too).
        for (slot, name) in [(0u16, b"NV00"), (1, b"NV01"), (0x1f, b"NV1F"), (0xff, b"NVFF")] {
            let (len, _) = pkg_length(&body[2..]);
            let (dev_name, terms) = device(&body[..2 + len]);
            assert_eq!(dev_name, name);
            let adr = [&b"\x08_ADR"[..], &aml_integer(u32::from(slot) + 1)].concat();
            assert_eq!(terms, &adr[..], "slot {slot}: only Name(_ADR, slot + 1)");
            body = &body[2 + len..];
        }
        assert!(body.is_empty(), "nothing after the last DIMM");
        assert_eq!(aml.windows(4).filter(|w| w == b"_ADR").count(), 4);
    }

    #[test]
    fn large_handles_use_wider_integer_encodings() {
        assert_eq!(aml_integer(0x1_0000), [0x0c, 0x00, 0x00, 0x01, 0x00]);
        let aml = nvdimm_root_aml(&[region(0xff)]);
        assert!(find(&aml, b"NVFF\x08_ADR\x0b\x00\x01").is_some(), "handle 0x100 as WordPrefix");
    }

    #[test]
    fn no_regions_gives_a_bare_root_device() {
        let aml = nvdimm_root_aml(&[]);
        let (name, body) = device(&aml);
        assert_eq!(name, b"NVDR");
        assert_eq!(body, b"\x08_HID\x0dACPI0012\x00");
    }

    #[test]
    fn invalid_slots_still_give_loadable_aml() {
        let aml = nvdimm_root_aml(&[region(2), region(2), region(256)]);
        device(&aml);
        assert_eq!(aml.windows(4).filter(|w| w == b"_ADR").count(), 1);
        assert!(find(&aml, b"NV02").is_some());
    }

    #[test]
    fn goes_into_a_valid_dsdt() {
        let aml = nvdimm_root_aml(&[region(0), region(1)]);
        let table = dsdt(&DsdtConfig { extra_sb_aml: aml.clone(), ..Default::default() });
        assert_header(&table, b"DSDT", 2);
        assert!(table.ends_with(&aml), "the root device closes \\_SB_, which closes the table");
        assert!(find(&table, b"\\_SB_").unwrap() < table.len() - aml.len());
    }
}
