//! The NVDIMM devices in the ACPI namespace (ACPI 6.5, 9.19): the root device `NVDR` with `_HID
//! "ACPI0012"`, which Linux's nfit driver binds to before it reads the NFIT, and under it one device per
//! DIMM whose `_ADR` is the DIMM's NFIT device handle (without it Linux disables the DIMM). This module
//! owns that AML; it goes into the DSDT through [`super::DsdtConfig::extra_sb_aml`], which places it inside
//! `\_SB_`, so the root device is `\_SB_.NVDR` as under QEMU.
//!
//! Every device has a `_DSM`, and all of them go through one method, `NCAL`, to the mailbox device
//! ([`crate::nvdimm_dsm`]): it checks the UUID (the root device's, or the DIMM family Linux calls
//! "Intel"), writes handle, revision, function and the input buffer into the mailbox page, rings the
//! doorbell port with the page's address, and returns the answer as a buffer. Function 0 of a UUID it does
//! not know answers "no functions", so a kernel probing other DIMM families finds none. Which functions
//! each device offers is the mailbox's business (SMART health on every DIMM, labels where there is a
//! label area unless `label-dsm=off`, scrub and error injection on the root).
//! A DIMM with a label area also has the ACPI label methods `_LSI`/`_LSR`/`_LSW`, through `NCAL` as well
//! (the `nvdimm_label_aml.rs` beside this file); a DIMM without one has none of them.
//! There is no `_STA`: an absent `_STA` means present and enabled (ACPI 6.5, 6.3.7), and QEMU's root
//! device has none.

use acpi_tables::aml::{
    Arg, BufferData, Device, Else, Equal, Field, FieldAccessType, FieldEntry, FieldLockRule, FieldUpdateRule,
    If, Index, Local, Method, MethodCall, Mid, Name, NotEqual, ObjectType, OpRegion, OpRegionSpace, Return,
    SizeOf, Store, Subtract, Uuid,
};
use acpi_tables::{Aml, AmlSink};

use super::nfit::{nvdimm_handle, NvdimmRegion, MAX_NVDIMM_SLOTS};
use super::to_bytes;
use crate::layout::{NVDIMM_DSM_PAGE, NVDIMM_DSM_PORT, NVDIMM_DSM_PORT_LEN};
use crate::nvdimm_dsm::DSM_PAGE_SIZE;

// A child of this module, for the mailbox's names, in a file of its own beside this one.
#[path = "nvdimm_label_aml.rs"]
mod label;

/// `_HID` of the NVDIMM root device.
pub const NVDIMM_ROOT_HID: &str = "ACPI0012";
/// The `_DSM` UUID of the NVDIMM root device (ACPI 6.5, 9.19.7.1).
pub const ROOT_DSM_UUID: &str = "2F10E7A4-9E91-11E4-89D3-123B93F75CBA";
/// The `_DSM` UUID of the DIMM command family Linux calls NVDIMM_FAMILY_INTEL.
pub const DIMM_DSM_UUID: &str = "4309AC30-0D11-11E4-9191-0800200C9A66";

/// The DIMM device's NameSeg: QEMU's `NV%02X`, so guest tools see the same ACPI paths as under QEMU.
fn child_name(slot: u16) -> String {
    format!("NV{slot:02X}")
}

/// `DerefOf(object)`, which acpi_tables does not have.
struct DerefOf<'a>(&'a dyn Aml);

impl Aml for DerefOf<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(0x83); // DerefOfOp
        self.0.to_aml_bytes(sink);
    }
}

/// The mailbox's operation regions and their fields: `NTFI` (the doorbell); `HDLE`, `REVS`, `FUNC`,
/// `FARG` (a call); `RLEN`, `ODAT` (its answer, over the same page).
fn mailbox_fields() -> Vec<u8> {
    let page_bits = DSM_PAGE_SIZE * 8;
    let mut out = Vec::new();
    let port = u64::from(NVDIMM_DSM_PORT);
    let port_len = u64::from(NVDIMM_DSM_PORT_LEN);
    OpRegion::new("NPIO".into(), OpRegionSpace::SystemIO, &port, &port_len).to_aml_bytes(&mut out);
    let field = |region: &str, entries: Vec<FieldEntry>| {
        Field::new(
            region.into(),
            FieldAccessType::DWord,
            FieldLockRule::NoLock,
            FieldUpdateRule::Preserve,
            entries,
        )
    };
    field("NPIO", vec![FieldEntry::Named(*b"NTFI", 32)]).to_aml_bytes(&mut out);
    let (page, len) = (NVDIMM_DSM_PAGE, DSM_PAGE_SIZE as u64);
    OpRegion::new("NRAM".into(), OpRegionSpace::SystemMemory, &page, &len).to_aml_bytes(&mut out);
    let call = vec![
        FieldEntry::Named(*b"HDLE", 32),
        FieldEntry::Named(*b"REVS", 32),
        FieldEntry::Named(*b"FUNC", 32),
        FieldEntry::Named(*b"FARG", page_bits - 96),
    ];
    field("NRAM", call).to_aml_bytes(&mut out);
    field("NRAM", vec![FieldEntry::Named(*b"RLEN", 32), FieldEntry::Named(*b"ODAT", page_bits - 32)])
        .to_aml_bytes(&mut out);
    out
}

