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
const ECX_FMA: u32 = 1 << 12;

const LEAF_STRUCTURED: u32 = 0x7;
const LEAF_XSAVE: u32 = 0xd;
/// Leaf 7.0 EBX: AVX2, MPX, AVX512 F/DQ/IFMA/PF/ER/CD/BW/VL.
const L7_EBX_XSAVE_DEPS: u32 =
    1 << 5 | 1 << 14 | 1 << 16 | 1 << 17 | 1 << 21 | 1 << 26 | 1 << 27 | 1 << 28 | 1 << 30 | 1 << 31;
/// Leaf 7.0 ECX: AVX512VBMI, PKU, OSPKE, VBMI2, VAES, VPCLMULQDQ, AVX512 VNNI/BITALG/VPOPCNTDQ.
const L7_ECX_XSAVE_DEPS: u32 =
    1 << 1 | 1 << 3 | 1 << 4 | 1 << 6 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 14;
/// Leaf 7.0 EDX: AVX512 4VNNIW/4FMAPS/VP2INTERSECT, AMX-BF16, AVX512-FP16, AMX-TILE, AMX-INT8.
const L7_EDX_XSAVE_DEPS: u32 = 1 << 2 | 1 << 3 | 1 << 8 | 1 << 22 | 1 << 23 | 1 << 24 | 1 << 25;
/// Leaf 7.1 EAX: AVX-VNNI, AVX512-BF16, AMX-FP16, AVX-IFMA.
const L7_1_EAX_XSAVE_DEPS: u32 = 1 << 4 | 1 << 5 | 1 << 21 | 1 << 23;
/// Leaf 7.1 EDX: APX.
const L7_1_EDX_XSAVE_DEPS: u32 = 1 << 21;
/// Leaf 0xD.1 EAX: XSAVEOPT, XSAVEC, XGETBV1, XSAVES, XFD.
const LD_1_EAX_XSAVE_DEPS: u32 = 0x1f;

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

impl XsavePolicy {
    /// The `auto` policy: off when daxvmm itself runs in a VM (and says so), on on bare metal.
    pub fn for_this_host() -> Self {
        if host_is_virtual() {
            log::info!("running nested (host CPUID has the hypervisor bit): guest XSAVE off (--xsave on to override)");
            Self::Off
        } else {
            Self::On
        }
    }
}

/// Hides XSAVE, when `policy` is Off, with every feature that depends on it (the XSAVE variants, AVX and
/// what builds on it, AVX-512, AMX, PKU, MPX, APX). Linux would clear the dependents itself, but warns at
/// boot ("CPU feature dependency check failure") about any that CPUID still shows, so none are left
/// (arch/x86/kernel/cpu/cpuid-deps.c lists them).
pub fn apply_xsave_policy(entries: &mut [kvm_cpuid_entry2], policy: XsavePolicy) {
    if policy == XsavePolicy::On {
        return;
    }
    for e in entries.iter_mut() {
        match (e.function, e.index) {
            (LEAF_FEATURES, _) => e.ecx &= !(ECX_XSAVE | ECX_OSXSAVE | ECX_AVX | ECX_FMA),
            (LEAF_STRUCTURED, 0) => {
                e.ebx &= !L7_EBX_XSAVE_DEPS;
                e.ecx &= !L7_ECX_XSAVE_DEPS;
                e.edx &= !L7_EDX_XSAVE_DEPS;
            }
            (LEAF_STRUCTURED, 1) => {
                e.eax &= !L7_1_EAX_XSAVE_DEPS;
                e.edx &= !L7_1_EDX_XSAVE_DEPS;
            }
            (LEAF_XSAVE, 1) => e.eax &= !LD_1_EAX_XSAVE_DEPS,
            _ => {}
        }
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
    fn xsave_off_hides_xsave_and_what_depends_on_it() {
        let all = |function, index| kvm_cpuid_entry2 {
            function,
            index,
            eax: u32::MAX,
            ebx: u32::MAX,
            ecx: u32::MAX,
            edx: u32::MAX,
            ..Default::default()
        };
        let mut e = vec![all(1, 0), all(7, 0), all(7, 1), all(0xd, 0), all(0xd, 1)];
        let before = e.clone();
        apply_xsave_policy(&mut e, XsavePolicy::On);
        assert_eq!(e, before, "On changes nothing");
        apply_xsave_policy(&mut e, XsavePolicy::Off);
        assert_eq!(e[0].ecx & (ECX_XSAVE | ECX_OSXSAVE | ECX_AVX | ECX_FMA), 0);
        assert_eq!(
            e[0].ecx | ECX_XSAVE | ECX_OSXSAVE | ECX_AVX | ECX_FMA,
            u32::MAX,
            "SSE3 and the rest kept"
        );
        assert_eq!(e[1].ebx & (1 << 5), 0, "AVX2 hidden");
        assert_ne!(e[1].ebx & (1 << 7), 0, "SMEP kept");
        assert_eq!(e[1].ecx & (1 << 3), 0, "PKU hidden");
        assert_eq!(e[1].edx & (1 << 24), 0, "AMX-TILE hidden");
        assert_eq!(e[2].eax & (1 << 4), 0, "AVX-VNNI hidden");
        assert_eq!(e[3], before[3], "leaf 0xD.0 (sizes) untouched");
        assert_eq!(e[4].eax & 0x1f, 0, "XSAVEOPT/XSAVEC/XGETBV1/XSAVES/XFD hidden");
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
