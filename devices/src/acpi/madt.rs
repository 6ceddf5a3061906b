//! The Multiple APIC Description Table (ACPI 6.5, 5.2.12), signature "APIC": the interrupt controllers KVM's
//! in-kernel irqchip gives the guest (one local APIC per vCPU, one IOAPIC, the 8259 pair) and how the ISA
//! interrupts are wired to them.

use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};

use super::{new_sdt, to_bytes, AcpiError};
use crate::layout::{IOAPIC_ADDR, LAPIC_ADDR, MAX_VCPUS};

/// MADT revision of ACPI 6.5.
const MADT_REVISION: u8 = 6;
/// Header plus the local interrupt controller address and the flags.
const MADT_FIXED_LEN: u32 = 44;
const LOCAL_APIC_ADDRESS_OFFSET: usize = 36;
const FLAGS_OFFSET: usize = 40;
/// MADT flag: the machine also has dual 8259s (KVM_CREATE_IRQCHIP creates them), so an OS must mask
/// them before using the APICs.
const PCAT_COMPAT: u32 = 1 << 0;

/// The IOAPIC's id: the first one no vCPU can have, as local APIC ids are the vCPU indices below
/// [`MAX_VCPUS`]. APIC ids share one namespace on the old APIC bus, and this keeps the table free of
/// duplicates. KVM's IOAPIC id register still resets to 0: 64-bit Linux takes the MADT's id as long as no
/// other IOAPIC claims it, without reading or rewriting the register.
pub const IOAPIC_ID: u8 = MAX_VCPUS;

// The MADT holds 32-bit MMIO addresses.
const _: () = assert!(LAPIC_ADDR <= u32::MAX as u64);
const _: () = assert!(IOAPIC_ADDR <= u32::MAX as u64);

/// Interrupt Source Override (type 2, ACPI 6.5 5.2.12.5) routing the PIT's ISA IRQ 0 to GSI 2, the PC
/// wiring QEMU also declares. Flags 0: polarity and trigger as the ISA bus defines them (active high,
/// edge). Every other ISA IRQ maps 1:1 onto its GSI without an entry.
///
/// KVM's default GSI routing sends GSI 0 (where KVM_CREATE_PIT2 injects) to IOAPIC pin 0, not 2; QEMU
/// reroutes it with KVM_SET_GSI_ROUTING to make this entry true. Linux on a hardware-reduced machine
/// sets up neither the PIT nor the 8259s, so for it the entry is never exercised.
fn pit_override() -> [u8; 10] {
    const ISA_BUS: u8 = 0;
    const PIT_ISA_IRQ: u8 = 0;
    const PIT_GSI: u32 = 2;
    const CONFORMS_TO_BUS: u16 = 0;
    let mut s = [0u8; 10];
    s[0] = 2;
    s[1] = s.len() as u8;
    s[2] = ISA_BUS;
    s[3] = PIT_ISA_IRQ;
    s[4..8].copy_from_slice(&PIT_GSI.to_le_bytes());
    s[8..10].copy_from_slice(&CONFORMS_TO_BUS.to_le_bytes());
    s
}

/// Local APIC NMI (type 4, ACPI 6.5 5.2.12.7): every processor's LINT1 is its NMI input, the PC
/// convention Linux expects (it warns if NMI is on any other pin).
fn lint1_nmi_all_cpus() -> [u8; 6] {
    const ALL_PROCESSORS: u8 = 0xff;
    const CONFORMS_TO_BUS: u16 = 0;
    const LINT1: u8 = 1;
    let mut s = [0u8; 6];
    s[0] = 4;
    s[1] = s.len() as u8;
    s[2] = ALL_PROCESSORS;
    s[3..5].copy_from_slice(&CONFORMS_TO_BUS.to_le_bytes());
    s[5] = LINT1;
    s
}

/// The local APIC ids of `cpus` vCPUs, in vCPU order: each vCPU's index, because KVM starts a vCPU's
/// APIC id at its vCPU id and the VMM's CPUID reports the same. Every table that names processors takes
/// them from here, so the MADT and the SRAT cannot disagree.
pub(super) fn apic_ids(cpus: u8) -> Result<std::ops::Range<u8>, AcpiError> {
    if !(1..=MAX_VCPUS).contains(&cpus) {
        return Err(AcpiError::InvalidCpuCount { cpus });
    }
    Ok(0..cpus)
}