/// `Method(NCAL, 5, Serialized)`: `_DSM`'s four arguments and the caller's handle (0 for the root).
fn common_dsm() -> Vec<u8> {
    let (uuid, rev, func, pkg, handle) = (&Arg(0), &Arg(1), &Arg(2), &Arg(3), &Arg(4));
    let (expected, size, element, input) = (&Local(0), &Local(1), &Local(2), &Local(3));
    let (data, answer) = (&Local(5), &Local(7));
    let zero = &0u8;

    let root_uuid = Uuid::new(ROOT_DSM_UUID);
    let dimm_uuid = Uuid::new(DIMM_DSM_UUID);
    let store_root = Store::new(expected, &root_uuid);
    let store_dimm = Store::new(expected, &dimm_uuid);
    let is_root = Equal::new(handle, zero);
    let pick_root = If::new(&is_root, vec![&store_root]);
    let pick_dimm = Else::new(vec![&store_dimm]);

    // An unknown UUID: function 0 says "no functions", any other "not supported".
    let none = BufferData::new(vec![0]);
    let unsupported = BufferData::new(vec![1]);
    let ret_none = Return::new(&none);
    let ret_unsupported = Return::new(&unsupported);
    let is_query = Equal::new(func, zero);
    let query = If::new(&is_query, vec![&ret_none]);
    let wrong_uuid = NotEqual::new(uuid, expected);
    let refuse = If::new(&wrong_uuid, vec![&query, &ret_unsupported]);

    let set_handle = Store::new(&HDLE, handle);
    let set_rev = Store::new(&REVS, rev);
    let set_func = Store::new(&FUNC, func);

    // Arg3 is a package holding one buffer: copy that buffer into FARG.
    let four = &4u8;
    let one = &1u8;
    let pkg_type = ObjectType::new(pkg);
    let pkg_size = SizeOf::new(pkg);
    let is_package = Equal::new(&pkg_type, four);
    let one_element = Equal::new(&pkg_size, one);
    let index = Index::new(element, pkg, zero);
    let deref = DerefOf(element);
    let take = Store::new(input, &deref);
    let copy = Store::new(&FARG, input);
    let inner = If::new(&one_element, vec![&index, &take, &copy]);
    let copy_input = If::new(&is_package, vec![&inner]);

    let page = &NVDIMM_DSM_PAGE;
    let ring = Store::new(&NTFI, page);
    // The answer: RLEN counts itself, so the payload is the first RLEN - 4 bytes of ODAT. (ODAT is read
    // into a local first: a field read gives a buffer, and Mid wants one.)
    let minus = Subtract::new(size, &RLEN, four);
    let whole = Store::new(data, &ODAT);
    let cut = Mid::new(data, zero, size, answer);
    let ret = Return::new(answer);

    let body: Vec<&dyn Aml> = vec![
        &pick_root,
        &pick_dimm,
        &refuse,
        &set_handle,
        &set_rev,
        &set_func,
        &copy_input,
        &ring,
        &minus,
        &whole,
        &cut,
        &ret,
    ];
    to_bytes(&Method::new("NCAL".into(), 5, true, body))
}

/// A NameSeg as a name reference (acpi_tables' `Path` also works, but needs a String each time).
struct Path4([u8; 4]);

const HDLE: Path4 = Path4(*b"HDLE");
const REVS: Path4 = Path4(*b"REVS");
const FUNC: Path4 = Path4(*b"FUNC");
const FARG: Path4 = Path4(*b"FARG");
const NTFI: Path4 = Path4(*b"NTFI");
const RLEN: Path4 = Path4(*b"RLEN");
const ODAT: Path4 = Path4(*b"ODAT");

