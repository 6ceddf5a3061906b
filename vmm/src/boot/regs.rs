//! The state a vCPU needs to enter Linux in 64-bit mode: a flat GDT, an identity map of the first 4 GiB,
//! long-mode control registers, the boot registers (entry point, zero page in RSI), FPU, MSRs, and the
//! local APIC's LINT pins wired the way a PC wires them.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{BOOT_STACK_POINTER, GDT_ADDR, IDT_ADDR, PDPT_ADDR, PD_ADDR, PML4_ADDR, ZERO_PAGE_ADDR};

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRRs enabled, default memory type write-back: guest RAM is ordinary cacheable memory.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// Segment selectors into the boot GDT.
const CODE_SELECTOR: u16 = 1 << 3;
const DATA_SELECTOR: u16 = 2 << 3;
const TSS_SELECTOR: u16 = 3 << 3;

/// Errors setting up a vCPU.
#[derive(Debug, Error)]
pub enum RegsError {
    /// A KVM ioctl on the vCPU failed.
    #[error("KVM {what} failed on vCPU {cpu}: {source}")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The vCPU.
        cpu: u8,
        /// What KVM said.
        source: kvm_ioctls::Error,
    },
    /// Writing the GDT or page tables into guest memory failed.
    #[error("cannot write boot {0} into guest memory")]
    GuestMemory(&'static str),
}

/// A GDT entry from flags, base and limit (Intel SDM vol. 3, 3.4.5).
fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    (u64::from(base & 0xff00_0000) << 32)
        | (u64::from(flags & 0xf0ff) << 40)
        | (u64::from(limit & 0x000f_0000) << 32)
        | (u64::from(base & 0x00ff_ffff) << 16)
        | u64::from(limit & 0x0000_ffff)
}

/// The KVM segment register matching a GDT entry.
fn segment(entry: u64, selector: u16) -> kvm_segment {
    let bits = |shift: u64, width: u64| ((entry >> shift) & ((1 << width) - 1)) as u8;
    let base = ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24);
    let limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = bits(55, 1);
    kvm_segment {
        base,
        // With 4 KiB granularity the limit counts pages.
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector,
        type_: bits(40, 4),
        present: bits(47, 1),
        dpl: bits(45, 2),
        db: bits(54, 1),
        s: bits(44, 1),
        l: bits(53, 1),
        g,
        avl: bits(52, 1),
        unusable: u8::from(bits(47, 1) == 0),
        padding: 0,
    }
}

/// The boot GDT: null, 64-bit code, data, TSS.
pub fn boot_gdt() -> [u64; 4] {
    [
        gdt_entry(0, 0, 0),
        gdt_entry(0xa09b, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

/// Writes the GDT, IDT and the 4 GiB identity map (2 MiB pages) into guest memory.
pub fn write_boot_tables(gm: &GuestMemoryMmap) -> Result<(), RegsError> {
    for (i, e) in boot_gdt().iter().enumerate() {
        gm.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64)).map_err(|_| RegsError::GuestMemory("GDT"))?;
    }
    gm.write_obj(0u64, GuestAddress(IDT_ADDR)).map_err(|_| RegsError::GuestMemory("IDT"))?;
    // Present + writable at each level; PS (bit 7) makes PD entries 2 MiB pages.
    gm.write_obj(PDPT_ADDR | 0x3, GuestAddress(PML4_ADDR)).map_err(|_| RegsError::GuestMemory("PML4"))?;
    for gib in 0..4u64 {
        let pd = PD_ADDR + gib * 0x1000;
        gm.write_obj(pd | 0x3, GuestAddress(PDPT_ADDR + gib * 8))
            .map_err(|_| RegsError::GuestMemory("PDPT"))?;
        for i in 0..512u64 {
            let phys = (gib << 30) | (i << 21);
            gm.write_obj(phys | 0x83, GuestAddress(pd + i * 8))
                .map_err(|_| RegsError::GuestMemory("page directory"))?;
        }
    }
    Ok(())
}

fn kvm_err(what: &'static str, cpu: u8) -> impl FnOnce(kvm_ioctls::Error) -> RegsError {
    move |source| RegsError::Kvm { what, cpu, source }
}

/// Long mode, paging on, flat segments from the boot GDT.
pub fn setup_sregs(vcpu: &VcpuFd, cpu: u8) -> Result<(), RegsError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS", cpu))?;
    let gdt = boot_gdt();
    let code = segment(gdt[1], CODE_SELECTOR);
    let data = segment(gdt[2], DATA_SELECTOR);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(gdt[3], TSS_SELECTOR);
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS", cpu))
}

