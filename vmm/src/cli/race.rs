//! The options of `daxvmm test` and `daxvmm repro`, as the race runner (the `daxvmm-race` crate) takes
//! them.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use daxvmm_race::{BootOptions, ReproOptions, Shard, TestOptions, Transports};

use crate::cli::run::MIN_MEM;
use crate::seccomp::SeccompMode;
use crate::units::{format_size, parse_size, parse_timeout, MIB};

/// Why a guest RAM size was refused.
#[derive(Debug, thiserror::Error)]
pub enum MemArgError {
    /// Not a size.
    #[error(transparent)]
    Size(#[from] crate::units::UnitError),
    /// Below [`MIN_MEM`].
    #[error("a guest needs at least {}", format_size(MIN_MEM))]
    TooSmall,
    /// Not a multiple of 2M.
    #[error("guest RAM must be a multiple of 2M")]
    Unaligned,
}

/// Guest RAM for `test` and `repro`: at least [`MIN_MEM`], a multiple of 2M.
pub(crate) fn parse_mem(s: &str) -> Result<u64, MemArgError> {
    let mem = parse_size(s)?;
    if mem < MIN_MEM {
        return Err(MemArgError::TooSmall);
    }
    if !mem.is_multiple_of(2 * MIB) {
        return Err(MemArgError::Unaligned);
    }
    Ok(mem)
}

/// How `test` and `repro` boot their guest.
#[derive(Debug, Clone, Args)]
pub struct Boot {
    /// Guest kernel: a bzImage, or a kernel build tree with the daxvmm patch series (its
    /// arch/x86/boot/bzImage, once its .config is checked); default $DAXVMM_KERNEL.
    #[arg(long, value_name = "PATH", env = "DAXVMM_KERNEL")]
    pub kernel: Option<PathBuf>,
    /// Guest initramfs with daxvmm-race (scripts/build-initramfs.sh); default $DAXVMM_INITRD.
    #[arg(long, value_name = "PATH", env = "DAXVMM_INITRD")]
    pub initrd: Option<PathBuf>,
    /// Where results go: results.tap, results.xml, console.log (console-nfit.log and console-virtio.log
    /// when `test` boots both transports) and repro/.
    #[arg(long, value_name = "DIR", default_value = "daxvmm-results")]
    pub out: PathBuf,
    /// Guest RAM.
    #[arg(long, value_name = "SIZE", default_value = "768M", value_parser = parse_mem)]
    pub mem: u64,
    /// Size of the fsdax NVDIMM the filesystems are made on (a second, 64M raw one is added).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub pmem_size: u64,
    /// Stop the guest after this long; the run it was in is reported as a crash (a hang?).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Show the guest console (it is always saved in DIR).
    #[arg(long)]
    pub verbose: bool,

    /// Seccomp filters on the threads that handle guest input (vCPUs, stdin): on (a system call outside
    /// a thread's filter ends daxvmm with a message naming it), log (let it through; the kernel logs it),
    /// or off.
    #[arg(long, value_name = "MODE", default_value = "on")]
    pub seccomp: SeccompMode,
}

/// The options of `daxvmm test`.
#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub boot: Boot,
    /// Scenarios to run (repeat or comma-separate); default all. See --list.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub scenario: Vec<String>,
    /// Filesystems, comma-separated.
    #[arg(long, value_name = "FS", value_delimiter = ',', default_value = "ext4,xfs")]
    pub fs: Vec<String>,
    /// First seed for sampled schedules (scenarios with more than --max-enumerate schedules).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Schedules sampled per large scenario and filesystem.
    #[arg(long, value_name = "N", default_value_t = 12)]
    pub samples: usize,
    /// Run every schedule of scenarios that have at most this many.
    #[arg(long, value_name = "N", default_value_t = 24)]
    pub max_enumerate: usize,
    /// vCPUs (default: the most threads any chosen scenario has, at least 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=8))]
    pub cpus: Option<u8>,
    /// Longest time the host holds one thread at a sync point; a schedule the kernel cannot follow
    /// (it blocks the thread the schedule waits for) shows up as "blocked" after this.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_timeout)]
    pub hold_bound: Duration,
    /// Baseline mode: no schedules and no kernel hold points; the guest sleeps a random 0-2 ms before
    /// each sync point instead.
    #[arg(long)]
    pub sleeps: bool,
    /// Runs per scenario and filesystem in --sleeps mode.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub runs: usize,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Select a deliberate bug of daxvmm's guest kernel at boot (daxvmm_mutant=NAME), to see
    /// which runs catch it (an unknown NAME is refused with the list of names).
    #[arg(long, value_name = "NAME")]
    pub mutant: Option<String>,
    /// Run only part I of N of the plan (a stable round-robin split: run k of the whole plan goes to
    /// part k mod N + 1), for a CI matrix or an indexed job; runs keep their numbers in the whole plan
    /// (plus t times its length on the t-th transport from 0, see --transport), so the parts'
    /// results.xml files merge.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// What the NVDIMM the filesystems are made on is to the guest: nfit (an ACPI NFIT NVDIMM), virtio
    /// (a virtio-pmem device; the guest kernel needs CONFIG_VIRTIO_MMIO and CONFIG_VIRTIO_PMEM), or
    /// both comma-separated (nfit,virtio): one guest boot per transport, in that order, each running
    /// the same plan (the same shard of it), with the results merged; run k of the whole plan on the
    /// t-th transport (from 0) is run k + t * (runs in the whole plan). The oracle reads the same
    /// backing either way. Repro files record the transport of their run.
    #[arg(long, value_name = "TRANSPORT[,TRANSPORT]", default_value = "nfit")]
    pub transport: Transports,
}

/// The options of `daxvmm repro`.
#[derive(Debug, Clone, Args)]
pub struct ReproArgs {
    /// A repro file written by `daxvmm test`.
    pub file: PathBuf,
    #[command(flatten)]
    pub boot: Boot,
    /// Replay the run this many times in the one boot, each on fresh files; "reproduced" only when
    /// the violation came back every time.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub replays: usize,
    /// Replay even when the guest kernel (release, config hash, build id) is not the recorded one.
    #[arg(long)]
    pub any_kernel: bool,
}

impl Boot {
    pub fn options(&self) -> BootOptions {
        BootOptions {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            out: self.out.clone(),
            mem: self.mem,
            pmem_size: self.pmem_size,
            timeout: self.timeout,
            verbose: self.verbose,
        }
    }
}

impl TestArgs {
    pub fn options(&self) -> TestOptions {
        TestOptions {
            boot: self.boot.options(),
            scenario: self.scenario.clone(),
            fs: self.fs.clone(),
            seed: self.seed,
            samples: self.samples,
            max_enumerate: self.max_enumerate,
            cpus: self.cpus,
            hold_bound: self.hold_bound,
            sleeps: self.sleeps,
            runs: self.runs,
            list: self.list,
            mutant: self.mutant.clone(),
            shard: self.shard,
            transports: self.transport.clone(),
        }
    }
}

impl ReproArgs {
    pub fn options(&self) -> ReproOptions {
        ReproOptions {
            file: self.file.clone(),
            boot: self.boot.options(),
            replays: self.replays,
            any_kernel: self.any_kernel,
        }
    }
}