impl Aml for Path4 {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// `Method(_DSM, 4) { Return(NCAL(Arg0, Arg1, Arg2, Arg3, handle)) }`.
fn device_dsm(handle: u32) -> Vec<u8> {
    let call = MethodCall::new("NCAL".into(), vec![&Arg(0), &Arg(1), &Arg(2), &Arg(3), &handle]);
    to_bytes(&Method::new("_DSM".into(), 4, false, vec![&Return::new(&call)]))
}

/// Bytes already encoded, as one AML object.
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// `Device(NVDR) { Name(_HID, "ACPI0012"); <mailbox>; NCAL; _DSM; Device(NVxx) { Name(_ADR, handle);
/// _DSM } ... }` for `regions`, with the DIMM devices in slot order. A DIMM with a label area
/// ([`NvdimmRegion::labels`]) also gets `_LSI`, `_LSR` and `_LSW` after its `_DSM`, and then the root
/// device has the methods they call (`NLSI`, `NLSR`, `NLSW`, after its `_DSM`).
///
/// Meant for the regions [`super::nfit()`] accepted, so that every NFIT device handle has its device. Should
/// it get others anyway, it still emits loadable AML: a repeated slot gets one device, and a slot of
/// [`MAX_NVDIMM_SLOTS`] or more, which no NameSeg of this scheme can name, gets none (with a warning).
pub fn nvdimm_root_aml(regions: &[NvdimmRegion]) -> Vec<u8> {
    let label_slots: Vec<u16> = regions.iter().filter(|r| r.labels).map(|r| r.slot).collect();
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

    let dimms: Vec<(String, Name, Raw)> = slots
        .iter()
        .map(|&slot| {
            let handle = nvdimm_handle(slot);
            let mut methods = device_dsm(handle);
            if label_slots.contains(&slot) {
                methods.extend(label::dimm_label_methods(handle));
            }
            (child_name(slot), Name::new("_ADR".into(), &handle), Raw(methods))
        })
        .collect();
    let dimm_devices: Vec<Device> = dimms
        .iter()
        .map(|(name, adr, methods)| Device::new(name.as_str().into(), vec![adr as &dyn Aml, methods]))
        .collect();
    let hid = Name::new("_HID".into(), &NVDIMM_ROOT_HID);
    let mailbox = Raw(mailbox_fields());
    let ncal = Raw(common_dsm());
    let root_dsm = Raw(device_dsm(0));
    let any_labels = slots.iter().any(|s| label_slots.contains(s));
    let helpers = Raw(if any_labels { label::label_method_helpers() } else { Vec::new() });
    let mut children: Vec<&dyn Aml> = vec![&hid, &mailbox, &ncal, &root_dsm, &helpers];
    children.extend(dimm_devices.iter().map(|d| d as &dyn Aml));
    to_bytes(&Device::new("NVDR".into(), children))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::{assert_header, find, labelled, pkg_length, region};
    use super::super::{dsdt, DsdtConfig};
    use super::*;

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

    /// The Device object named `name` inside `aml`.
    fn child<'a>(aml: &'a [u8], name: &[u8; 4]) -> &'a [u8] {
        let at = (0..aml.len() - 6)
            .find(|&i| {
                aml[i..i + 2] == [0x5b, 0x82] && {
                    let (_, used) = pkg_length(&aml[i + 2..]);
                    aml.get(i + 2 + used..i + 6 + used) == Some(&name[..])
                }
            })
            .unwrap_or_else(|| panic!("no device {}", String::from_utf8_lossy(name)));
        let (len, _) = pkg_length(&aml[at + 2..]);
        &aml[at..at + 2 + len]
    }

    /// `Method(_DSM, 4, NotSerialized) { Return(NCAL(Arg0, Arg1, Arg2, Arg3, handle)) }` (ACPI 6.5,
    /// 20.2.5.2: MethodOp 0x14, flags 4 = four arguments; ReturnOp 0xa4; Arg0-3 are 0x68-0x6b).
    fn dsm_bytes(handle: u32) -> Vec<u8> {
        let body = [&b"_DSM\x04\xa4NCAL\x68\x69\x6a\x6b"[..], &aml_integer(handle)].concat();
        [&[0x14, body.len() as u8 + 1][..], &body].concat()
    }

    #[test]
    fn one_region_root_and_dimm_devices() {
        let aml = nvdimm_root_aml(&[region(0)]);
        let (name, body) = device(&aml);
        assert_eq!(name, b"NVDR");
        assert!(body.starts_with(b"\x08_HID\x0dACPI0012\x00"), "_HID string first");
        let dimm = child(&aml, b"NV00");
        let (_, terms) = device(dimm);
        assert_eq!(terms, [&b"\x08_ADR\x01"[..], &dsm_bytes(1)].concat(), "_ADR = handle 1, then _DSM");
        assert!(aml.ends_with(dimm), "the DIMM devices come last");
        assert!(find(body, &dsm_bytes(0)).is_some(), "the root's _DSM passes handle 0");
    }

    #[test]
    fn the_mailbox_is_the_page_and_port_the_device_serves() {
        let aml = nvdimm_root_aml(&[region(0)]);
        // OperationRegion (ExtOp 0x80): name, space (1 SystemIO, 0 SystemMemory), offset, length.
        let port = [&b"\x5b\x80NPIO\x01\x0b"[..], &NVDIMM_DSM_PORT.to_le_bytes(), b"\x0a\x04"].concat();
        assert!(find(&aml, &port).is_some(), "NPIO at the doorbell port");
        let page =
            [&b"\x5b\x80NRAM\x00\x0c"[..], &(NVDIMM_DSM_PAGE as u32).to_le_bytes(), b"\x0b\x00\x10"].concat();
        assert!(find(&aml, &page).is_some(), "NRAM is the 4 KiB mailbox page");
        // Field flags 0x03: DWordAcc, NoLock, Preserve; the fields' bit lengths as PkgLengths.
        assert!(find(&aml, b"NPIO\x03NTFI\x20").is_some());
        let call = b"NRAM\x03HDLE\x20REVS\x20FUNC\x20FARG";
        let at = find(&aml, call).unwrap() + call.len();
        assert_eq!(pkg_length(&aml[at..]).0, DSM_PAGE_SIZE * 8 - 96, "FARG fills the page after 12 bytes");
        let answer = b"NRAM\x03RLEN\x20ODAT";
        let at = find(&aml, answer).unwrap() + answer.len();
        assert_eq!(pkg_length(&aml[at..]).0, DSM_PAGE_SIZE * 8 - 32, "ODAT fills the page after RLEN");
        // The doorbell is rung with the page's address: Store (0x70) of the DWord to NTFI.
        let ring = [&[0x70, 0x0c][..], &(NVDIMM_DSM_PAGE as u32).to_le_bytes(), b"NTFI"].concat();
        assert!(find(&aml, &ring).is_some());
    }

    #[test]
    fn ncal_knows_the_root_and_dimm_uuids_in_tououid_byte_order() {
        let aml = nvdimm_root_aml(&[region(0)]);
        // ToUUID's mixed-endian layout: the first three groups little-endian, the rest as written.
        let dimm =
            [0x30, 0xac, 0x09, 0x43, 0x11, 0x0d, 0xe4, 0x11, 0x91, 0x91, 0x08, 0x00, 0x20, 0x0c, 0x9a, 0x66];
        let root =
            [0xa4, 0xe7, 0x10, 0x2f, 0x91, 0x9e, 0xe4, 0x11, 0x89, 0xd3, 0x12, 0x3b, 0x93, 0xf7, 0x5c, 0xba];
        assert!(find(&aml, &dimm).is_some(), "the DIMM family's UUID");
        assert!(find(&aml, &root).is_some(), "the root device's UUID");
        // NCAL is a Method (0x14, PkgLength, name), serialized with five arguments: flags 0x0d.
        let ncal = find(&aml, b"NCAL\x0d").unwrap();
        let is_method =
            (1..=3).any(|used| aml[ncal - 1 - used] == 0x14 && pkg_length(&aml[ncal - used..]).1 == used);
        assert!(is_method, "NCAL must be declared as a serialized method of five arguments");
    }

    #[test]
    fn one_device_per_region_in_slot_order_with_handle_as_adr() {
        let slots = [0xff, 0x1f, 0, 1];
        let regions: Vec<_> = slots.iter().map(|&s| region(s)).collect();
        let aml = nvdimm_root_aml(&regions);
        let mut last = 0;
        // Handles 1, 2, 0x20, 0x100: OneOp, BytePrefix twice, WordPrefix, which is what acpi_tables emits
        // (the smallest encoding, as QEMU's aml_int does too).
        for (slot, name) in [(0u16, b"NV00"), (1, b"NV01"), (0x1f, b"NV1F"), (0xff, b"NVFF")] {
            let dev = child(&aml, name);
            let at = find(&aml, dev).unwrap();
            assert!(at > last, "slot {slot} in order");
            last = at;
            let handle = u32::from(slot) + 1;
            let adr = [&b"\x08_ADR"[..], &aml_integer(handle)].concat();
            assert_eq!(device(dev).1, [adr, dsm_bytes(handle)].concat(), "slot {slot}: _ADR and _DSM");
        }
        assert_eq!(aml.windows(4).filter(|w| w == b"_ADR").count(), 4);
    }

    #[test]
    fn large_handles_use_wider_integer_encodings() {
        assert_eq!(aml_integer(0x1_0000), [0x0c, 0x00, 0x00, 0x01, 0x00]);
        let aml = nvdimm_root_aml(&[region(0xff)]);
        assert!(find(&aml, b"NVFF\x08_ADR\x0b\x00\x01").is_some(), "handle 0x100 as WordPrefix");
    }

    #[test]
    fn no_regions_gives_a_root_device_with_the_mailbox_only() {
        let aml = nvdimm_root_aml(&[]);
        let (name, body) = device(&aml);
        assert_eq!(name, b"NVDR");
        assert!(body.starts_with(b"\x08_HID\x0dACPI0012\x00"));
        assert!(body.ends_with(&dsm_bytes(0)), "the root's _DSM, and no DIMM device");
    }

    #[test]
    fn invalid_slots_still_give_loadable_aml() {
        let aml = nvdimm_root_aml(&[region(2), region(2), region(256)]);
        device(&aml);
        assert_eq!(aml.windows(4).filter(|w| w == b"_ADR").count(), 1);
        assert!(find(&aml, b"NV02").is_some());
    }

    #[test]
    fn label_methods_only_on_the_dimms_with_a_label_area() {
        let aml = nvdimm_root_aml(&[region(0), labelled(1), region(2)]);
        for slot in [0u16, 2] {
            let name = child_name(slot);
            let (_, terms) = device(child(&aml, name.as_bytes().try_into().unwrap()));
            let handle = u32::from(slot) + 1;
            let adr = [&b"\x08_ADR"[..], &aml_integer(handle)].concat();
            assert_eq!(terms, [adr, dsm_bytes(handle)].concat(), "{name}: _ADR and _DSM only");
        }
        let (_, terms) = device(child(&aml, b"NV01"));
        let with_labels = [&b"\x08_ADR\x0a\x02"[..], &dsm_bytes(2), &label::dimm_label_methods(2)].concat();
        assert_eq!(terms, with_labels, "_ADR, _DSM, then _LSI, _LSR, _LSW");
        // The helpers once, in the root device after its _DSM and before the first DIMM.
        let helpers = label::label_method_helpers();
        let at = find(&aml, &[&dsm_bytes(0)[..], &helpers].concat()).unwrap();
        assert!(at < find(&aml, child(&aml, b"NV00")).unwrap());
        assert_eq!(aml.windows(helpers.len()).filter(|w| *w == &helpers[..]).count(), 1);
        assert_eq!(aml.windows(4).filter(|w| w.starts_with(b"_LS")).count(), 3);
    }

    #[test]
    fn without_a_label_area_the_aml_has_no_label_methods() {
        let regions = [region(0), region(3)];
        let plain = nvdimm_root_aml(&regions);
        for name in [&b"_LSI"[..], b"_LSR", b"_LSW", b"NLSI", b"NLSR", b"NLSW"] {
            assert!(find(&plain, name).is_none(), "{}", String::from_utf8_lossy(name));
        }
        let (_, body) = device(&plain);
        assert!(body.ends_with(child(&plain, b"NV03")));
    }

    #[test]
    fn goes_into_a_valid_dsdt() {
        for second in [region(1), labelled(1)] {
            let aml = nvdimm_root_aml(&[region(0), second]);
            let table = dsdt(&DsdtConfig { extra_sb_aml: aml.clone(), ..Default::default() });
            assert_header(&table, b"DSDT", 2);
            assert!(table.ends_with(&aml), "the root device closes \\_SB_, which closes the table");
            assert!(find(&table, b"\\_SB_").unwrap() < table.len() - aml.len());
        }
    }
}
