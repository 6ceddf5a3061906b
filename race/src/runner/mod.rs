//! `daxvmm test` and `daxvmm repro`, from their options to their exit code: choose the runs, boot one
//! guest per transport through the [`GuestVm`] that runs them all under the fault injector, judge every
//! run, merge the boots ([`merge`]), print the table and write the reports and a repro file per
//! violation; or replay one repro file and say whether its violation came back.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daxvmm_devices::fault::FaultError;
use thiserror::Error;

use crate::guest::{BootSpec, GuestEnd, GuestVm, Transport, Transports};
use crate::library::{find as find_scenario, library, LibraryEntry};
use crate::plan::{self, Choice, PlannedRun};
use crate::report;
use crate::repro::{self, Repro, ReproError};
use crate::session::Session;
use crate::shard::Shard;
use crate::verdict::{self, GuestReport, Hello, RunResult};

mod merge;

/// Exit code of `daxvmm test` when any run found a violation.
pub const EXIT_VIOLATIONS: u8 = 10;
/// Exit code of `daxvmm repro` when the replay did not show the recorded violation.
pub const EXIT_NOT_REPRODUCED: u8 = 11;
/// The kernel refuses longer command lines (x86 COMMAND_LINE_SIZE).
const MAX_CMDLINE: usize = 2047;
/// Size of the second, raw NVDIMM: the non-DAX source of the O_DIRECT scenario.
const RAW_PMEM: u64 = 64 << 20;

/// How to boot the guest, for both commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    /// Guest kernel (bzImage); `repro` falls back on the repro file's.
    pub kernel: Option<PathBuf>,
    /// Guest initramfs with daxvmm-race; `repro` falls back on the repro file's.
    pub initrd: Option<PathBuf>,
    /// Where results go: results.tap, results.xml, console.log (console-TRANSPORT.log per boot with more
    /// than one transport) and repro/.
    pub out: PathBuf,
    /// Guest RAM in bytes.
    pub mem: u64,
    /// Size of the fsdax NVDIMM the filesystems are made on.
    pub pmem_size: u64,
    /// Stop the guest after this long.
    pub timeout: Duration,
    /// Show the guest console (it is always saved in `out`).
    pub verbose: bool,
}

/// What `daxvmm test` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOptions {
    /// The guest.
    pub boot: BootOptions,
    /// Scenario names; empty: all.
    pub scenario: Vec<String>,
    /// Filesystems (ext4, xfs).
    pub fs: Vec<String>,
    /// First seed for sampled schedules.
    pub seed: u64,
    /// Schedules sampled per large scenario and filesystem.
    pub samples: usize,
    /// Run every schedule of scenarios that have at most this many.
    pub max_enumerate: usize,
    /// vCPUs; `None`: the most threads any chosen scenario has, at least 2.
    pub cpus: Option<u8>,
    /// Longest hold of one thread at a sync point.
    pub hold_bound: Duration,
    /// Baseline mode: no schedules, random sleeps in the guest.
    pub sleeps: bool,
    /// Runs per scenario and filesystem in baseline mode.
    pub runs: usize,
    /// Only list the scenarios.
    pub list: bool,
    /// A deliberate bug of daxvmm's guest kernel to select at boot ([`crate::MUTANTS`]).
    pub mutant: Option<String>,
    /// Run only this part of the plan ([`Shard`]).
    pub shard: Option<Shard>,
    /// What the filesystems' NVDIMM is to the guest: one boot per transport, in this order, each running
    /// the plan; run k of the whole plan on transport index t is named run `k + t * whole plan length`.
    pub transports: Transports,
}

/// What `daxvmm repro` replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReproOptions {
    /// A repro file written by `daxvmm test`.
    pub file: PathBuf,
    /// The guest (kernel and initramfs default to the file's).
    pub boot: BootOptions,
    /// How many times to replay the run in the one boot, each on fresh files.
    pub replays: usize,
    /// Compare even when the guest kernel is not the recorded one.
    pub any_kernel: bool,
}

