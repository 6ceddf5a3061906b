//! Machine checks for guest loads from poisoned pmem: which guests can take them, the machine-check
//! banks and CPUID features they are given, the record a poisoned load produces, and its delivery
//! through KVM with the vCPU put back at the faulting instruction.
//!
//! A poisoned pmem page is a hole in KVM's memory slots ([`crate::pmem::holes`]), so a load from it
//! leaves the guest as an MMIO exit. KVM finishes that instruction when the vCPU next enters KVM_RUN,
//! with whatever data userspace supplied; real hardware raises #MC before the load retires instead, and
//! Linux relies on that: a machine-check-safe kernel copy (`copy_mc_*`) finds its exception fixup only
//! at the faulting instruction. So [`deliver`] saves the registers at the exit, lets KVM complete the
//! pending instruction without running the guest any further (KVM_RUN with `immediate_exit` set, which
//! KVM's API documents as the way to complete pending I/O), puts the saved registers back and only then
//! queues the machine check. Stores into the instruction's other operands are not undone (a partly done
//! string copy leaves its destination partly written, as a hardware fault mid-copy does too).
//!
//! Only AMD guests get machine checks. The record is the legacy northbridge's uncorrectable DRAM ECC
//! error (bank 4, extended error code 8): Linux's nfit driver recognises that as a memory error in an
//! NVDIMM range and adds it to the region's badblocks. The guest is told it has MCA overflow recovery
//! and MCA recovery ("succor", CPUID 0x80000007 EBX bits 0-1); without succor Linux panics on every
//! uncorrected error. Intel guests would need the SRAR encoding and a broadcast (or local) machine
//! check to every vCPU; there, poison stays bookkeeping and loads read the memory's bytes.

use kvm_bindings::{kvm_cpuid_entry2, kvm_x86_mce};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd};
use thiserror::Error;
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};
use vmm_sys_util::{ioctl_ior_nr, ioctl_iow_nr};

const KVMIO: u32 = 0xae;
ioctl_ior_nr!(KVM_X86_GET_MCE_CAP_SUPPORTED, KVMIO, 0x9d, u64);
ioctl_iow_nr!(KVM_X86_SETUP_MCE, KVMIO, 0x9c, u64);
ioctl_iow_nr!(KVM_X86_SET_MCE, KVMIO, 0x9e, kvm_x86_mce);

/// Machine-check banks the guest gets (QEMU's default count), bank [`BANK`] among them.
const BANKS: u64 = 10;
const _: () = assert!(BANKS > BANK as u64);
/// AMD's legacy northbridge bank, where DRAM ECC errors are reported.
pub const BANK: u8 = 4;
/// IA32_MCG_CAP: MCG_CTL present.
const MCG_CTL_P: u64 = 1 << 8;

/// IA32_MCG_STATUS: the error IP is valid (RIP points at the instruction that caused it), a restart at
/// RIP is possible, machine check in progress.
const MCG_STATUS_RIPV: u64 = 1 << 0;
const MCG_STATUS_EIPV: u64 = 1 << 1;
const MCG_STATUS_MCIP: u64 = 1 << 2;

/// MCi_STATUS bits: valid, uncorrected, enabled, MISC valid, ADDR valid, poison (AMD).
const MCI_STATUS_VAL: u64 = 1 << 63;
const MCI_STATUS_UC: u64 = 1 << 61;
const MCI_STATUS_EN: u64 = 1 << 60;
const MCI_STATUS_MISCV: u64 = 1 << 59;
const MCI_STATUS_ADDRV: u64 = 1 << 58;
const MCI_STATUS_POISON: u64 = 1 << 43;
/// Extended error code (bits 16-20) of an AMD northbridge DRAM ECC error.
const XEC_DRAM_ECC: u64 = 8 << 16;
/// MCA error code: memory hierarchy, data read, generic transaction, generic level (0000 0001 RRRR TTLL).
const MCACOD_DATA_READ: u64 = 0x013b;
/// MCi_MISC: address mode "physical" (bits 6-8) and the least significant valid address bit, 12: the
/// error is reported per 4 KiB page, the granularity of the slots' holes.
const MISC_PHYS_ADDR_PAGE: u64 = 2 << 6 | 12;

const LEAF_VENDOR: u32 = 0;
const LEAF_FEATURES: u32 = 1;
const LEAF_AMD_RAS: u32 = 0x8000_0007;
/// Leaf 1 EDX: MCE and MCA, without which Linux sets no machine-check handling up.
const EDX_MCE_MCA: u32 = 1 << 7 | 1 << 14;
/// Leaf 0x80000007 EBX: MCA overflow recovery, succor.
const EBX_RECOVERY: u32 = 1 << 0 | 1 << 1;
/// Leaf 0x80000007 EBX: scalable MCA. Cleared: the record is the legacy bank layout's.
const EBX_SMCA: u32 = 1 << 3;
/// "AuthenticAMD" as leaf 0 returns it in EBX, EDX, ECX.
const AMD: [u32; 3] = [0x6874_7541, 0x6974_6e65, 0x444d_4163];