/// Entry point in RIP, the zero page in RSI, as the 64-bit boot protocol asks.
pub fn setup_regs(vcpu: &VcpuFd, cpu: u8, entry: u64) -> Result<(), RegsError> {
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_ADDR,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS", cpu))
}

/// x87 and SSE control words at their reset values.
pub fn setup_fpu(vcpu: &VcpuFd, cpu: u8) -> Result<(), RegsError> {
    let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
    vcpu.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU", cpu))
}

/// The MSRs a fresh boot expects: syscall MSRs cleared, fast strings on, MTRRs write-back.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    let entry = |index, data| kvm_msr_entry { index, data, ..Default::default() };
    vec![
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, MSR_IA32_MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ]
}

/// Writes [`boot_msrs`]; every one must be accepted.
pub fn setup_msrs(vcpu: &VcpuFd, cpu: u8) -> Result<(), RegsError> {
    let entries = boot_msrs();
    let msrs = Msrs::from_entries(&entries).map_err(|_| RegsError::Kvm {
        what: "building the MSR list",
        cpu,
        source: kvm_ioctls::Error::new(libc::E2BIG),
    })?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS", cpu))?;
    if set != entries.len() {
        let idx = entries.get(set).map_or(0, |e| e.index);
        log::warn!("vCPU {cpu}: KVM took {set} of {} boot MSRs (stopped at {idx:#x})", entries.len());
    }
    Ok(())
}

fn set_apic_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// LINT0 as ExtINT (the 8259's output) and LINT1 as NMI, as on a PC.
pub fn setup_lapic(vcpu: &VcpuFd, cpu: u8) -> Result<(), RegsError> {
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC", cpu))?;
    for (off, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let mut raw = [0u8; 4];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = lapic.regs[off + i] as u8;
        }
        let v = set_apic_delivery_mode(u32::from_le_bytes(raw), mode).to_le_bytes();
        for (i, b) in v.iter().enumerate() {
            lapic.regs[off + i] = *b as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC", cpu))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use vm_memory::GuestMemoryMmap;

    use super::*;

    #[test]
    fn gdt_entries_match_known_encodings() {
        // The values Linux's own boot code and other VMMs use for flat 64-bit segments.
        let gdt = boot_gdt();
        assert_eq!(gdt[0], 0);
        assert_eq!(gdt[1], 0x00af_9b00_0000_ffff);
        assert_eq!(gdt[2], 0x00cf_9300_0000_ffff);
        assert_eq!(gdt[3], 0x008f_8b00_0000_ffff);
        let cs = segment(gdt[1], CODE_SELECTOR);
        assert_eq!((cs.l, cs.db, cs.present, cs.type_, cs.s, cs.limit), (1, 0, 1, 0xb, 1, 0xffff_ffff));
        let ds = segment(gdt[2], DATA_SELECTOR);
        assert_eq!((ds.l, ds.db, ds.type_, ds.selector), (0, 1, 3, 0x10));
        assert_eq!(segment(0, 0).unusable, 1);
    }

    #[test]
    fn identity_map_covers_4g_with_2m_pages() {
        let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_boot_tables(&gm).unwrap();
        let pml4: u64 = gm.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4, PDPT_ADDR | 3);
        for gib in 0..4u64 {
            let pdpte: u64 = gm.read_obj(GuestAddress(PDPT_ADDR + gib * 8)).unwrap();
            assert_eq!(pdpte & !0xfff, PD_ADDR + gib * 0x1000);
            let last: u64 = gm.read_obj(GuestAddress(PD_ADDR + gib * 0x1000 + 511 * 8)).unwrap();
            assert_eq!(last, ((gib << 30) + (511 << 21)) | 0x83);
        }
        let gdt1: u64 = gm.read_obj(GuestAddress(GDT_ADDR + 8)).unwrap();
        assert_eq!(gdt1, boot_gdt()[1]);
    }

    #[test]
    fn apic_mode_bits() {
        assert_eq!(set_apic_delivery_mode(0x0001_0000, APIC_MODE_EXTINT), 0x0001_0700);
        assert_eq!(set_apic_delivery_mode(0x0000_07ff, APIC_MODE_NMI), 0x0000_04ff);
    }

    #[test]
    fn msr_list_is_complete() {
        let m = boot_msrs();
        assert!(m.iter().any(|e| e.index == MSR_MTRR_DEF_TYPE && e.data == 0x806));
        assert_eq!(m.len(), 11);
    }
}