/// Why `daxvmm test` or `daxvmm repro` could not do its job.
#[derive(Debug, Error)]
pub enum RaceError {
    /// No kernel given.
    #[error("no guest kernel: give --kernel or set DAXVMM_KERNEL")]
    NoKernel,
    /// No initramfs given.
    #[error("no guest initramfs: give --initrd or set DAXVMM_INITRD")]
    NoInitrd,
    /// `--scenario` names one the library does not have.
    #[error("no scenario {name:?}; there are: {all}")]
    UnknownScenario {
        /// The name given.
        name: String,
        /// The library's names, comma-separated.
        all: String,
    },
    /// `--fs` names a filesystem the guest program cannot make.
    #[error("--fs {0}: ext4 and xfs are supported")]
    Filesystem(String),
    /// The plan does not fit on the kernel command line.
    #[error(
        "the plan is too long for the kernel command line ({0} bytes): choose fewer scenarios or filesystems"
    )]
    PlanTooLong(usize),
    /// The guest never ran daxvmm-race.
    #[error("the guest program daxvmm-race never started (the guest: {end}); is {initrd} the initramfs of scripts/build-initramfs.sh? See {console}")]
    NeverStarted {
        /// How the guest ended.
        end: GuestEnd,
        /// The initramfs booted.
        initrd: String,
        /// Where the console was saved.
        console: String,
    },
    /// `--mutant` names no mutant the guest kernel has.
    #[error("no mutant {name:?}; daxvmm's guest kernel has: {all}")]
    UnknownMutant {
        /// The name given.
        name: String,
        /// The mutants' names, comma-separated.
        all: String,
    },
    /// A mutant was asked for, but the guest kernel did not select it.
    #[error("the guest kernel did not select mutant {asked} (it reports: {got}); boot daxvmm's guest kernel (scripts/build-guest-kernel.sh), whose last patch has the mutants; see {console}")]
    MutantMissing {
        /// The mutant asked for.
        asked: String,
        /// What the guest reported.
        got: String,
        /// Where the console was saved.
        console: String,
    },
    /// The replay booted another kernel than the repro file recorded.
    #[error("the guest kernel is not the one the repro file recorded ({now} now, {then} then): give --kernel the recorded image, or --any-kernel to compare anyway")]
    OtherKernel {
        /// Release, config hash and build id now.
        now: String,
        /// The same, recorded.
        then: String,
    },
    /// The shard has no run of the plan.
    #[error("shard {shard} of a plan of {runs} runs has none: use at most {runs} shards")]
    EmptyShard {
        /// The shard asked for.
        shard: Shard,
        /// Runs in the whole plan.
        runs: usize,
    },
    /// `--replays` out of range.
    #[error("--replays {0}: give 1 to {MAX_REPLAYS}")]
    Replays(usize),
    /// The guest's driver is there but did not bind the fault injector, so nothing was forced.
    #[error("the guest has /dev/dax_refcount but its driver did not bind the fault injector (ACPI DAXF0001), so no schedule was enforced and the runs prove nothing; see the driver's lines in {console}")]
    NotForced {
        /// Where the console was saved.
        console: String,
    },
    /// A repro file names a scenario the library does not have.
    #[error("unknown scenario {0:?}")]
    ReproScenario(String),
    /// A repro file's schedule is not one of its scenario's.
    #[error("schedule {schedule} of {scenario}")]
    ReproSchedule {
        /// The schedule.
        schedule: String,
        /// The scenario.
        scenario: String,
        /// Why it does not fit.
        source: FaultError,
    },
    /// The repro file cannot be read.
    #[error(transparent)]
    Repro(#[from] ReproError),
    /// A results directory cannot be made.
    #[error("creating {path}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A results file cannot be written.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The VMM could not boot or run the guest, or refused an image.
    #[error(transparent)]
    Vm(anyhow::Error),
}

#[allow(clippy::print_stdout)] // The report is this command's output.
fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

fn images(vm: &impl GuestVm, b: &BootOptions) -> Result<(PathBuf, PathBuf), RaceError> {
    let kernel = b.kernel.clone().ok_or(RaceError::NoKernel)?;
    let initrd = b.initrd.clone().ok_or(RaceError::NoInitrd)?;
    vm.check_file("--kernel", &kernel).map_err(RaceError::Vm)?;
    vm.check_file("--initrd", &initrd).map_err(RaceError::Vm)?;
    Ok((kernel, initrd))
}

