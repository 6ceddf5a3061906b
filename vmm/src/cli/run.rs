//! `daxvmm run` (also `daxvmm` with no subcommand): what a user can ask one guest run for, with the checks
//! that need no KVM (sizes, counts, files). Everything that fails here fails before any guest memory is
//! allocated or any file touched.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use daxvmm_devices::fault::Schedule;
use daxvmm_devices::layout::MAX_VCPUS;

use crate::boot::cpuid::XsavePolicy;
use crate::pmem::spec::PmemSpec;
use crate::seccomp::SeccompMode;
use crate::units::{format_size, parse_size, parse_timeout, MIB};
use crate::virtio::disk::DiskSpec;

/// The kernel command line every guest gets before the user's `--cmdline`.
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

/// Smallest guest RAM that leaves room for a kernel and initramfs.
pub const MIN_MEM: u64 = 64 * MIB;

/// The options of one guest run.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Guest kernel: a bzImage (x86 boot protocol 2.12+), e.g. from scripts/build-guest-kernel.sh, the
    /// same kernel's uncompressed vmlinux (entered at its ELF entry point: no decompression), or a
    /// kernel build tree (its arch/x86/boot/bzImage, once its .config has what the guest needs).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,

    /// Initial ramdisk (a cpio archive, compressed with any method the guest kernel can unpack), loaded
    /// at the top of low RAM.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,

    /// Extra kernel command line, appended to "console=ttyS0 reboot=k panic=1".
    /// Everything after "--" goes to the guest's init as arguments, e.g. --cmdline '-- cat /proc/iomem'.
    #[arg(long, value_name = "STR", default_value = "", allow_hyphen_values = true)]
    pub cmdline: String,

    /// Guest RAM with a K/M/G suffix, e.g. 512M or 2G (at least 64M, at most the host's RAM).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_size)]
    pub mem: u64,

    /// Number of vCPUs (1-8). More than one uses ACPI's MADT to bring up the others.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=MAX_VCPUS as i64))]
    pub cpus: u8,

    /// Stop the guest after this long and exit with code 4, e.g. 90s, 5m.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Stop the guest this long after its init started and exit with code 4, as --timeout does: the
    /// guest's own time, whatever the boot took. Init's start is the debug-port marker the project's
    /// initramfs sends (docs/guest-interface.md); a guest that never sends it runs until --timeout.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout_after_init: Option<Duration>,

    /// An emulated NFIT NVDIMM (the guest sees /dev/pmemN):
    /// SIZE[,file=PATH][,backing=auto|hugetlb-2m|hugetlb-1g|thp|anon][,share=on|off][,prefault=on|off][,resize=on|off][,addr=GPA][,type=nfit|e820|virtio][,label-size=N[,label-dsm=on|off]][,poison=OFFSET+LEN[:...]].
    /// Repeat for up to
    /// 8 NVDIMMs. SIZE is a multiple of 2M. Memory is committed only as the guest touches it. Default
    /// backing: 2M hugetlb pages when the pool has room, else THP. file= keeps the data across runs.
    /// type=e820 makes a legacy e820 pmem range (Linux's "e820" nvdimm bus, as memmap=nn!ss) instead of
    /// an NFIT NVDIMM; the guest needs CONFIG_X86_PMEM_LEGACY. type=virtio makes a virtio-pmem device on
    /// virtio-mmio, announced in the DSDT (the guest needs CONFIG_VIRTIO_MMIO and CONFIG_VIRTIO_PMEM);
    /// the guest's flushes msync a file= backing. label-size=N (128K to 16M) gives the
    /// NVDIMM a namespace label area (ndctl init-labels, create-namespace --size), served through its
    /// _DSM and its ACPI label methods _LSI/_LSR/_LSW; with file=PATH it is kept in PATH.labels.
    /// label-dsm=off (only with label-size=) leaves the label functions out of the _DSM, so the label
    /// methods alone serve the area; Linux then reaches it only when booted with
    /// nfit.override_dsm_mask=0x2 (docs/nfit.md). poison=OFFSET+LEN (multiples of 512, ':' between
    /// ranges) marks ranges poisoned from the start: the guest's first address-range scrub reports them,
    /// Linux lists them in the disk's badblocks and fails reads of them (a write clears them); the data
    /// itself is untouched.
    /// Example: --pmem 16G --pmem 1G,file=/var/tmp/pmem1.img
    #[arg(long, value_name = "SPEC", value_parser = PmemSpec::parse)]
    pub pmem: Vec<PmemSpec>,

    /// A raw image file as a virtio-blk disk: PATH[,ro]. Repeat for more; the guest sees them as
    /// /dev/vda, /dev/vdb, ... in the order given (serial numbers daxvmm-disk0, daxvmm-disk1, ...), e.g.
    /// --disk root.img,ro --cmdline 'root=/dev/vda ro' boots from an image. Its size must be a multiple of
    /// 512. ro: opened read-only, so the guest cannot change the file; without it the guest's writes go to
    /// the file and its flushes fdatasync it. The image is locked while daxvmm runs (shared with ro).
    /// The guest needs CONFIG_VIRTIO_MMIO and CONFIG_VIRTIO_BLK.
    #[arg(long, value_name = "PATH[,ro]", value_parser = DiskSpec::parse)]
    pub disk: Vec<DiskSpec>,

    /// Whether the guest may use XSAVE (and AVX): on, off, or auto, which turns it off when daxvmm itself
    /// runs inside a VM (nested KVM on an emulated CPU can lose track of the guest's XCR0).
    #[arg(long, value_name = "POLICY", default_value = "auto")]
    pub xsave: XsaveArg,

    /// Seccomp filters: one on the main thread that every thread inherits (no programs, network, ptrace,
    /// mounts or modules), narrower ones on the threads that handle guest input (vCPUs, stdin). on (a
    /// system call outside a thread's filter ends daxvmm with a message naming it), log (let it through;
    /// the kernel logs it), or off.
    #[arg(long, value_name = "MODE", default_value = "on")]
    pub seccomp: SeccompMode,

    /// Arm the fault injector (ACPI DAXF0001, docs/fault-injection.md) with this schedule: steps in order,
    /// THREAD.sPOINT (that guest thread's sync point), THREAD.eCODE (an event with that code) or
    /// THREAD.kNAME (a kernel hold point such as busy, sleep, woken, free), e.g.
    /// "0.e7 0.e8" (a break-layout wait begins, then ends). daxvmm reports at the end how far it got.
    #[arg(long, value_name = "SCHEDULE", value_parser = parse_schedule)]
    pub fault_schedule: Option<Schedule>,

    /// Boot the guest N times, one after the other, in this one process, and check after each run that it
    /// left no thread, mapping or memory behind (exit 1 naming the run if it did). For hunting flaky boots
    /// and for daxvmm's own lifecycle tests; the exit code is the last run's.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub repeat: u32,

    /// Log level for daxvmm's own messages (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,
}

