//! Where guests can boot on this machine, and the artifacts the guest-booting tests need.
//!
//! `Direct`: /dev/kvm is a hardware KVM (kvm_intel or kvm_amd loaded, and not kvm-pvm, which runs only
//! PVM-enlightened guests); daxvmm runs on the host. `Nested`: qemu-system-x86_64 exists; daxvmm runs inside
//! the test host VM ([`crate::test_host`]). `DAXVMM_TEST_WHERE=direct|nested|skip` overrides the choice.

use std::path::{Path, PathBuf};

use crate::record::Skip;

/// `--where` of the harness binaries: a [`Where`], or `auto` for what [`detect`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhereArg {
    /// direct with a hardware KVM here, else nested
    Auto,
    /// on this host's KVM
    Direct,
    /// inside one test host VM (QEMU TCG with nested SVM)
    Nested,
}

impl WhereArg {
    /// The place it names; `auto` asks [`detect`].
    pub fn resolve(self) -> Result<Where, Skip> {
        match self {
            Self::Auto => detect(),
            Self::Direct => Ok(Where::Direct),
            Self::Nested => Ok(Where::Nested),
        }
    }
}

/// Where the guests of a batch boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// daxvmm runs on this host, on its hardware KVM.
    Direct,
    /// daxvmm runs inside the test host VM (QEMU TCG with nested SVM).
    Nested,
}

impl Where {
    /// The word used in the boot log and messages.
    pub fn name(self) -> &'static str {
        match self {
            Where::Direct => "direct",
            Where::Nested => "nested",
        }
    }
}

/// What detection looks at, gathered from the host (or made up by unit tests).
#[derive(Debug, Clone, Default)]
pub struct HostProbe {
    /// /dev/kvm exists.
    pub dev_kvm: bool,
    /// /sys/module/kvm_pvm exists.
    pub kvm_pvm: bool,
    /// /sys/module/kvm_intel or /sys/module/kvm_amd exists.
    pub kvm_hw: bool,
    /// qemu-system-x86_64 on PATH.
    pub qemu: Option<PathBuf>,
    /// The value of DAXVMM_TEST_WHERE, if set.
    pub forced: Option<String>,
}

impl HostProbe {
    /// Looks at this host.
    pub fn here() -> HostProbe {
        HostProbe {
            dev_kvm: Path::new("/dev/kvm").exists(),
            kvm_pvm: Path::new("/sys/module/kvm_pvm").exists(),
            kvm_hw: Path::new("/sys/module/kvm_intel").exists() || Path::new("/sys/module/kvm_amd").exists(),
            qemu: find_on_path("qemu-system-x86_64"),
            forced: std::env::var("DAXVMM_TEST_WHERE").ok().filter(|s| !s.is_empty()),
        }
    }
}

/// Decides where guests boot, or why they cannot.
pub fn classify(p: &HostProbe) -> Result<Where, Skip> {
    let hw = p.dev_kvm && p.kvm_hw && !p.kvm_pvm;
    match p.forced.as_deref() {
        Some("direct") if hw => return Ok(Where::Direct),
        Some("direct") => {
            return Err(Skip("DAXVMM_TEST_WHERE=direct but /dev/kvm is not a hardware KVM here".into()))
        }
        Some("nested") if p.qemu.is_some() => return Ok(Where::Nested),
        Some("nested") => {
            return Err(Skip("DAXVMM_TEST_WHERE=nested but qemu-system-x86_64 is not installed".into()))
        }
        Some("skip") => return Err(Skip("DAXVMM_TEST_WHERE=skip".into())),
        Some(other) => {
            return Err(Skip(format!("DAXVMM_TEST_WHERE={other} is not one of direct, nested, skip")))
        }
        None => {}
    }
    if hw {
        Ok(Where::Direct)
    } else if p.qemu.is_some() {
        Ok(Where::Nested)
    } else if p.kvm_pvm {
        Err(Skip(
            "/dev/kvm is kvm-pvm (no ordinary guests) and qemu-system-x86_64 is not installed for the \
                  test host VM; run scripts/setup-host.sh"
                .into(),
        ))
    } else {
        Err(Skip(
            "no hardware KVM and no qemu-system-x86_64 for the test host VM; run scripts/setup-host.sh"
                .into(),
        ))
    }
}

/// Detects where guests boot on this host.
pub fn detect() -> Result<Where, Skip> {
    classify(&HostProbe::here())
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// The files a guest boot needs, from the environment scripts/test.sh sets up.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// DAXVMM_BIN: the static daxvmm.
    pub daxvmm: PathBuf,
    /// DAXVMM_GUEST_KERNEL: the guest bzImage.
    pub kernel: PathBuf,
    /// DAXVMM_GUEST_INITRD: the guest initramfs.
    pub initrd: PathBuf,
    /// More files for the test host VM's /bin (nested runs only), e.g. the suite image.
    pub adds: Vec<PathBuf>,
}

