//! `daxvmm test` and `daxvmm repro`: boot a guest that runs the race scenario library under the fault
//! injector, judge every run with the host-side oracle, report (table, TAP, JUnit XML) and write a repro
//! file per violation; and replay a repro file to check that its violation comes back.
//!
//! One job per module: `plan` (which runs, in guest order), `session` (the injector's run observer: arm,
//! host-side checks), `verdict` (guest console + host records → per-run results), `report` (table, TAP,
//! JUnit), `repro` (the repro file format and what counts as the same violation).

mod plan;
mod report;
mod repro;
mod session;
mod verdict;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use daxvmm_devices::fault::{find_scenario, library, FindingKind, LibraryEntry};

use self::plan::{Choice, PlannedRun};
use self::repro::Repro;
use self::session::Session;
use self::verdict::{GuestReport, Hello, RunResult};
use crate::cli::{self, BASE_CMDLINE};
use crate::console::Capture;
use crate::pmem::spec::PmemSpec;
use crate::pmem::view::PmemView;
use crate::units::{format_size, parse_duration, parse_size};
use crate::vm::{self, Outcome, RaceHooks, VmConfig};

/// Exit code of `daxvmm test` when any run found a violation.
pub const EXIT_VIOLATIONS: u8 = 10;
/// Exit code of `daxvmm repro` when the replay did not show the recorded violation.
pub const EXIT_NOT_REPRODUCED: u8 = 11;
/// The kernel refuses longer command lines (x86 COMMAND_LINE_SIZE).
const MAX_CMDLINE: usize = 2047;
/// Size of the second, raw NVDIMM: the non-DAX source of the O_DIRECT scenario.
const RAW_PMEM: &str = "64M";

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
        RaceCmd::Test(a) => test(&a),
        RaceCmd::Repro(a) => replay(&a),
    };
    r.unwrap_or_else(|e| {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        log::error!("{}", chain.join(": "));
        1
    })
}

#[allow(clippy::print_stdout)] // The report is this command's output.
fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

fn images(b: &Boot) -> anyhow::Result<(PathBuf, PathBuf)> {
    let kernel = b.kernel.clone().context("no guest kernel: give --kernel or set DAXVMM_KERNEL")?;
    let initrd = b.initrd.clone().context("no guest initramfs: give --initrd or set DAXVMM_INITRD")?;
    cli::check_file("--kernel", &kernel)?;
    cli::check_file("--initrd", &initrd)?;
    Ok((kernel, initrd))
}

fn selected(names: &[String]) -> anyhow::Result<Vec<LibraryEntry>> {
    if names.is_empty() {
        return Ok(library());
    }
    names
        .iter()
        .map(|n| {
            find_scenario(n).with_context(|| {
                let all: Vec<String> = library().iter().map(|e| e.scenario.name().to_string()).collect();
                format!("no scenario {n:?}; there are: {}", all.join(", "))
            })
        })
        .collect()
}

fn test(a: &TestArgs) -> anyhow::Result<u8> {
    if a.list {
        out(&list());
        return Ok(0);
    }
    let entries = selected(&a.scenario)?;
    if let Some(fs) = a.fs.iter().find(|f| !matches!(f.as_str(), "ext4" | "xfs")) {
        bail!("--fs {fs}: ext4 and xfs are supported");
    }
    let choice = if a.sleeps {
        Choice::Baseline { runs: a.runs }
    } else {
        Choice::Forced { limit: a.max_enumerate, samples: a.samples, seed: a.seed }
    };
    let plan = plan::build(&entries, &a.fs, choice);
    let cpus = a.cpus.unwrap_or_else(|| entries.iter().map(|e| e.threads()).max().unwrap_or(2).max(2) as u8);
    let (kernel, initrd) = images(&a.boot)?;
    log::info!(
        "daxvmm test: {} runs ({} scenarios x {} filesystems), {cpus} vCPUs, hold bound {:?}{}",
        plan.len(),
        entries.len(),
        a.fs.len(),
        a.hold_bound,
        if a.sleeps { ", baseline (sleeps, no schedules)" } else { "" }
    );
    let started = Instant::now();
    let boot = boot(&a.boot, &kernel, &initrd, &plan, cpus, a.hold_bound, a.sleeps)?;
    let secs = started.elapsed().as_secs_f64();
    // boot() made --out (console.log is there).
    write(&a.boot.out.join("results.tap"), &report::tap(&boot.results))?;
    write(&a.boot.out.join("results.xml"), &report::junit(&boot.results))?;
    let repro_files = write_repros(&boot, &a.boot.out, &kernel, &initrd, cpus, a.hold_bound)?;
    let runs_secs = boot.span.map_or(secs, |d| d.as_secs_f64());
    let mut s = summary(&boot, secs, runs_secs);
    s.push_str(&format!("results: {}/results.tap, results.xml, console.log\n", a.boot.out.display()));
    for p in &repro_files {
        s.push_str(&format!("repro file: {}\n", p.display()));
    }
    out(&s);
    let violations = boot.results.iter().any(RunResult::failed);
    Ok(if violations { EXIT_VIOLATIONS } else { 0 })
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
                e.scenario.interleaving_count().unwrap_or(u128::MAX),
                if e.needs_driver { ", driver" } else { "" },
                e.about
            )
        })
        .collect()
}

