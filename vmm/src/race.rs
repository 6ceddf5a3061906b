//! `daxvmm test` and `daxvmm repro` on KVM: their command line, handed to the race runner (the
//! `daxvmm-race` crate, which owns the scenarios, the oracle, the reports and the repro files), and
//! [`KvmGuests`], the runner's [`GuestVm`]: one guest boot with the fault injector reporting to the
//! runner, the console captured and pmem readable from the host.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use daxvmm_devices::fault::RunObserver;
use daxvmm_race::{
    BootOptions, BootOutput, BootSpec, GuestEnd, GuestVm, PmemReader, ReproOptions, TestOptions,
};

use crate::cli::{self, BASE_CMDLINE};
use crate::console::Capture;
use crate::pmem::view::PmemView;
use crate::pmem_spec::PmemSpec;
use crate::units::{format_size, parse_duration, parse_size};
use crate::vm::{self, Outcome, RaceHooks, VmConfig};

#[derive(Debug, Parser)]
#[command(
    name = "daxvmm",
    version,
    about = "Force fs-dax truncate/unpin interleavings in a guest and check them from the host",
    after_help = "\
Examples:
  daxvmm test --kernel bzImage --initrd initrd.cpio.lz4
  daxvmm test --scenario truncate-unpin --fs xfs --out /tmp/race
  daxvmm test --list
  daxvmm repro daxvmm-results/repro/truncate-unpin-ext4-run3.repro

The guest needs the initramfs of scripts/build-initramfs.sh (it runs daxvmm-race) and, for the scenarios
that pin through the driver, a kernel with guest-kernel/patches (scripts/build-guest-kernel.sh).
docs/fault-injection.md describes the device, the schedules and the oracle."
)]
struct RaceCli {
    #[command(subcommand)]
    cmd: RaceCmd,
}

#[derive(Debug, Subcommand)]
enum RaceCmd {
    /// Run race scenarios, each under every schedule (or seeded samples), and report violations.
    /// Exit codes: 0 no violation, 10 violations (repro files written), 1 error, 2 usage.
    Test(TestArgs),
    /// Replay a repro file. Exit codes: 0 the same violation came back, 11 it did not, 1 error.
    Repro(ReproArgs),
}

#[derive(Debug, Args)]
struct Boot {
    /// Guest kernel (bzImage); default $DAXVMM_KERNEL.
    #[arg(long, value_name = "PATH", env = "DAXVMM_KERNEL")]
    kernel: Option<PathBuf>,
    /// Guest initramfs with daxvmm-race (scripts/build-initramfs.sh); default $DAXVMM_INITRD.
    #[arg(long, value_name = "PATH", env = "DAXVMM_INITRD")]
    initrd: Option<PathBuf>,
    /// Where results go: results.tap, results.xml, console.log and repro/.
    #[arg(long, value_name = "DIR", default_value = "daxvmm-results")]
    out: PathBuf,
    /// Guest RAM.
    #[arg(long, value_name = "SIZE", default_value = "768M", value_parser = parse_size)]
    mem: u64,
    /// Size of the fsdax NVDIMM the filesystems are made on (a second, 64M raw one is added).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pmem_size: u64,
    /// Stop the guest after this long; the run it was in is reported as a crash (a hang?).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    timeout: Duration,
    /// Show the guest console (it is always saved to DIR/console.log).
    #[arg(long)]
    verbose: bool,
}

