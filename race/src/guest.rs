//! What the race runner needs from the VMM ([`GuestVm`]): one guest boot ([`BootSpec`]) with the fault
//! injector reporting to the runner's observer, the guest console captured, and the pmem backing memory
//! readable by the oracle ([`PmemReader`]) while the guest runs; and how that boot ended
//! ([`BootOutput`]). daxvmm implements it with KVM; nothing here needs KVM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use daxvmm_devices::fault::RunObserver;

/// Reads the guest's pmem from the host, for the oracle.
pub trait PmemReader: Send + Sync + std::fmt::Debug {
    /// Fills `buf` from guest-physical address `gpa`; false when the range is not all in pmem, or the
    /// guest is not running.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool;
}

/// How the guest sees the NVDIMM the filesystems are made on (`daxvmm test --transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// An ACPI NFIT NVDIMM.
    #[default]
    Nfit,
    /// A virtio-pmem device on virtio-mmio.
    Virtio,
}

impl Transport {
    /// The name on the command line and in repro files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Nfit => "nfit",
            Self::Virtio => "virtio",
        }
    }
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nfit" => Ok(Self::Nfit),
            "virtio" => Ok(Self::Virtio),
            _ => Err(format!("transport '{s}': nfit or virtio")),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // pad: tables align it by width.
        f.pad(self.name())
    }
}

/// The transports of one `daxvmm test` (`--transport nfit,virtio`): one guest boot each, in this order.
/// Never empty and without repeats, so every run has one place in the merged results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transports(Vec<Transport>);

/// Why a `--transport` list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a list of transports: give nfit, virtio or both comma-separated (nfit,virtio), each at most once")]
pub struct TransportsError(String);

impl Transports {
    /// Just `t`.
    pub fn one(t: Transport) -> Self {
        Self(vec![t])
    }

    /// In the order given.
    pub fn as_slice(&self) -> &[Transport] {
        &self.0
    }
}

impl Default for Transports {
    fn default() -> Self {
        Self::one(Transport::default())
    }
}

impl From<Transport> for Transports {
    fn from(t: Transport) -> Self {
        Self::one(t)
    }
}

impl std::str::FromStr for Transports {
    type Err = TransportsError;

    fn from_str(s: &str) -> Result<Self, TransportsError> {
        let mut list = Vec::new();
        for name in s.split(',') {
            let t: Transport = name.parse().map_err(|_| TransportsError(s.to_string()))?;
            if list.contains(&t) {
                return Err(TransportsError(s.to_string()));
            }
            list.push(t);
        }
        Ok(Self(list))
    }
}

impl std::fmt::Display for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|t| t.name()).collect();
        f.write_str(&names.join(","))
    }
}

/// One guest boot of `daxvmm test` or `daxvmm repro`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSpec {
    /// Guest kernel (bzImage).
    pub kernel: PathBuf,
    /// Guest initramfs with daxvmm-race.
    pub initrd: PathBuf,
    /// The whole kernel command line, from [`GuestVm::kernel_cmdline`].
    pub cmdline: String,
    /// Guest RAM in bytes.
    pub mem: u64,
    /// vCPUs.
    pub cpus: u8,
    /// Size of the first NVDIMM, which the filesystems are made on.
    pub pmem_size: u64,
    /// What that NVDIMM is to the guest (the raw one is always on the NFIT).
    pub transport: Transport,
    /// Size of the second NVDIMM, left raw (the non-DAX source of the O_DIRECT scenario).
    pub raw_pmem_size: u64,
    /// Stop the guest after this long.
    pub timeout: Duration,
    /// Show the guest console as well as capturing it.
    pub echo: bool,
    /// Longest time the fault injector holds one sync arrival.
    pub bound: Duration,
}

/// How a guest boot ended; shown as "powered off", "timeout", ... in messages and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestEnd {
    /// Clean power-off with exit status 0 (or none reported).
    PowerOff,
    /// Power-off after the guest reported this non-zero exit status.
    GuestFailed(u8),
    /// The guest kernel panicked (pvpanic value).
    Panic(u8),
    /// The guest reset or triple-faulted.
    Reset,
    /// The timeout expired.
    Timeout,
    /// The VMM got this termination signal.
    Signal(u8),
}

impl std::fmt::Display for GuestEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PowerOff => f.write_str("powered off"),
            Self::GuestFailed(s) => write!(f, "powered off, guest exit status {s}"),
            Self::Panic(_) => f.write_str("guest kernel panic"),
            Self::Reset => f.write_str("reset"),
            Self::Timeout => f.write_str("timeout"),
            Self::Signal(sig) => write!(f, "signal {sig}"),
        }
    }
}

/// What a guest boot left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOutput {
    /// How it ended.
    pub end: GuestEnd,
    /// Everything the guest wrote to its console.
    pub console: String,
}

/// A VMM that can boot the race runner's guests.
pub trait GuestVm {
    /// Its pmem reader.
    type Pmem: PmemReader + 'static;

    /// The kernel command line with `kernel_args` (may be empty) for the kernel, that has the guest's
    /// init run `command` (its words after `--`).
    fn kernel_cmdline(&self, kernel_args: &str, command: &str) -> String;

    /// Checks that `path` is a readable regular file; `what` names it in the error (e.g. "--kernel").
    fn check_file(&self, what: &'static str, path: &Path) -> anyhow::Result<()>;

    /// A pmem reader for the next boot, to share with the oracle; the boot attaches it while the guest
    /// runs.
    fn pmem(&self) -> Arc<Self::Pmem>;

    /// Boots the guest of `spec` and runs it to its end, with `observer` getting the fault injector's
    /// run-begin, event and run-end callbacks and `pmem` attached to the NVDIMMs.
    fn boot(
        &self,
        spec: &BootSpec,
        pmem: Arc<Self::Pmem>,
        observer: Arc<dyn RunObserver>,
    ) -> anyhow::Result<BootOutput>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_list_keeps_its_order_and_refuses_empty_unknown_and_repeated_names() {
        let both: Transports = "nfit,virtio".parse().unwrap();
        assert_eq!(both.as_slice(), [Transport::Nfit, Transport::Virtio]);
        assert_eq!(both.to_string(), "nfit,virtio");
        let reversed: Transports = "virtio,nfit".parse().unwrap();
        assert_eq!(reversed.as_slice(), [Transport::Virtio, Transport::Nfit]);
        assert_eq!("virtio".parse::<Transports>().unwrap(), Transports::one(Transport::Virtio));
        assert_eq!("nfit".parse::<Transports>().unwrap(), Transports::default());
        assert_eq!(Transports::default().as_slice(), [Transport::Nfit]);
        for bad in [
            "",
            ",",
            "nfit,",
            ",virtio",
            "pci",
            "nfit,pci",
            "nfit,nfit",
            "virtio,nfit,virtio",
            "NFIT",
            " nfit",
        ] {
            let e = bad.parse::<Transports>().unwrap_err().to_string();
            assert_eq!(
                e,
                format!("'{bad}' is not a list of transports: give nfit, virtio or both comma-separated (nfit,virtio), each at most once")
            );
        }
    }
}