/// Errors setting up or delivering machine checks.
#[derive(Debug, Error)]
pub enum MceError {
    /// KVM refused an ioctl.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// What KVM said.
        source: errno::Error,
    },
    /// Completing the instruction never came back to userspace without another exit.
    #[error("the load from poisoned pmem did not complete within {0} KVM_RUN calls")]
    Unfinished(u32),
}

/// What the guest's vCPUs are given when machine checks can be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MceSupport {
    /// IA32_MCG_CAP: bank count and MCG_CTL_P.
    pub mcg_cap: u64,
}

/// Whether guests on this host can take machine checks, from KVM and the CPUID the guest will see;
/// why not when they cannot.
pub fn probe(kvm: &Kvm, cpuid: &[kvm_cpuid_entry2]) -> Result<MceSupport, String> {
    guest_can_take(cpuid)?;
    if !kvm.check_extension(Cap::Mce) {
        return Err("KVM lacks KVM_CAP_MCE".into());
    }
    let mut supported = 0u64;
    // SAFETY: KVM writes one u64 into `supported`, which lives across the call; the fd is /dev/kvm's.
    let ret = unsafe { ioctl_with_mut_ref(kvm, KVM_X86_GET_MCE_CAP_SUPPORTED(), &mut supported) };
    if ret < 0 {
        return Err(format!("KVM_X86_GET_MCE_CAP_SUPPORTED: {}", errno::Error::last()));
    }
    Ok(MceSupport { mcg_cap: mcg_cap(supported) })
}

/// Why a guest with this CPUID cannot take the machine checks daxvmm makes, if it cannot.
fn guest_can_take(cpuid: &[kvm_cpuid_entry2]) -> Result<(), String> {
    let leaf = |f: u32| cpuid.iter().find(|e| e.function == f && e.index == 0);
    let vendor = leaf(LEAF_VENDOR).ok_or("no CPUID leaf 0")?;
    if [vendor.ebx, vendor.edx, vendor.ecx] != AMD {
        return Err("the CPU is not AMD's; Intel guests are not given machine checks yet".into());
    }
    if leaf(LEAF_FEATURES).is_none_or(|e| e.edx & EDX_MCE_MCA != EDX_MCE_MCA) {
        return Err("KVM does not offer MCE and MCA in CPUID".into());
    }
    if leaf(LEAF_AMD_RAS).is_none() {
        return Err("KVM offers no CPUID leaf 0x80000007".into());
    }
    Ok(())
}

/// The guest's IA32_MCG_CAP: [`BANKS`] banks (KVM's limit is 32; KVM_X86_GET_MCE_CAP_SUPPORTED
/// reports capability bits only, no bank count) and MCG_CTL when KVM supports it.
fn mcg_cap(supported: u64) -> u64 {
    BANKS | (supported & MCG_CTL_P)
}

/// Tells the guest it has MCA recovery (see the module documentation) and the legacy bank layout.
pub fn advertise(cpuid: &mut [kvm_cpuid_entry2]) {
    for e in cpuid.iter_mut().filter(|e| e.function == LEAF_AMD_RAS) {
        e.ebx = (e.ebx | EBX_RECOVERY) & !EBX_SMCA;
    }
}

/// Gives `vcpu` its machine-check banks.
pub fn setup(vcpu: &VcpuFd, support: MceSupport) -> Result<(), MceError> {
    // SAFETY: KVM reads one u64 from `support.mcg_cap`; the fd is a vCPU's.
    let ret = unsafe { ioctl_with_ref(vcpu, KVM_X86_SETUP_MCE(), &support.mcg_cap) };
    if ret < 0 {
        return Err(MceError::Kvm { what: "KVM_X86_SETUP_MCE", source: errno::Error::last() });
    }
    Ok(())
}

/// The machine check a load from poisoned guest-physical `gpa` raises.
pub fn record(gpa: u64) -> kvm_x86_mce {
    kvm_x86_mce {
        status: MCI_STATUS_VAL
            | MCI_STATUS_UC
            | MCI_STATUS_EN
            | MCI_STATUS_MISCV
            | MCI_STATUS_ADDRV
            | MCI_STATUS_POISON
            | XEC_DRAM_ECC
            | MCACOD_DATA_READ,
        addr: gpa,
        misc: MISC_PHYS_ADDR_PAGE,
        mcg_status: MCG_STATUS_MCIP | MCG_STATUS_EIPV | MCG_STATUS_RIPV,
        bank: BANK,
        ..Default::default()
    }
}

/// How many KVM_RUN calls completing one instruction may take (a string instruction may leave for
/// userspace once per element it reads from the hole).
const COMPLETE_LIMIT: u32 = 4096;