#[derive(Debug, Args)]
struct TestArgs {
    #[command(flatten)]
    boot: Boot,
    /// Scenarios to run (repeat or comma-separate); default all. See --list.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    scenario: Vec<String>,
    /// Filesystems, comma-separated.
    #[arg(long, value_name = "FS", value_delimiter = ',', default_value = "ext4,xfs")]
    fs: Vec<String>,
    /// First seed for sampled schedules (scenarios with more than --max-enumerate schedules).
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Schedules sampled per large scenario and filesystem.
    #[arg(long, value_name = "N", default_value_t = 12)]
    samples: usize,
    /// Run every schedule of scenarios that have at most this many.
    #[arg(long, value_name = "N", default_value_t = 24)]
    max_enumerate: usize,
    /// vCPUs (default: the most threads any chosen scenario has, at least 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=8))]
    cpus: Option<u8>,
    /// Longest time the host holds one thread at a sync point; a schedule the kernel cannot follow
    /// (it blocks the thread the schedule waits for) shows up as "blocked" after this.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    hold_bound: Duration,
    /// Baseline mode: no schedules; the guest sleeps a random 0-2 ms before each sync point instead.
    #[arg(long)]
    sleeps: bool,
    /// Runs per scenario and filesystem in --sleeps mode.
    #[arg(long, value_name = "N", default_value_t = 20)]
    runs: usize,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

#[derive(Debug, Args)]
struct ReproArgs {
    /// A repro file written by `daxvmm test`.
    file: PathBuf,
    #[command(flatten)]
    boot: Boot,
}

impl Boot {
    fn options(&self) -> BootOptions {
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
    fn options(&self) -> TestOptions {
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
        }
    }
}

impl ReproArgs {
    fn options(&self) -> ReproOptions {
        ReproOptions { file: self.file.clone(), boot: self.boot.options() }
    }
}

/// Entry point for `daxvmm test ...` and `daxvmm repro ...`; returns the exit code.
pub fn main(args: Vec<String>) -> u8 {
    let cli = match RaceCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    crate::init_logging(level.parse().unwrap_or(log::LevelFilter::Info));
    let r = match cli.cmd {
        RaceCmd::Test(a) => daxvmm_race::test(&KvmGuests, &a.options()),
        RaceCmd::Repro(a) => daxvmm_race::repro(&KvmGuests, &a.options()),
    };
    r.unwrap_or_else(|e| {
        let e = anyhow::Error::from(e);
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        log::error!("{}", chain.join(": "));
        1
    })
}

/// The race runner's guests, booted with KVM.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvmGuests;

impl PmemReader for PmemView {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        PmemView::read(self, gpa, buf)
    }
}

impl GuestVm for KvmGuests {
    type Pmem = PmemView;

    fn kernel_cmdline(&self, command: &str) -> String {
        format!("{BASE_CMDLINE} -- {command}")
    }

    fn check_file(&self, what: &'static str, path: &Path) -> anyhow::Result<()> {
        Ok(cli::check_file(what, path)?)
    }

    fn pmem(&self) -> Arc<PmemView> {
        Arc::new(PmemView::default())
    }

    fn boot(
        &self,
        spec: &BootSpec,
        pmem: Arc<PmemView>,
        observer: Arc<dyn RunObserver>,
    ) -> anyhow::Result<BootOutput> {
        let regions = vec![
            PmemSpec::parse(&format_size(spec.pmem_size))
                .map_err(anyhow::Error::msg)
                .context("--pmem-size")?,
            PmemSpec::parse(&format_size(spec.raw_pmem_size)).map_err(anyhow::Error::msg)?,
        ];
        let capture = Capture::new(spec.echo);
        let cfg = VmConfig {
            kernel: spec.kernel.clone(),
            initrd: Some(spec.initrd.clone()),
            cmdline: spec.cmdline.clone(),
            mem: spec.mem,
            cpus: spec.cpus,
            timeout: Some(spec.timeout),
            xsave: crate::xsave_policy(cli::XsaveArg::Auto),
            pmem: regions,
            fault_schedule: None,
            race: Some(RaceHooks { observer, pmem, console: capture.clone(), bound: spec.bound }),
        };
        crate::check_config(&cfg)?;
        let end = match vm::run(&cfg, Instant::now())? {
            Outcome::PowerOff => GuestEnd::PowerOff,
            Outcome::GuestFailed(s) => GuestEnd::GuestFailed(s),
            Outcome::Panic(v) => GuestEnd::Panic(v),
            Outcome::Reset => GuestEnd::Reset,
            Outcome::Timeout => GuestEnd::Timeout,
            Outcome::Signal(s) => GuestEnd::Signal(s),
        };
        Ok(BootOutput { end, console: capture.text() })
    }
}
