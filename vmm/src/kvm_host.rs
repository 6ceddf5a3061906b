//! Opening /dev/kvm and telling whether it can boot an ordinary Linux guest: a hardware KVM (VT-x or
//! AMD-V) can; kvm-pvm, a software KVM for PVM-enlightened kernels only, cannot.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};
use thiserror::Error;

/// Which KVM this host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmKind {
    /// kvm_intel or kvm_amd is loaded.
    Hardware,
    /// kvm_pvm is loaded.
    Pvm,
    /// /dev/kvm exists but no known vendor module is loaded.
    Unknown,
}

/// Why KVM cannot be used.
#[derive(Debug, Error)]
pub enum KvmHostError {
    /// No /dev/kvm at all.
    #[error("/dev/kvm does not exist: this host has no KVM; boot guests inside the test host VM instead (scripts/daxvmm-nested.sh, see README)")]
    NoDevice,
    /// kvm-pvm cannot run ordinary guest kernels.
    #[error("/dev/kvm here is kvm-pvm, which runs only PVM-enlightened guest kernels, not an ordinary Linux guest; boot guests inside the test host VM instead (scripts/daxvmm-nested.sh, see README)")]
    Pvm,
    /// Opening /dev/kvm failed.
    #[error("cannot open /dev/kvm: {0} (are you in the kvm group?)")]
    Open(kvm_ioctls::Error),
    /// A capability daxvmm relies on is missing (its KVM_CAP_* name).
    #[error("this KVM lacks {0}, which daxvmm needs")]
    MissingCap(&'static str),
}

/// Looks at the loaded KVM modules under `sys_module` (normally /sys/module).
pub fn detect(sys_module: &Path) -> KvmKind {
    if sys_module.join("kvm_pvm").exists() {
        KvmKind::Pvm
    } else if sys_module.join("kvm_intel").exists() || sys_module.join("kvm_amd").exists() {
        KvmKind::Hardware
    } else {
        KvmKind::Unknown
    }
}

/// Opens KVM after checking it can boot our guests and has the capabilities we use.
/// DAXVMM_ALLOW_PVM=1 skips the kvm-pvm refusal (for PVM-enlightened guest kernels).
pub fn open() -> Result<Kvm, KvmHostError> {
    if !Path::new("/dev/kvm").exists() {
        return Err(KvmHostError::NoDevice);
    }
    if detect(Path::new("/sys/module")) == KvmKind::Pvm && std::env::var_os("DAXVMM_ALLOW_PVM").is_none() {
        return Err(KvmHostError::Pvm);
    }
    let kvm = Kvm::new().map_err(KvmHostError::Open)?;
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmHostError::MissingCap(name));
        }
    }
    Ok(kvm)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn detects_modules() {
        let dir = std::env::temp_dir().join(format!("daxvmm-kvm-detect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(detect(&dir), KvmKind::Unknown);
        std::fs::create_dir_all(dir.join("kvm_amd")).unwrap();
        assert_eq!(detect(&dir), KvmKind::Hardware);
        std::fs::create_dir_all(dir.join("kvm_pvm")).unwrap();
        assert_eq!(detect(&dir), KvmKind::Pvm);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