/// Raises the machine check of a load from `gpa` on `vcpu`, which has just left the guest with an MMIO
/// read exit for it: completes the instruction without letting the guest run, puts the registers of the
/// exit back, then queues #MC. Reads during the completion get zeros, stores are dropped.
pub fn deliver(vcpu: &mut VcpuFd, gpa: u64) -> Result<(), MceError> {
    let kvm = |what| move |e: kvm_ioctls::Error| MceError::Kvm { what, source: e };
    let regs = vcpu.get_regs().map_err(kvm("KVM_GET_REGS"))?;
    vcpu.set_kvm_immediate_exit(1);
    let completed = complete(vcpu);
    vcpu.set_kvm_immediate_exit(0);
    completed?;
    vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
    let mce = record(gpa);
    // SAFETY: KVM reads one kvm_x86_mce from `mce`, which lives across the call; the fd is a vCPU's.
    let ret = unsafe { ioctl_with_ref(&*vcpu, KVM_X86_SET_MCE(), &mce) };
    if ret < 0 {
        return Err(MceError::Kvm { what: "KVM_X86_SET_MCE", source: errno::Error::last() });
    }
    Ok(())
}

/// Enters KVM_RUN (with immediate_exit set) until KVM says it stopped before running the guest.
fn complete(vcpu: &mut VcpuFd) -> Result<(), MceError> {
    for _ in 0..COMPLETE_LIMIT {
        match vcpu.run() {
            Err(e) if e.errno() == libc::EINTR => return Ok(()),
            Err(e) => return Err(MceError::Kvm { what: "KVM_RUN", source: e }),
            Ok(VcpuExit::MmioRead(_, data) | VcpuExit::IoIn(_, data)) => data.fill(0),
            Ok(_) => {}
        }
    }
    Err(MceError::Unfinished(COMPLETE_LIMIT))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(function: u32, ebx: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 { function, ebx, ecx, edx, ..Default::default() }
    }

    fn amd_cpuid() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0, AMD[0], AMD[2], AMD[1]),
            entry(1, 0, 0, EDX_MCE_MCA | 1),
            entry(LEAF_AMD_RAS, EBX_SMCA | 1 << 9, 0, 1 << 8),
        ]
    }

    #[test]
    fn only_amd_guests_with_mca_and_the_ras_leaf() {
        assert!(guest_can_take(&amd_cpuid()).is_ok());
        let mut intel = amd_cpuid();
        // "GenuineIntel"
        intel[0] = entry(0, 0x756e_6547, 0x6c65_746e, 0x4965_6e69);
        assert!(guest_can_take(&intel).unwrap_err().contains("Intel"));
        let mut no_mca = amd_cpuid();
        no_mca[1].edx = 1 << 7;
        assert!(guest_can_take(&no_mca).unwrap_err().contains("MCA"));
        assert!(guest_can_take(&amd_cpuid()[..2]).unwrap_err().contains("0x80000007"));
    }

    #[test]
    fn recovery_is_advertised_and_scalable_mca_hidden() {
        let mut cpuid = amd_cpuid();
        advertise(&mut cpuid);
        assert_eq!(cpuid[2].ebx, 1 << 9 | 0b11, "succor and overflow recovery on, SMCA off, rest kept");
        assert_eq!(cpuid[2].edx, 1 << 8, "other registers untouched");
        assert_eq!(cpuid[1].edx, EDX_MCE_MCA | 1);
    }

    #[test]
    fn ten_banks_and_mcg_ctl_only() {
        assert_eq!(mcg_cap(MCG_CTL_P | 1 << 24 | 1 << 27), 10 | MCG_CTL_P, "SER, LMCE and others not taken");
        assert_eq!(mcg_cap(0), 10);
    }

    /// The fields Linux's AMD machine-check code decides on (arch/x86/kernel/cpu/mce): an uncorrected,
    /// not context-corrupt, not deferred error (MCE_AR_SEVERITY), a usable address (the legacy DRAM ECC
    /// case of amd_mce_usable_address), a memory error for the nfit driver, page granularity.
    #[test]
    fn the_record_is_a_recoverable_dram_ecc_error_at_the_address() {
        let m = record(0x1_2345_6000);
        assert_eq!(m.addr, 0x1_2345_6000);
        assert_eq!(m.bank, 4);
        assert_ne!(m.status & MCI_STATUS_VAL, 0);
        assert_ne!(m.status & MCI_STATUS_UC, 0);
        assert_ne!(m.status & MCI_STATUS_ADDRV, 0);
        assert_eq!(m.status & (1 << 57), 0, "PCC (processor context corrupt) would panic");
        assert_eq!(m.status & (1 << 44), 0, "deferred would not be action-required");
        assert_eq!(m.status & (1 << 62), 0, "no overflow");
        assert_eq!((m.status >> 16) & 0x1f, 8, "extended error code: DRAM ECC");
        assert_eq!(m.misc & 0x3f, 12, "address LSB: 4 KiB");
        assert_eq!((m.misc >> 6) & 7, 2, "physical address mode");
        assert_eq!(m.mcg_status, 0b111, "RIPV, EIPV, MCIP");
    }
}