/// A repro file per violating run with a schedule, in `out/repro/`; their paths.
fn write_repros(
    boot: &BootResult,
    out: &Path,
    kernel: &Path,
    initrd: &Path,
    cpus: u8,
    bound: Duration,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    let hello = boot.guest.hello.as_ref();
    for r in boot.results.iter().filter(|r| r.failed()) {
        let Some(rep) = Repro::of(r, &abs(kernel), &abs(initrd), hello, cpus, bound.as_millis() as u64)
        else {
            continue;
        };
        let dir = out.join("repro");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(rep.file_name(r.run));
        write(&path, &rep.render(&r.fault_log, &r.log))?;
        paths.push(path);
    }
    Ok(paths)
}

/// The guest kernel, the table, every violation and the totals.
fn summary(boot: &BootResult, secs: f64, runs_secs: f64) -> String {
    let mut s = String::new();
    if let Some(h) = &boot.guest.hello {
        let driver = if h.driver { "bound" } else { "absent" };
        s.push_str(&format!(
            "guest kernel {} (config sha256 {}), driver {driver}\n",
            h.kernel,
            short(&h.config_sha256)
        ));
    }
    s.push_str(&report::table(&report::rows(&boot.results)));
    for r in boot.results.iter().filter(|r| r.failed()) {
        s.push_str(&format!("VIOLATION run {} {} on {}:\n", r.run, r.planned.scenario, r.planned.fs));
        for f in &r.findings {
            s.push_str(&format!("  {f}\n"));
        }
    }
    if boot.results.iter().flat_map(|r| &r.findings).any(|f| f.kind == FindingKind::Crash) {
        s.push_str("the guest console's last lines:\n");
        for l in &boot.tail {
            s.push_str(&format!("  | {l}\n"));
        }
    }
    let violations = boot.results.iter().filter(|r| r.failed()).count();
    let skipped = boot.results.iter().filter(|r| r.skipped.is_some()).count();
    s.push_str(&format!(
        "daxvmm test: {} runs in {secs:.1} s with the boot, {runs_secs:.1} s of runs ({:.0} runs/minute), {violations} with violations, {skipped} skipped; guest boots: 1\n",
        boot.results.len(),
        boot.results.len() as f64 * 60.0 / runs_secs.max(0.001)
    ));
    s
}

fn replay(a: &ReproArgs) -> anyhow::Result<u8> {
    let rep = Repro::load(&a.file)?;
    let entry =
        find_scenario(&rep.scenario).with_context(|| format!("unknown scenario {:?}", rep.scenario))?;
    entry
        .scenario
        .check(&rep.schedule)
        .with_context(|| format!("schedule {} of {}", rep.schedule, rep.scenario))?;
    let kernel = a.boot.kernel.clone().unwrap_or_else(|| rep.kernel.clone());
    let initrd = a.boot.initrd.clone().unwrap_or_else(|| rep.initrd.clone());
    cli::check_file("--kernel (or the repro file's kernel:)", &kernel)?;
    cli::check_file("--initrd (or the repro file's initrd:)", &initrd)?;
    let plan = vec![PlannedRun {
        scenario: rep.scenario.clone(),
        fs: rep.fs.clone(),
        schedule: Some(rep.schedule.clone()),
        seed: rep.seed,
    }];
    log::info!("daxvmm repro: {} on {} under [{}]", rep.scenario, rep.fs, rep.schedule);
    let bound = Duration::from_millis(rep.bound_ms);
    let boot = boot(&a.boot, &kernel, &initrd, &plan, rep.cpus, bound, false)?;
    if let Some(h) = &boot.guest.hello {
        if h.kernel != rep.kernel_release || h.config_sha256 != rep.config_sha256 {
            log::warn!(
                "the guest kernel differs from the recorded one: {} (config {}) now, {} (config {}) then",
                h.kernel,
                short(&h.config_sha256),
                rep.kernel_release,
                short(&rep.config_sha256)
            );
        }
    }
    let got = boot.results.first().map(|r| r.findings.clone()).unwrap_or_default();
    let mut s = String::from("recorded:\n");
    rep.findings.iter().for_each(|f| s.push_str(&format!("  {f}\n")));
    s.push_str("replay:\n");
    got.iter().for_each(|f| s.push_str(&format!("  {f}\n")));
    if got.is_empty() {
        s.push_str("  (no violation)\n");
    }
    let same = repro::reproduced(&rep.findings, &got);
    let kinds: Vec<&str> = repro::identity(&rep.findings).iter().map(|k| k.name()).collect();
    s.push_str(&if same {
        format!("reproduced: the same violation ({}) came back\n", kinds.join(", "))
    } else {
        format!("NOT reproduced: the replay did not show the recorded violation ({})\n", kinds.join(", "))
    });
    out(&s);
    Ok(if same { 0 } else { EXIT_NOT_REPRODUCED })
}