impl Artifacts {
    /// All three artifacts; for `Nested`, daxvmm must also be statically linked.
    pub fn from_env(place: Where) -> Result<Artifacts, Skip> {
        let a = Artifacts {
            daxvmm: env_file("DAXVMM_BIN")?,
            kernel: env_file("DAXVMM_GUEST_KERNEL")?,
            initrd: env_file("DAXVMM_GUEST_INITRD")?,
            adds: Vec::new(),
        };
        if place == Where::Nested && has_elf_interpreter(&a.daxvmm) {
            return Err(Skip(format!(
                "DAXVMM_BIN={} is dynamically linked; the test host VM needs the static musl build \
                 (run scripts/test.sh)",
                a.daxvmm.display()
            )));
        }
        Ok(a)
    }
}

/// The file an environment variable names; a Skip that says what to run when it is unset or missing.
pub fn env_file(var: &str) -> Result<PathBuf, Skip> {
    match std::env::var_os(var) {
        None => Err(Skip(format!(
            "{var} not set (scripts/test.sh sets it; the linux-6.12 ones with --linux-6.12)"
        ))),
        Some(v) if v.is_empty() => Err(Skip(format!(
            "{var} not set (scripts/test.sh sets it; the linux-6.12 ones with --linux-6.12)"
        ))),
        Some(v) => {
            let p = PathBuf::from(v);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Skip(format!("{var}={} does not exist (run scripts/test.sh)", p.display())))
            }
        }
    }
}

/// Whether an ELF file has a PT_INTERP program header (is dynamically linked). Unreadable or non-ELF
/// files answer false; running them reports the real problem.
pub fn has_elf_interpreter(path: &Path) -> bool {
    std::fs::read(path).map(|b| elf_interpreter(&b)).unwrap_or(false)
}

fn elf_interpreter(b: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]) as usize);
    let u32_at = |o: usize| b.get(o..o + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    let u64_at = |o: usize| {
        b.get(o..o + 8).and_then(|s| <[u8; 8]>::try_from(s).ok()).map(|a| u64::from_le_bytes(a) as usize)
    };
    // 64-bit little-endian ELF only (that is what daxvmm is).
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..phnum).any(|i| u32_at(phoff + i * phentsize) == Some(PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(dev_kvm: bool, kvm_pvm: bool, kvm_hw: bool, qemu: bool) -> HostProbe {
        HostProbe {
            dev_kvm,
            kvm_pvm,
            kvm_hw,
            qemu: qemu.then(|| PathBuf::from("/usr/bin/qemu")),
            forced: None,
        }
    }

    #[test]
    fn hardware_kvm_boots_directly() {
        assert_eq!(classify(&probe(true, false, true, false)), Ok(Where::Direct));
        assert_eq!(classify(&probe(true, false, true, true)), Ok(Where::Direct));
    }

    #[test]
    fn kvm_pvm_or_no_kvm_uses_the_test_host_vm() {
        // kvm-pvm with kvm_amd loaded too is still not usable for ordinary guests.
        assert_eq!(classify(&probe(true, true, true, true)), Ok(Where::Nested));
        assert_eq!(classify(&probe(true, true, false, true)), Ok(Where::Nested));
        assert_eq!(classify(&probe(false, false, false, true)), Ok(Where::Nested));
        // /dev/kvm without kvm_intel/kvm_amd (some other KVM) is not trusted either.
        assert_eq!(classify(&probe(true, false, false, true)), Ok(Where::Nested));
    }

    #[test]
    fn nothing_usable_skips_with_a_reason() {
        let skip = classify(&probe(true, true, false, false)).expect_err("skip");
        assert!(skip.0.contains("kvm-pvm"), "{skip}");
        assert!(classify(&probe(false, false, false, false)).expect_err("skip").0.contains("setup-host"));
    }

    #[test]
    fn the_override_is_honoured_and_checked() {
        let mut p = probe(true, false, true, true);
        p.forced = Some("nested".into());
        assert_eq!(classify(&p), Ok(Where::Nested));
        p.forced = Some("skip".into());
        assert!(classify(&p).is_err());
        p.forced = Some("sideways".into());
        assert!(classify(&p).expect_err("bad value").0.contains("sideways"));
        let mut p = probe(true, true, true, true);
        p.forced = Some("direct".into());
        assert!(classify(&p).is_err());
    }

    #[test]
    fn elf_interpreter_is_found() {
        // A minimal ELF64 header with two program headers at 64; the second is PT_INTERP.
        let mut b = vec![0u8; 64 + 2 * 56];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x20] = 64;
        b[0x36] = 56;
        b[0x38] = 2;
        b[64] = 1; // PT_LOAD
        assert!(!elf_interpreter(&b));
        b[64 + 56] = 3; // PT_INTERP
        assert!(elf_interpreter(&b));
        assert!(!elf_interpreter(b"#!/bin/sh\n"));
    }

    #[test]
    fn this_test_binary_is_classified_like_ldd_would() {
        // Test binaries are built for the host (glibc, dynamic) unless the musl target is used.
        let me = std::env::current_exe().expect("current exe");
        let musl = cfg!(target_env = "musl");
        assert_eq!(has_elf_interpreter(&me), !musl);
    }
}