fn selected(names: &[String]) -> Result<Vec<LibraryEntry>, RaceError> {
    if names.is_empty() {
        return Ok(library());
    }
    names
        .iter()
        .map(|n| {
            find_scenario(n).ok_or_else(|| {
                let all: Vec<String> = library().iter().map(|e| e.scenario.name().to_string()).collect();
                RaceError::UnknownScenario { name: n.clone(), all: all.join(", ") }
            })
        })
        .collect()
}

/// `daxvmm test`: runs the chosen scenarios in one guest per transport booted by `vm`, reports, and
/// returns the exit code (0, or [`EXIT_VIOLATIONS`] when a run of any boot found a violation). A boot
/// that fails entirely ends the session with its error.
pub fn test(vm: &impl GuestVm, a: &TestOptions) -> Result<u8, RaceError> {
    let (code, text) = test_session(vm, a)?;
    out(&text);
    Ok(code)
}

/// [`test`] without printing: its exit code and what it prints.
fn test_session(vm: &impl GuestVm, a: &TestOptions) -> Result<(u8, String), RaceError> {
    if a.list {
        return Ok((0, list()));
    }
    let entries = selected(&a.scenario)?;
    if let Some(fs) = a.fs.iter().find(|f| !matches!(f.as_str(), "ext4" | "xfs")) {
        return Err(RaceError::Filesystem(fs.clone()));
    }
    let choice = if a.sleeps {
        Choice::Baseline { runs: a.runs }
    } else {
        Choice::Forced { limit: a.max_enumerate, samples: a.samples, seed: a.seed }
    };
    if let Some(m) = a.mutant.as_deref().filter(|m| crate::find_mutant(m).is_none()) {
        return Err(RaceError::UnknownMutant { name: m.to_string(), all: crate::mutants::names() });
    }
    let whole = plan::build(&entries, &a.fs, choice);
    let plan = match a.shard {
        Some(shard) => shard.select(&whole),
        None => whole.clone(),
    };
    if plan.is_empty() {
        if let Some(shard) = a.shard {
            return Err(RaceError::EmptyShard { shard, runs: whole.len() });
        }
    }
    let cpus = a.cpus.unwrap_or_else(|| entries.iter().map(|e| e.threads()).max().unwrap_or(2).max(2) as u8);
    let (kernel, initrd) = images(vm, &a.boot)?;
    log::info!(
        "daxvmm test: {} runs ({} scenarios x {} filesystems{}), {cpus} vCPUs, hold bound {} ms{}",
        plan.len(),
        entries.len(),
        a.fs.len(),
        a.shard.map_or(String::new(), |s| format!(", shard {s} of {} runs", whole.len())),
        a.hold_bound.as_millis(),
        if a.sleeps { ", baseline (sleeps, no schedules)" } else { "" }
    );
    let started = Instant::now();
    let transports = a.transports.as_slice();
    let mut boots = Vec::with_capacity(transports.len());
    for (t, &transport) in transports.iter().enumerate() {
        if transports.len() > 1 {
            // The progress lines count each boot's runs from 1: say which boot they belong to.
            log::info!("daxvmm test: boot {} of {} on {transport}", t + 1, transports.len());
        }
        let guest = GuestSetup {
            cpus,
            transport,
            bound: a.hold_bound,
            sleeps: a.sleeps,
            mutant: a.mutant.as_deref(),
            console: merge::console_file(transport, transports.len()),
        };
        let mut boot = boot(vm, &a.boot, &kernel, &initrd, &plan, &guest).inspect_err(|e| {
            if transports.len() > 1 {
                log::error!(
                    "daxvmm test: the boot on {transport} (boot {} of {}) failed: {e}",
                    t + 1,
                    transports.len()
                );
            }
        })?;
        // Runs are named by their place in the whole plan and their transport, so that shards' and
        // transports' reports merge.
        merge::number(&mut boot.results, a.shard, t, whole.len());
        boots.push(boot);
    }
    let secs = started.elapsed().as_secs_f64();
    // boot() made --out (the console files are there).
    let results = merge::merged(&boots);
    write(&a.boot.out.join("results.tap"), &report::tap(&results))?;
    write(&a.boot.out.join("results.xml"), &report::junit(&results))?;
    let recorded =
        merge::Recorded { kernel: &kernel, initrd: &initrd, cpus, bound: a.hold_bound, whole: whole.len() };
    let repro_files = merge::write_repros(&boots, &a.boot.out, &recorded)?;
    let mut s = merge::summary(&boots, secs);
    if let Some(shard) = a.shard {
        s.push_str(&format!(
            "shard {shard}: runs numbered by their place in the whole plan of {} runs\n",
            whole.len()
        ));
    }
    if transports.len() > 1 {
        s.push_str(&format!(
            "transports {}: one boot each; run k of the whole plan of {w} runs on transport t (from 0) is run k + t*{w}\n",
            a.transports,
            w = whole.len()
        ));
    }
    s.push_str(&merge::results_line(&a.boot.out, &boots));
    for p in &repro_files {
        s.push_str(&format!("repro file: {}\n", p.display()));
    }
    let violations = results.iter().any(RunResult::failed);
    Ok((if violations { EXIT_VIOLATIONS } else { 0 }, s))
}