/// The MADT for `cpus` vCPUs, whose ACPI processor uids are their local APIC ids ([`apic_ids`]).
///
/// Built on `Sdt` because `acpi_tables::madt::MADT` cannot set the flags and has no x86 override or NMI
/// structures; its typed local APIC and IOAPIC structures are used as they fit.
pub fn madt(cpus: u8) -> Result<Vec<u8>, AcpiError> {
    let ids = apic_ids(cpus)?;
    let mut sdt = new_sdt(*b"APIC", MADT_FIXED_LEN, MADT_REVISION);
    sdt.write_u32(LOCAL_APIC_ADDRESS_OFFSET, LAPIC_ADDR as u32);
    sdt.write_u32(FLAGS_OFFSET, PCAT_COMPAT);
    for id in ids {
        sdt.append_slice(&to_bytes(&ProcessorLocalApic::new(id, id, EnabledStatus::Enabled)));
    }
    sdt.append_slice(&to_bytes(&IoApic::new(IOAPIC_ID, IOAPIC_ADDR as u32, 0)));
    sdt.append_slice(&pit_override());
    sdt.append_slice(&lint1_nmi_all_cpus());
    Ok(sdt.as_slice().to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_util::{assert_header, subtables, u16_at, u32_at};
    use super::*;

    /// The interrupt controller structures after the 44-byte fixed part, as (type, bytes) pairs.
    fn structures(b: &[u8]) -> Vec<(u8, &[u8])> {
        subtables(b, 44).into_iter().map(|s| (s[0], s)).collect()
    }

    #[test]
    fn header_and_fixed_fields() {
        let b = madt(2).unwrap();
        assert_header(&b, b"APIC", 6);
        assert_eq!(u32_at(&b, 36), 0xfee0_0000, "local APIC address");
        assert_eq!(u32_at(&b, 40), 1, "flags: PCAT_COMPAT only");
    }

    #[test]
    fn one_enabled_local_apic_per_cpu() {
        for cpus in 1..=8u8 {
            let b = madt(cpus).unwrap();
            assert_header(&b, b"APIC", 6);
            assert_eq!(b.len(), 44 + 8 * cpus as usize + 12 + 10 + 6);
            let lapics: Vec<&[u8]> =
                structures(&b).into_iter().filter(|(t, _)| *t == 0).map(|(_, s)| s).collect();
            assert_eq!(lapics.len(), cpus as usize);
            for (i, s) in lapics.iter().enumerate() {
                assert_eq!(s.len(), 8, "LAPIC {i} length");
                assert_eq!(s[2] as usize, i, "LAPIC {i} ACPI processor uid");
                assert_eq!(s[3] as usize, i, "LAPIC {i} APIC id");
                assert_eq!(u32_at(s, 4), 1, "LAPIC {i} flags: enabled");
            }
            // The local APICs come first, in uid order, right after the fixed part.
            assert_eq!(b[44], 0);
            assert_eq!(b[44 + 8 * (cpus as usize - 1)], 0);
        }
    }

    #[test]
    fn ioapic_override_and_nmi() {
        let cpus = 3;
        let b = madt(cpus).unwrap();
        let s = structures(&b);
        assert_eq!(s.len(), cpus as usize + 3);
        let types: Vec<u8> = s.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, [0, 0, 0, 1, 2, 4]);

        let ioapic = s[3].1;
        assert_eq!(ioapic.len(), 12);
        assert_eq!(ioapic[2], 8, "IOAPIC id");
        assert!(ioapic[2] >= 8, "IOAPIC id must not collide with any local APIC id (0..8)");
        assert_eq!(ioapic[3], 0, "reserved");
        assert_eq!(u32_at(ioapic, 4), 0xfec0_0000, "IOAPIC address");
        assert_eq!(u32_at(ioapic, 8), 0, "GSI base");

        let iso = s[4].1;
        assert_eq!(iso.len(), 10);
        assert_eq!(iso[2], 0, "bus: ISA");
        assert_eq!(iso[3], 0, "source: ISA IRQ 0");
        assert_eq!(u32_at(iso, 4), 2, "GSI 2");
        assert_eq!(u16_at(iso, 8), 0, "flags: conforms to bus");

        let nmi = s[5].1;
        assert_eq!(nmi.len(), 6);
        assert_eq!(nmi[2], 0xff, "all processors");
        assert_eq!(u16_at(nmi, 3), 0, "flags");
        assert_eq!(nmi[5], 1, "LINT1");
    }

    #[test]
    fn rejects_cpu_counts_outside_1_to_max() {
        for cpus in [0u8, 9, 255] {
            assert_eq!(madt(cpus), Err(AcpiError::InvalidCpuCount { cpus }));
        }
        assert!(madt(1).is_ok());
        assert!(madt(8).is_ok());
    }
}
