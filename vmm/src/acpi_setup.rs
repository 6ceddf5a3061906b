//! ACPI assembly: lays the tables the device crate builds (DSDT, FADT, MADT, SRAT, NFIT, XSDT, RSDP) out
//! in the guest's ACPI area below 1 MiB and writes them there.

use daxvmm_devices::acpi::{
    dsdt, fadt, fault_injector_aml, madt, nfit, nvdimm_root_aml, rsdp, srat, virtio_mmio_aml, xsdt,
    AcpiError, DsdtConfig, NvdimmRegion, VirtioMmioDevice,
};
use daxvmm_devices::layout::{ACPI_RSDP_ADDR, ACPI_TABLES_END, FAULT_INJECTOR_BASE, FAULT_INJECTOR_LEN};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Tables start after the RSDP, 64-byte aligned as firmware usually places them.
const TABLES_START: u64 = ACPI_RSDP_ADDR + 0x40;

/// Errors assembling the ACPI tables.
#[derive(Debug, Error)]
pub enum AcpiSetupError {
    /// A builder refused its input.
    #[error("building ACPI tables: {0}")]
    Build(#[from] AcpiError),
    /// The tables outgrew their area.
    #[error("ACPI tables need {needed:#x} bytes but only {room:#x} are reserved for them")]
    TooLarge {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        room: u64,
    },
    /// Guest memory rejected the write.
    #[error("cannot write ACPI tables into guest memory: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
}

/// Where each table went, for tests and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiLayout {
    /// (signature, address, length) in the order written.
    pub tables: Vec<([u8; 4], u64, usize)>,
}

fn align64(x: u64) -> u64 {
    (x + 63) & !63
}

