//! The Differentiated System Description Table (ACPI 6.5, 5.2.11.1): the AML namespace the guest's ACPI
//! interpreter loads. It declares the S5 sleep type that power-off writes to the sleep control register,
//! and under `\_SB_` the devices Linux cannot find by probing: COM1 and the pvpanic port.

use acpi_tables::aml::{Device, EISAName, Interrupt, Name, Package, Path, ResourceTemplate, Scope, IO};
use acpi_tables::{Aml, AmlSink};

use super::{new_sdt, to_bytes, HEADER_LEN};
use crate::layout::{ACPI_S5_SLEEP_TYPE, COM1_IRQ, COM1_LEN, COM1_PORT, PVPANIC_PORT};

/// DSDT revision 2: AML integers are 64 bits wide.
const DSDT_REVISION: u8 = 2;

/// `_STA` of a device that is present, enabled, shown in the UI and working.
const STA_PRESENT: u8 = 0x0f;

// The I/O resource descriptor stores a range's length in one byte.
const _: () = assert!(COM1_LEN <= u8::MAX as u16);

/// What goes into the DSDT beyond the fixed parts (`\_S5_` and the pvpanic device).
///
/// Build it with struct update syntax (`DsdtConfig { com1: false, ..Default::default() }`) so callers keep
/// compiling when fields are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsdtConfig {
    /// Describe COM1 (`PNP0501` at [`COM1_PORT`], IRQ [`COM1_IRQ`]). Linux skips its legacy ISA IRQ setup
    /// on a hardware-reduced machine (it assumes no 8259), so the UART's interrupt reaches the 8250
    /// driver through this device's `_CRS`.
    pub com1: bool,
    /// AML term objects (typically `Device(...)` definitions) placed inside `\_SB_` after the built-in
    /// devices, so modules that describe their own devices (the NVDIMM root device) need not edit this
    /// file. Must be well-formed AML; it is copied verbatim.
    pub extra_sb_aml: Vec<u8>,
}

impl Default for DsdtConfig {
    /// COM1 on, as the guest interface always has it; nothing extra.
    fn default() -> Self {
        Self { com1: true, extra_sb_aml: Vec::new() }
    }
}

/// Already-encoded AML, spliced into a term list.
struct RawAml<'a>(&'a [u8]);

impl Aml for RawAml<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(self.0);
    }
}

/// `Device(COM1)`: a 16550A the 8250_pnp driver binds to, with its I/O range and edge-triggered,
/// active-high, exclusive ISA interrupt. The interrupt uses the Extended Interrupt descriptor, which Linux's
/// resource parser (acpi_dev_resource_interrupt) accepts like the short IRQ form.
fn com1_device() -> Vec<u8> {
    let hid = Name::new("_HID".into(), &EISAName::new("PNP0501"));
    let uid = Name::new("_UID".into(), &0u8);
    let sta = Name::new("_STA".into(), &STA_PRESENT);
    let io = IO::new(COM1_PORT, COM1_PORT, 1, COM1_LEN as u8);
    let irq = Interrupt::new(true, true, false, false, COM1_IRQ);
    let crs = Name::new("_CRS".into(), &ResourceTemplate::new(vec![&io, &irq]));
    to_bytes(&Device::new("COM1".into(), vec![&hid, &uid, &sta, &crs]))
}

/// `Device(PEVT)`: the pvpanic port, under QEMU's `_HID` and device name so Linux's pvpanic driver binds
/// to it unchanged.
fn pvpanic_device() -> Vec<u8> {
    let hid = Name::new("_HID".into(), &"QEMU0001");
    let sta = Name::new("_STA".into(), &STA_PRESENT);
    let io = IO::new(PVPANIC_PORT, PVPANIC_PORT, 1, 1);
    let crs = Name::new("_CRS".into(), &ResourceTemplate::new(vec![&io]));
    to_bytes(&Device::new("PEVT".into(), vec![&hid, &sta, &crs]))
}