/// Why a `--fault-schedule` was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleArgError {
    /// A step does not parse.
    #[error(transparent)]
    Step(#[from] daxvmm_devices::fault::FaultError),
    /// Nothing to enforce.
    #[error("the schedule has no steps (e.g. \"0.e7 0.e8\")")]
    Empty,
}

fn parse_schedule(s: &str) -> Result<Schedule, ScheduleArgError> {
    let schedule: Schedule = s.parse()?;
    if schedule.steps().is_empty() {
        return Err(ScheduleArgError::Empty);
    }
    Ok(schedule)
}

/// The `--xsave` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XsaveArg {
    /// Off inside a VM, on on bare metal.
    Auto,
    /// Everything KVM supports.
    On,
    /// No XSAVE, like the guest's `noxsave`.
    Off,
}

impl XsaveArg {
    /// The policy this choice means on this host.
    pub fn policy(self) -> XsavePolicy {
        match self {
            Self::On => XsavePolicy::On,
            Self::Off => XsavePolicy::Off,
            Self::Auto => XsavePolicy::for_this_host(),
        }
    }
}

/// A problem with the command line found after parsing.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The guest RAM size is outside what we can give.
    #[error("--mem {given}: {why}")]
    Mem {
        /// What the user asked for.
        given: String,
        /// Why it cannot be had.
        why: String,
    },
    /// A file the user named is missing or unreadable.
    #[error("{what} {path}: {err}")]
    File {
        /// Which flag.
        what: &'static str,
        /// The path given.
        path: String,
        /// The OS error.
        err: std::io::Error,
    },
    /// A file the user named is not a regular file.
    #[error("{what} {path} is not a regular file")]
    NotAFile {
        /// Which flag.
        what: &'static str,
        /// The path given.
        path: String,
    },
}