/// One guest boot's results.
struct BootResult {
    results: Vec<RunResult>,
    guest: GuestReport,
    /// The runs alone, without the boot.
    span: Option<Duration>,
    /// The guest console's last lines, shown with a crash: all there is when --out is lost with a VM.
    tail: Vec<String>,
}

/// How many guest console lines a crash report shows.
const CRASH_TAIL_LINES: usize = 20;

fn boot(
    b: &Boot,
    kernel: &Path,
    initrd: &Path,
    plan: &[PlannedRun],
    cpus: u8,
    bound: Duration,
    sleeps: bool,
) -> anyhow::Result<BootResult> {
    let cmdline = format!(
        "{BASE_CMDLINE} -- daxvmm-race --plan {} --raw /dev/pmem1{}",
        plan::guest_plan(plan),
        if sleeps { " --sleeps" } else { "" }
    );
    if cmdline.len() > MAX_CMDLINE {
        bail!("the plan is too long for the kernel command line ({} bytes): choose fewer scenarios or filesystems", cmdline.len());
    }
    let pmem = vec![
        PmemSpec::parse(&format_size(b.pmem_size)).map_err(anyhow::Error::msg).context("--pmem-size")?,
        PmemSpec::parse(RAW_PMEM).map_err(anyhow::Error::msg)?,
    ];
    let view = Arc::new(PmemView::default());
    let session = Arc::new(Session::new(plan.to_vec(), view.clone()));
    let capture = Capture::new(b.verbose);
    let cfg = VmConfig {
        kernel: kernel.to_path_buf(),
        initrd: Some(initrd.to_path_buf()),
        cmdline,
        mem: b.mem,
        cpus,
        timeout: Some(b.timeout),
        xsave: crate::xsave_policy(cli::XsaveArg::Auto),
        pmem,
        fault_schedule: None,
        race: Some(RaceHooks { observer: session.clone(), pmem: view, console: capture.clone(), bound }),
    };
    crate::check_config(&cfg)?;
    let outcome = vm::run(&cfg, Instant::now())?;
    let text = capture.text();
    std::fs::create_dir_all(&b.out).with_context(|| format!("creating {}", b.out.display()))?;
    write(&b.out.join("console.log"), &text)?;
    let guest = verdict::parse_console(&text);
    if guest.hello.is_none() {
        bail!(
            "the guest program daxvmm-race never started ({outcome:?}); is {} the initramfs of scripts/build-initramfs.sh? See {}",
            initrd.display(),
            b.out.join("console.log").display()
        );
    }
    if guest.hello.as_ref().is_some_and(|h: &Hello| h.driver && !h.fault) {
        log::warn!("the guest has /dev/dax_refcount but its driver did not bind the fault injector: nothing was forced");
    }
    let stopped = match outcome {
        Outcome::PowerOff => None,
        Outcome::GuestFailed(s) => Some(format!("the guest program failed (status {s})")),
        Outcome::Panic(_) => Some("the guest kernel panicked".to_string()),
        Outcome::Reset => Some("the guest reset".to_string()),
        Outcome::Timeout => Some(format!("--timeout {:?} expired (a hang?)", b.timeout)),
        Outcome::Signal(s) => Some(format!("daxvmm was stopped by signal {s}")),
    };
    let results = verdict::combine(plan, &session.records(), &guest, stopped.as_deref());
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(CRASH_TAIL_LINES)..].iter().map(|l| l.to_string()).collect();
    Ok(BootResult { results, guest, span: session.span(), tail })
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn abs(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_crash_report_shows_the_guest_console_tail() {
        let plan = vec![PlannedRun {
            scenario: "truncate-unpin".into(),
            fs: "ext4".into(),
            schedule: None,
            seed: None,
        }];
        let text = "@@race hello run=0 kernel=7.2.12 config-sha256=abc driver=yes fault=yes cpus=2\n\
                    @@race begin run=0 scenario=truncate-unpin fs=ext4\nlast words\n";
        let guest = verdict::parse_console(text);
        let results = verdict::combine(&plan, &BTreeMap::new(), &guest, Some("the guest reset"));
        let boot = BootResult { results, guest, span: None, tail: vec!["last words".into()] };
        let s = summary(&boot, 1.0, 1.0);
        assert!(s.contains("crash: the guest reset during this run"), "{s}");
        assert!(s.contains("the guest console's last lines:\n  | last words\n"), "{s}");
        assert!(s.contains("1 with violations"), "{s}");
    }
}