/// The DSDT described by `cfg`.
pub fn dsdt(cfg: &DsdtConfig) -> Vec<u8> {
    // Package {SLP_TYPa, SLP_TYPb, reserved, reserved}. A hardware-reduced machine has no PM1b block, so
    // only SLP_TYPa matters: Linux shifts it into the sleep control register's SLP_TYP field on power-off.
    let s5 = Name::new(Path::new("\\_S5_"), &Package::new(vec![&ACPI_S5_SLEEP_TYPE, &0u8, &0u8, &0u8]));

    let com1 = if cfg.com1 { com1_device() } else { Vec::new() };
    let pvpanic = pvpanic_device();
    let com1 = RawAml(&com1);
    let pvpanic = RawAml(&pvpanic);
    let extra = RawAml(&cfg.extra_sb_aml);
    let sb = Scope::new(Path::new("\\_SB_"), vec![&com1, &pvpanic, &extra]);

    let mut table = new_sdt(*b"DSDT", HEADER_LEN, DSDT_REVISION);
    table.append_slice(&to_bytes(&s5));
    table.append_slice(&to_bytes(&sb));
    table.as_slice().to_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::{assert_header, find, pkg_length};
    use super::*;

    /// The bytes of the object starting with `open` (e.g. ScopeOp + PkgLength), from its opcode to the
    /// end its PkgLength gives, located by `name` right after the PkgLength.
    fn object<'a>(aml: &'a [u8], open: &[u8], name: &[u8]) -> &'a [u8] {
        let name_at = find(aml, name).unwrap_or_else(|| panic!("{name:?} not found"));
        // The PkgLength is 1 to 4 bytes; find the one right after `open` that ends where `name` starts.
        for pl_bytes in 1..=4 {
            let Some(op_at) = name_at.checked_sub(open.len() + pl_bytes) else {
                continue;
            };
            if &aml[op_at..op_at + open.len()] != open {
                continue;
            }
            let (len, used) = pkg_length(&aml[op_at + open.len()..]);
            if used == pl_bytes {
                let end = op_at + open.len() + len;
                assert!(end <= aml.len(), "object overruns the table");
                return &aml[op_at..end];
            }
        }
        panic!("no object opening {open:?} before {name:?}");
    }

    fn aml(cfg: &DsdtConfig) -> Vec<u8> {
        dsdt(cfg)[36..].to_vec()
    }

    #[test]
    fn header() {
        for com1 in [true, false] {
            let b = dsdt(&DsdtConfig { com1, ..Default::default() });
            assert_header(&b, b"DSDT", 2);
        }
    }

    #[test]
    fn s5_package_declares_sleep_type_5() {
        let a = aml(&DsdtConfig::default());
        let at = find(&a, b"\\_S5_").unwrap();
        assert_eq!(a[at - 1], 0x08, "NameOp");
        let pkg = &a[at + 5..];
        assert_eq!(pkg[0], 0x12, "PackageOp");
        let (len, used) = pkg_length(&pkg[1..]);
        assert_eq!(pkg[1 + used], 4, "NumElements");
        assert_eq!(&pkg[2 + used..4 + used], &[0x0a, 0x05], "first element: BytePrefix 5");
        assert_eq!(&pkg[4 + used..1 + len], &[0x00, 0x00, 0x00], "then three Zeros");
    }

    #[test]
    fn com1_device_contents() {
        let a = aml(&DsdtConfig::default());
        let dev = object(&a, &[0x5b, 0x82], b"COM1");
        let hid = find(dev, b"_HID").unwrap();
        assert_eq!(&dev[hid + 4..hid + 9], &[0x0c, 0x41, 0xd0, 0x05, 0x01], "EISAID(PNP0501)");
        assert!(find(dev, &[b'_', b'U', b'I', b'D', 0x00]).is_some(), "_UID Zero");
        assert!(find(dev, &[b'_', b'S', b'T', b'A', 0x0a, 0x0f]).is_some(), "_STA 0x0F");
        // IO(Decode16, 0x3F8, 0x3F8, 1, 8)
        let io = [0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08];
        let io_at = find(dev, &io).unwrap();
        // Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) {4}, right after the IO descriptor.
        let irq = [0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00];
        assert_eq!(&dev[io_at + 8..io_at + 17], &irq);
        assert_eq!(&dev[io_at + 17..io_at + 19], &[0x79, 0x00], "EndTag");
    }

    #[test]
    fn pvpanic_device_contents() {
        let a = aml(&DsdtConfig::default());
        let dev = object(&a, &[0x5b, 0x82], b"PEVT");
        let hid = find(dev, b"_HID").unwrap();
        assert_eq!(&dev[hid + 4..hid + 14], b"\x0dQEMU0001\x00", "_HID string");
        assert!(find(dev, &[b'_', b'S', b'T', b'A', 0x0a, 0x0f]).is_some(), "_STA 0x0F");
        // IO(Decode16, 0x505, 0x505, 1, 1), then EndTag.
        let io = [0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01, 0x79, 0x00];
        assert!(find(dev, &io).is_some());
    }

    #[test]
    fn devices_live_in_sb_scope_which_ends_the_table() {
        let a = aml(&DsdtConfig::default());
        let sb = object(&a, &[0x10], b"\\_SB_");
        assert_eq!(sb.as_ptr_range().end, a.as_ptr_range().end, "\\_SB_ runs to the end");
        assert!(find(sb, b"COM1").is_some());
        assert!(find(sb, b"PEVT").is_some());
    }

    #[test]
    fn without_com1() {
        let a = aml(&DsdtConfig { com1: false, ..Default::default() });
        assert!(find(&a, &[0x41, 0xd0, 0x05, 0x01]).is_none(), "no PNP0501");
        assert!(find(&a, &[0x47, 0x01, 0xf8, 0x03]).is_none(), "no 0x3F8 range");
        assert!(find(&a, b"COM1").is_none());
        assert!(find(&a, b"QEMU0001").is_some(), "pvpanic stays");
    }

    #[test]
    fn extra_aml_goes_inside_sb() {
        // Device(NVDR) {} as raw AML: DeviceOp, PkgLength 5, NameSeg.
        let extra = vec![0x5b, 0x82, 0x05, b'N', b'V', b'D', b'R'];
        let a = aml(&DsdtConfig { extra_sb_aml: extra.clone(), ..Default::default() });
        let sb = object(&a, &[0x10], b"\\_SB_");
        assert!(sb.ends_with(&extra), "extra AML is the last thing in \\_SB_");
        assert_header(&dsdt(&DsdtConfig { extra_sb_aml: extra, ..Default::default() }), b"DSDT", 2);
    }
}