/// Builds the tables for a machine with `cpus` vCPUs, the guest RAM `gm`, the NFIT NVDIMMs `nvdimms` (an
/// NFIT and the NVDIMM root device in the DSDT when there are any) and the virtio-mmio transports `virtio`
/// (DSDT devices), and writes them into `gm`; returns where they went.
pub fn write_tables(
    gm: &GuestMemoryMmap,
    cpus: u8,
    nvdimms: &[NvdimmRegion],
    virtio: &[VirtioMmioDevice],
) -> Result<AcpiLayout, AcpiSetupError> {
    let mut placed: Vec<([u8; 4], u64, Vec<u8>)> = Vec::new();
    let mut next = TABLES_START;
    let mut place = |sig: [u8; 4], bytes: Vec<u8>, placed: &mut Vec<_>| {
        let addr = next;
        next = align64(addr + bytes.len() as u64);
        placed.push((sig, addr, bytes));
        addr
    };
    // The fault injector is always there: a guest driver binds to it whether or not a schedule is armed.
    let mut extra_sb_aml = fault_injector_aml(FAULT_INJECTOR_BASE as u32, FAULT_INJECTOR_LEN as u32);
    if !nvdimms.is_empty() {
        extra_sb_aml.extend(nvdimm_root_aml(nvdimms));
    }
    extra_sb_aml.extend(virtio_mmio_aml(virtio));
    let dsdt_addr = place(*b"DSDT", dsdt(&DsdtConfig { com1: true, extra_sb_aml }), &mut placed);
    // The SRAT's RAM ranges are `gm`'s regions: `gm` holds guest RAM and nothing else (pmem has its own
    // mappings) and its regions are KVM's RAM slots, so the table describes exactly the RAM the guest has.
    // The low range spans the e820-reserved area below 1 MiB too, which is harmless: an SRAT range says
    // which node the addresses belong to, not that they are usable RAM.
    let ram: Vec<(u64, u64)> = gm.iter().map(|r| (r.start_addr().0, r.len())).collect();
    // Emitted whether or not there is pmem: one node is the truth either way, and Linux takes it.
    let mut xsdt_entries = vec![
        place(*b"FACP", fadt(dsdt_addr), &mut placed),
        place(*b"APIC", madt(cpus)?, &mut placed),
        place(*b"SRAT", srat(cpus, &ram)?, &mut placed),
    ];
    if !nvdimms.is_empty() {
        xsdt_entries.push(place(*b"NFIT", nfit(nvdimms)?, &mut placed));
    }
    let xsdt_addr = place(*b"XSDT", xsdt(&xsdt_entries), &mut placed);
    if next > ACPI_TABLES_END {
        return Err(AcpiSetupError::TooLarge {
            needed: next - ACPI_RSDP_ADDR,
            room: ACPI_TABLES_END - ACPI_RSDP_ADDR,
        });
    }
    gm.write_slice(&rsdp(xsdt_addr), GuestAddress(ACPI_RSDP_ADDR))?;
    for (_, addr, bytes) in &placed {
        gm.write_slice(bytes, GuestAddress(*addr))?;
    }
    Ok(AcpiLayout { tables: placed.into_iter().map(|(s, a, b)| (s, a, b.len())).collect() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read_u64(gm: &GuestMemoryMmap, addr: u64) -> u64 {
        gm.read_obj(GuestAddress(addr)).unwrap()
    }

    #[test]
    fn tables_are_linked_and_checksummed_in_memory() {
        let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let layout = write_tables(&gm, 2, &[], &[]).unwrap();
        let mut sig = [0u8; 8];
        gm.read_slice(&mut sig, GuestAddress(ACPI_RSDP_ADDR)).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
        let xsdt_addr = read_u64(&gm, ACPI_RSDP_ADDR + 24);
        let xsdt = layout.tables.iter().find(|t| &t.0 == b"XSDT").unwrap();
        assert_eq!(xsdt.1, xsdt_addr);
        // XSDT entries point at FACP, APIC and SRAT (even without pmem); the FADT's X_DSDT points at the
        // DSDT.
        assert_eq!(xsdt.2, 36 + 3 * 8, "three XSDT entries");
        let entries = [36, 44, 52].map(|off| read_u64(&gm, xsdt_addr + off));
        let mut sigs = Vec::new();
        for e in entries {
            let mut s = [0u8; 4];
            gm.read_slice(&mut s, GuestAddress(e)).unwrap();
            sigs.push(s);
        }
        assert_eq!(sigs, vec![*b"FACP", *b"APIC", *b"SRAT"]);
        let dsdt = read_u64(&gm, entries[0] + 140);
        let mut s = [0u8; 4];
        gm.read_slice(&mut s, GuestAddress(dsdt)).unwrap();
        assert_eq!(&s, b"DSDT");
        for (_, addr, len) in &layout.tables {
            let mut bytes = vec![0u8; *len];
            gm.read_slice(&mut bytes, GuestAddress(*addr)).unwrap();
            assert_eq!(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            assert_eq!(addr % 64, 0);
        }
        assert!(layout.tables.windows(2).all(|w| w[0].1 + w[0].2 as u64 <= w[1].1), "no overlap");
    }

    #[test]
    fn rejects_bad_cpu_count() {
        let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert!(matches!(write_tables(&gm, 0, &[], &[]), Err(AcpiSetupError::Build(_))));
    }

    #[test]
    fn nvdimms_add_an_nfit_and_the_root_device() {
        let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let nv = [NvdimmRegion {
            slot: 0,
            base: 1 << 32,
            size: 1 << 30,
            flush_hint: Some(0xfeb1_0000),
            labels: false,
        }];
        let layout = write_tables(&gm, 1, &nv, &[]).unwrap();
        let nfit = layout.tables.iter().find(|t| &t.0 == b"NFIT").unwrap();
        // The XSDT's fourth entry is the NFIT, after FACP, APIC and SRAT.
        let xsdt_addr = read_u64(&gm, ACPI_RSDP_ADDR + 24);
        assert_eq!(read_u64(&gm, xsdt_addr + 36 + 24), nfit.1);
        let dsdt = layout.tables.iter().find(|t| &t.0 == b"DSDT").unwrap();
        let mut bytes = vec![0u8; dsdt.2];
        gm.read_slice(&mut bytes, GuestAddress(dsdt.1)).unwrap();
        assert!(bytes.windows(8).any(|w| w == b"ACPI0012"));
        let without = write_tables(&gm, 1, &[], &[]).unwrap();
        assert!(without.tables.iter().all(|t| &t.0 != b"NFIT"));
    }

    /// Guest memory with RAM below 1 MiB and above 4 GiB, like a guest that has RAM on both sides of the
    /// 32-bit hole (scaled down: nothing of it is touched but the ACPI area).
    fn split_ram() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20), (GuestAddress(1 << 32), 2 << 20)])
            .unwrap()
    }

    /// The memory affinity structures (type 1) of the SRAT written into `gm`: (base, length, flags).
    fn srat_memory(gm: &GuestMemoryMmap, layout: &AcpiLayout) -> Vec<(u64, u64, u32)> {
        let srat = layout.tables.iter().find(|t| &t.0 == b"SRAT").unwrap();
        let mut b = vec![0u8; srat.2];
        gm.read_slice(&mut b, GuestAddress(srat.1)).unwrap();
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let mut out = Vec::new();
        let mut off = 48;
        while off < b.len() {
            if b[off] == 1 {
                out.push((u64_at(off + 8), u64_at(off + 16), u32_at(off + 28)));
            }
            off += usize::from(b[off + 1]);
        }
        out
    }

    #[test]
    fn srat_covers_gm_ram_and_not_pmem() {
        let gm = split_ram();
        let nv = [NvdimmRegion { slot: 3, base: 8 << 30, size: 1 << 30, flush_hint: None, labels: false }];
        let enabled = 1;
        let ram = [(0, 1 << 20, enabled), (1 << 32, 2 << 20, enabled)];
        // The NVDIMM names the SRAT's domain in its SPA range; a range of its own would cost a swiotlb.
        assert_eq!(srat_memory(&gm, &write_tables(&gm, 2, &nv, &[]).unwrap()), ram);
        assert_eq!(srat_memory(&gm, &write_tables(&gm, 1, &[], &[]).unwrap()), ram);
    }

    /// Every table daxvmm builds, as the guest gets them (RAM on both sides of the hole, two NVDIMMs, one
    /// with a flush hint, two virtio-mmio devices), goes through ACPICA's disassembler without an error or
    /// a warning.
    #[test]
    fn iasl_disassembles_every_table() {
        let gm = split_ram();
        let nv = [
            NvdimmRegion {
                slot: 0,
                base: 5 << 30,
                size: 1 << 30,
                flush_hint: Some(0xfeb1_0000),
                labels: false,
            },
            NvdimmRegion { slot: 1, base: 6 << 30, size: 1 << 30, flush_hint: None, labels: true },
        ];
        // The second DIMM has a label area, so the DSDT has the label methods too.
        let virtio: Vec<VirtioMmioDevice> = (0..2)
            .map(|i| VirtioMmioDevice {
                base: daxvmm_devices::layout::virtio_mmio_base(i) as u32,
                len: 0x200,
                gsi: daxvmm_devices::layout::VIRTIO_GSI_BASE + i as u32,
            })
            .collect();
        let layout = write_tables(&gm, 2, &nv, &virtio).unwrap();
        assert_eq!(layout.tables.len(), 6, "DSDT, FACP, APIC, SRAT, NFIT, XSDT");
        let dir = std::env::temp_dir().join(format!("daxvmm-iasl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (sig, addr, len) in &layout.tables {
            let mut bytes = vec![0u8; *len];
            gm.read_slice(&mut bytes, GuestAddress(*addr)).unwrap();
            let name = String::from_utf8_lossy(sig).to_lowercase();
            let file = dir.join(format!("{name}.dat"));
            std::fs::write(&file, &bytes).unwrap();
            let out = std::process::Command::new("iasl").arg("-d").arg(&file).current_dir(&dir).output();
            let out = out.unwrap_or_else(|e| {
                panic!("cannot run iasl ({e}): install acpica-tools (scripts/setup-host.sh does)")
            });
            let text =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "iasl -d {name}: {text}");
            assert!(!text.contains("Error") && !text.contains("Warning"), "iasl -d {name}: {text}");
            let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
            let sig = String::from_utf8_lossy(sig);
            assert!(dsl.contains(&format!("Signature : \"{sig}\"")) || name == "dsdt", "{name}: {dsl}");
            if name == "nfit" {
                assert!(dsl.contains("Flush Hint"), "the NFIT's flush hint must disassemble: {dsl}");
                let valid = dsl.matches("Proximity Domain Valid : 1").count();
                assert_eq!(valid, 2, "each SPA range names its SRAT domain: {dsl}");
            }
            if name == "srat" {
                // Two processors, then RAM below 1 MiB and above 4 GiB.
                let cpus = dsl.matches("Processor Local APIC/SAPIC Affinity").count();
                assert_eq!(cpus, 2, "one processor entry per vCPU: {dsl}");
                assert!(dsl.contains("Apic ID : 00") && dsl.contains("Apic ID : 01"), "{dsl}");
                let memory = dsl.matches("Memory Affinity").count();
                assert_eq!(memory, 2, "two RAM entries: {dsl}");
                for want in ["0000000000100000", "0000000100000000"] {
                    assert!(dsl.contains(want), "the SRAT must mention {want}: {dsl}");
                }
                assert_eq!(dsl.matches("Non-Volatile : 1").count(), 0, "no pmem in the SRAT: {dsl}");
            }
            if name == "dsdt" {
                // The _DSM mailbox as ACPICA reads it: the page and port the device serves, the DIMM
                // family's UUID, each DIMM's handle passed on, and the answer cut to RLEN - 4 bytes.
                for want in [
                    "Device (VR01)",
                    "Name (_HID, \"LNRO0005\")",
                    "Memory32Fixed (ReadWrite,\n                    0xFEB19000,",
                    "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {\n                    0x00000011,",
                    "OperationRegion (NPIO, SystemIO, 0x0A18, 0x04)",
                    "OperationRegion (NRAM, SystemMemory, 0x000DF000, 0x1000)",
                    "ToUUID (\"4309ac30-0d11-11e4-9191-0800200c9a66\")",
                    "NTFI = 0x000DF000",
                    "Local1 = (RLEN - 0x04)",
                    "Mid (Local5, Zero, Local1, Local7)",
                    "Return (NCAL (Arg0, Arg1, Arg2, Arg3, Zero))",
                    "Return (NCAL (Arg0, Arg1, Arg2, Arg3, 0x02))",
                    "Method (_LSI, 0, NotSerialized)",
                    "Method (_LSR, 2, NotSerialized)",
                    "Method (_LSW, 3, NotSerialized)",
                    "Return (NLSR (0x80000002, Arg0, Arg1))",
                ] {
                    assert!(dsl.contains(want), "the DSDT must have '{want}': {dsl}");
                }
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_dsdt_always_describes_the_fault_injector() {
        let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let layout = write_tables(&gm, 1, &[], &[]).unwrap();
        let dsdt = layout.tables.iter().find(|t| &t.0 == b"DSDT").unwrap();
        let mut bytes = vec![0u8; dsdt.2];
        gm.read_slice(&mut bytes, GuestAddress(dsdt.1)).unwrap();
        assert!(bytes.windows(8).any(|w| w == b"DAXF0001"));
        // Memory32Fixed (0x86), length 9, read-write, then the window's base and length.
        let mut window = vec![0x86, 0x09, 0x00, 0x01];
        window.extend_from_slice(&(FAULT_INJECTOR_BASE as u32).to_le_bytes());
        window.extend_from_slice(&(FAULT_INJECTOR_LEN as u32).to_le_bytes());
        assert!(bytes.windows(window.len()).any(|w| w == window), "the _CRS window is missing");
    }
}