impl RunArgs {
    /// The full guest kernel command line.
    pub fn kernel_cmdline(&self) -> String {
        if self.cmdline.trim().is_empty() {
            BASE_CMDLINE.to_string()
        } else {
            format!("{BASE_CMDLINE} {}", self.cmdline.trim())
        }
    }

    /// Checks that need the host (its RAM size, the files) but not KVM.
    pub fn validate(&self, host_ram: u64) -> Result<(), CliError> {
        let mem_err = |why: String| CliError::Mem { given: format_size(self.mem), why };
        if self.mem < MIN_MEM {
            return Err(mem_err(format!("a guest needs at least {}", format_size(MIN_MEM))));
        }
        if self.mem > host_ram {
            return Err(mem_err(format!(
                "this host has only {:.1}G of RAM",
                host_ram as f64 / (1u64 << 30) as f64
            )));
        }
        if !self.mem.is_multiple_of(2 * MIB) {
            return Err(mem_err("must be a multiple of 2M".into()));
        }
        check_file("--kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_file("--initrd", initrd)?;
        }
        Ok(())
    }
}

/// Checks that `path` is a readable regular file; `what` names it in the error (e.g. "--kernel").
pub fn check_file(what: &'static str, path: &std::path::Path) -> Result<(), CliError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|err| CliError::File { what, path: shown.clone(), err })?;
    if !meta.is_file() {
        return Err(CliError::NotAFile { what, path: shown });
    }
    std::fs::File::open(path).map_err(|err| CliError::File { what, path: shown, err })?;
    Ok(())
}

/// Total RAM of this host, from sysinfo(2).
pub fn host_ram() -> u64 {
    // SAFETY: sysinfo only writes into the zeroed struct we pass, which lives for the call.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable sysinfo struct.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return u64::MAX;
    }
    (info.totalram as u64).saturating_mul(u64::from(info.mem_unit))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::cli::{Cli, Command};

    /// `daxvmm ARGS`, which must be a run.
    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        match Cli::try_parse_command(std::iter::once("daxvmm").chain(args.iter().copied()))? {
            Command::Run(run) => Ok(run),
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_cmdline() {
        let c = parse(&["--kernel", "/k"]).unwrap();
        assert_eq!(c.mem, 512 * MIB);
        assert_eq!(c.cpus, 1);
        assert_eq!(c.kernel_cmdline(), BASE_CMDLINE);
        let c = parse(&["--kernel", "/k", "--cmdline", "-- echo hi"]).unwrap();
        assert_eq!(c.kernel_cmdline(), format!("{BASE_CMDLINE} -- echo hi"));
    }

    #[test]
    fn rejects_bad_values_at_parse_time() {
        for args in [
            &["--kernel", "/k", "--cpus", "0"][..],
            &["--kernel", "/k", "--cpus", "9"],
            &["--kernel", "/k", "--mem", "12Q"],
            &["--kernel", "/k", "--timeout", "soon"],
            &["--kernel", "/k", "--fault-schedule", ""],
            &["--kernel", "/k", "--fault-schedule", "0.x1"],
            &["--kernel", "/k", "--fault-schedule", "0.e250"],
            &["--kernel", "/k", "--pmem", "3M"],
            &["--mem", "1G"],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn fault_schedule_text() {
        let c = parse(&["--kernel", "/k", "--fault-schedule", "0.e7 1.s2"]).unwrap();
        assert_eq!(c.fault_schedule.map(|s| s.to_string()).as_deref(), Some("0.e7 1.s2"));
        assert!(parse(&["--kernel", "/k"]).unwrap().fault_schedule.is_none());
    }

    #[test]
    fn validate_mem_and_files() {
        let host = 24 << 30;
        let c = parse(&["--kernel", "/nonexistent/bzImage"]).unwrap();
        assert!(matches!(c.validate(host), Err(CliError::File { .. })));
        let c = parse(&["--kernel", "/"]).unwrap();
        assert!(matches!(c.validate(host), Err(CliError::NotAFile { .. })));
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        for (mem, ok) in
            [("0", false), ("32M", false), ("100T", false), ("513M", false), ("64M", true), ("24G", true)]
        {
            let c = parse(&["--kernel", exe, "--mem", mem]).unwrap();
            assert_eq!(c.validate(host).is_ok(), ok, "--mem {mem}");
        }
        let c = parse(&["--kernel", exe, "--mem", "100T"]).unwrap();
        assert!(c.validate(host).unwrap_err().to_string().contains("only 24.0G"));
    }
}