/// `--list`: one line per library scenario.
fn list() -> String {
    library()
        .iter()
        .map(|e| {
            format!(
                "{:<26} {} threads, {:>3} schedules{}  {}\n",
                e.scenario.name(),
                e.threads(),
                e.forcible(1000).map_or_else(
                    || e.scenario.interleaving_count().unwrap_or(u128::MAX),
                    |all| all.len() as u128
                ),
                if e.needs_driver { ", driver" } else { "" },
                e.about
            )
        })
        .collect()
}

/// `daxvmm repro`: replays the repro file's run in a guest booted by `vm` and returns the exit code (0
/// when the recorded violation came back, else [`EXIT_NOT_REPRODUCED`]).
pub fn repro(vm: &impl GuestVm, a: &ReproOptions) -> Result<u8, RaceError> {
    if !(1..=MAX_REPLAYS).contains(&a.replays) {
        return Err(RaceError::Replays(a.replays));
    }
    let rep = Repro::load(&a.file)?;
    let entry = find_scenario(&rep.scenario).ok_or_else(|| RaceError::ReproScenario(rep.scenario.clone()))?;
    entry.scenario.check(&rep.schedule).map_err(|source| RaceError::ReproSchedule {
        schedule: rep.schedule.to_string(),
        scenario: rep.scenario.clone(),
        source,
    })?;
    let kernel = a.boot.kernel.clone().unwrap_or_else(|| rep.kernel.clone());
    let initrd = a.boot.initrd.clone().unwrap_or_else(|| rep.initrd.clone());
    vm.check_file("--kernel (or the repro file's kernel:)", &kernel).map_err(RaceError::Vm)?;
    vm.check_file("--initrd (or the repro file's initrd:)", &initrd).map_err(RaceError::Vm)?;
    let run = PlannedRun {
        scenario: rep.scenario.clone(),
        fs: rep.fs.clone(),
        schedule: Some(rep.schedule.clone()),
        seed: rep.seed,
    };
    let plan = vec![run; a.replays];
    log::info!(
        "daxvmm repro: {} on {} under [{}]{}, {} time(s)",
        rep.scenario,
        rep.fs,
        rep.schedule,
        rep.mutant.as_deref().map_or(String::new(), |m| format!(" with mutant {m}")),
        a.replays
    );
    let bound = Duration::from_millis(rep.bound_ms);
    let guest = GuestSetup {
        cpus: rep.cpus,
        transport: rep.transport,
        bound,
        sleeps: false,
        mutant: rep.mutant.as_deref(),
        console: "console.log".to_string(),
    };
    let boot = boot(vm, &a.boot, &kernel, &initrd, &plan, &guest)?;
    if let Some(h) = &boot.guest.hello {
        let id = |release: &str, config: &str, build: &str| {
            let build = if build.is_empty() { "unknown" } else { short(build) };
            format!("{release}, config {}, build id {build}", short(config))
        };
        let known = !h.build_id.is_empty() && !rep.build_id.is_empty();
        let other = h.kernel != rep.kernel_release
            || h.config_sha256 != rep.config_sha256
            || (known && h.build_id != rep.build_id);
        if other {
            let now = id(&h.kernel, &h.config_sha256, &h.build_id);
            let then = id(&rep.kernel_release, &rep.config_sha256, &rep.build_id);
            if !a.any_kernel {
                return Err(RaceError::OtherKernel { now, then });
            }
            log::warn!("the guest kernel is not the recorded one ({now} now, {then} then); comparing anyway");
        }
    }
    let mut s = String::from("recorded:\n");
    rep.findings.iter().for_each(|f| s.push_str(&format!("  {f}\n")));
    if !rep.kernel_events.is_empty() {
        s.push_str(&format!("recorded kernel events: {}\n", rep.kernel_events.join(" ")));
    }
    let mut came_back = 0;
    for (i, r) in boot.results.iter().enumerate() {
        s.push_str(&format!("replay {} of {}:\n", i + 1, a.replays));
        r.findings.iter().for_each(|f| s.push_str(&format!("  {f}\n")));
        if r.findings.is_empty() {
            s.push_str("  (no violation)\n");
        }
        // The same violation, and (when the file has them) the kernel's events in the same order.
        let same_events = rep.kernel_events.is_empty() || r.kernel_order == rep.kernel_events;
        if !same_events {
            s.push_str(&format!("  kernel events in another order: {}\n", r.kernel_order.join(" ")));
        }
        came_back += usize::from(repro::reproduced(&rep.findings, &r.findings) && same_events);
    }
    let kinds: Vec<&str> = repro::identity(&rep.findings).iter().map(|k| k.name()).collect();
    let all = came_back == a.replays;
    s.push_str(&if all {
        format!(
            "reproduced: the same violation ({}){} came back in {came_back} of {} replays\n",
            kinds.join(", "),
            if rep.kernel_events.is_empty() { "" } else { ", with the same kernel event order," },
            a.replays
        )
    } else {
        format!(
            "NOT reproduced: the recorded violation ({}) came back in {came_back} of {} replays\n",
            kinds.join(", "),
            a.replays
        )
    });
    out(&s);
    Ok(if all { 0 } else { EXIT_NOT_REPRODUCED })
}

