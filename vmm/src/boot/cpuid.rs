//! The CPUID a vCPU sees: what KVM supports on this host, with each vCPU's APIC id filled in, the
//! hypervisor bit set, and the TSC-deadline timer advertised when KVM emulates it (Linux then needs no
//! timer calibration, which saves boot time).

use kvm_bindings::kvm_cpuid_entry2;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const ECX_XSAVE: u32 = 1 << 26;
const ECX_OSXSAVE: u32 = 1 << 27;
const ECX_AVX: u32 = 1 << 28;

/// Adjusts KVM's supported CPUID for vCPU `cpu` of `cpus`.
pub fn patch_cpuid(entries: &mut [kvm_cpuid_entry2], cpu: u8, cpus: u8, tsc_deadline: bool) {
    for e in entries.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(cpu) << 24) | (u32::from(cpus) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if tsc_deadline {
                    e.ecx |= ECX_TSC_DEADLINE;
                }
                if cpus > 1 {
                    e.edx |= EDX_HTT;
                }
            }
            // The x2APIC id of this logical processor, at every topology level.
            LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => e.edx = u32::from(cpu),
            LEAF_AMD_EXT_APIC_ID => e.eax = u32::from(cpu),
            _ => {}
        }
    }
}

/// Whether the guest may use XSAVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XsavePolicy {
    /// Everything KVM supports (XSAVE, AVX, AVX-512, PKRU, ...).
    On,
    /// No XSAVE (and so no AVX), as if the guest booted with `noxsave`. Under nested virtualization on
    /// an emulated CPU the outer hypervisor may let the guest's XSETBV through without KVM seeing it;
    /// KVM then reports save-area sizes for the old XCR0, Linux finds sizes that disagree, disables
    /// XSAVE half-way and crashes in the first signal frame or earlier.
    Off,
}

/// Hides XSAVE and the features whose state lives only in XSAVE areas when `policy` is Off; Linux
/// clears the remaining dependent features (AVX2, AVX-512, PKU) itself once XSAVE is gone.
pub fn apply_xsave_policy(entries: &mut [kvm_cpuid_entry2], policy: XsavePolicy) {
    if policy == XsavePolicy::On {
        return;
    }
    for e in entries.iter_mut().filter(|e| e.function == LEAF_FEATURES) {
        e.ecx &= !(ECX_XSAVE | ECX_OSXSAVE | ECX_AVX);
    }
}

/// True when daxvmm itself runs in a virtual machine (the CPUID hypervisor bit).
pub fn host_is_virtual() -> bool {
    // SAFETY: CPUID leaf 1 exists on every x86_64 CPU and has no side effects.
    #[allow(unused_unsafe)]
    let leaf1 = unsafe { std::arch::x86_64::__cpuid(LEAF_FEATURES) };
    leaf1.ecx & ECX_HYPERVISOR != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 { function, index, ebx: 0xdead_0800, ..Default::default() }
    }

    #[test]
    fn apic_ids_and_flags() {
        let mut e = vec![leaf(0, 0), leaf(1, 0), leaf(0xb, 0), leaf(0xb, 1), leaf(0x8000_001e, 0)];
        patch_cpuid(&mut e, 3, 4, true);
        assert_eq!(e[0].ebx, 0xdead_0800, "other leaves untouched");
        assert_eq!(e[1].ebx >> 24, 3);
        assert_eq!((e[1].ebx >> 16) & 0xff, 4);
        assert_eq!(e[1].ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(e[1].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[1].ecx & ECX_TSC_DEADLINE, 0);
        assert_ne!(e[1].edx & EDX_HTT, 0);
        assert_eq!((e[2].edx, e[3].edx, e[4].eax), (3, 3, 3));
    }

    #[test]
    fn xsave_off_hides_xsave_and_avx() {
        let mut e = vec![leaf(1, 0), leaf(0xd, 0)];
        e[0].ecx = ECX_XSAVE | ECX_OSXSAVE | ECX_AVX | 1;
        e[1].eax = 0x207;
        apply_xsave_policy(&mut e, XsavePolicy::On);
        assert_eq!(e[0].ecx, ECX_XSAVE | ECX_OSXSAVE | ECX_AVX | 1);
        apply_xsave_policy(&mut e, XsavePolicy::Off);
        assert_eq!(e[0].ecx, 1, "SSE3 and the rest untouched");
        assert_eq!(e[1].eax, 0x207, "leaf 0xD left alone: Linux does not read it without XSAVE");
    }

    #[test]
    fn single_cpu_without_deadline_timer() {
        let mut e = vec![leaf(1, 0)];
        patch_cpuid(&mut e, 0, 1, false);
        assert_eq!(e[0].ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[0].ebx >> 24, 0);
    }
}