/// One guest boot's results.
struct BootResult {
    results: Vec<RunResult>,
    guest: GuestReport,
    /// The runs alone, without the boot.
    span: Option<Duration>,
    /// The guest console's last lines, shown with a crash: all there is when --out is lost with a VM.
    tail: Vec<String>,
    /// What the filesystems' NVDIMM was.
    transport: Transport,
    /// The boot's whole time, guest boot included.
    elapsed: Duration,
}

/// How many guest console lines a crash report shows.
const CRASH_TAIL_LINES: usize = 20;

/// Most replays `daxvmm repro --replays` makes in one boot.
pub const MAX_REPLAYS: usize = 100;

/// What a boot's guest gets besides its images and plan.
struct GuestSetup<'a> {
    cpus: u8,
    /// The filesystems' NVDIMM.
    transport: Transport,
    /// Hold bound.
    bound: Duration,
    /// Baseline mode.
    sleeps: bool,
    /// A mutant to select.
    mutant: Option<&'a str>,
    /// The file in --out the console is saved to.
    console: String,
}

/// Kernel messages below warnings stay in the guest's ring buffer: the console is a UART, one exit per
/// byte, and a boot's informational messages cost seconds nested. Every signature the oracle scans for
/// ([`crate::oracle::scan_log`]: warnings, BUGs, hung tasks, RCU stalls, filesystem errors) is printed at
/// warning level or above, so it still reaches the console.
const QUIET_CONSOLE: &str = "loglevel=5";

fn boot(
    vm: &impl GuestVm,
    b: &BootOptions,
    kernel: &Path,
    initrd: &Path,
    plan: &[PlannedRun],
    g: &GuestSetup<'_>,
) -> Result<BootResult, RaceError> {
    let (cpus, bound, sleeps) = (g.cpus, g.bound, g.sleeps);
    let cmdline = vm.kernel_cmdline(
        &g.mutant.map_or(QUIET_CONSOLE.to_string(), |m| format!("{QUIET_CONSOLE} daxvmm_mutant={m}")),
        &format!(
            "daxvmm-race --plan {}{}{}",
            plan::guest_plan(plan),
            match g.transport {
                // The guest numbers its pmem disks in probe order, which differs between the buses.
                Transport::Virtio => " --dev virtio --raw nfit",
                Transport::Nfit => " --raw /dev/pmem1",
            },
            if sleeps { " --sleeps" } else { "" }
        ),
    );
    if cmdline.len() > MAX_CMDLINE {
        return Err(RaceError::PlanTooLong(cmdline.len()));
    }
    let spec = BootSpec {
        kernel: kernel.to_path_buf(),
        initrd: initrd.to_path_buf(),
        cmdline,
        mem: b.mem,
        cpus,
        pmem_size: b.pmem_size,
        transport: g.transport,
        raw_pmem_size: RAW_PMEM,
        timeout: b.timeout,
        echo: b.verbose,
        bound,
    };
    let started = Instant::now();
    let pmem = vm.pmem();
    let session = Arc::new(Session::new(plan.to_vec(), pmem.clone()));
    let output = vm.boot(&spec, pmem, session.clone()).map_err(RaceError::Vm)?;
    let text = output.console;
    create_dir(&b.out)?;
    let console = b.out.join(&g.console);
    write(&console, &text)?;
    let guest = verdict::parse_console(&text);
    if guest.hello.is_none() {
        // The console file may be out of reach (a nested run's is inside the test host VM): show how the
        // guest kernel ended here.
        let tail = console_tail(&text);
        log::warn!("the guest console's last {} lines:\n{}", tail.len(), tail.join("\n"));
        return Err(RaceError::NeverStarted {
            end: output.end,
            initrd: initrd.display().to_string(),
            console: console.display().to_string(),
        });
    }
    if guest.hello.as_ref().is_some_and(|h: &Hello| h.driver && !h.fault) {
        return Err(RaceError::NotForced { console: console.display().to_string() });
    }
    if let (Some(asked), Some(h)) = (g.mutant, guest.hello.as_ref()) {
        if h.mutant.as_deref() != Some(asked) {
            return Err(RaceError::MutantMissing {
                asked: asked.to_string(),
                got: h.mutant.clone().unwrap_or_else(|| "none".into()),
                console: console.display().to_string(),
            });
        }
    }
    let stopped = match output.end {
        GuestEnd::PowerOff => None,
        GuestEnd::GuestFailed(s) => Some(format!("the guest program failed (status {s})")),
        GuestEnd::Panic(_) => Some("the guest kernel panicked".to_string()),
        GuestEnd::Reset => Some("the guest reset".to_string()),
        GuestEnd::Timeout => Some(format!("--timeout of {} s expired (a hang?)", b.timeout.as_secs_f64())),
        GuestEnd::Signal(s) => Some(format!("daxvmm was stopped by signal {s}")),
    };
    let results = verdict::combine(plan, g.transport, &session.records(), &guest, stopped.as_deref());
    Ok(BootResult {
        results,
        guest,
        span: session.span(),
        tail: console_tail(&text),
        transport: g.transport,
        elapsed: started.elapsed(),
    })
}

/// The last [`CRASH_TAIL_LINES`] lines of a guest console.
fn console_tail(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(CRASH_TAIL_LINES)..].iter().map(|l| l.to_string()).collect()
}

fn create_dir(path: &Path) -> Result<(), RaceError> {
    std::fs::create_dir_all(path)
        .map_err(|source| RaceError::CreateDir { path: path.display().to_string(), source })
}

fn write(path: &Path, text: &str) -> Result<(), RaceError> {
    std::fs::write(path, text).map_err(|source| RaceError::Write { path: path.display().to_string(), source })
}

fn abs(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
