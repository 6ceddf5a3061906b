//! Running a batch of cases: one test host VM boot for all of them (Nested) or one daxvmm process each
//! (Direct). Every boot that ran is recorded in the boot log.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::case::{check_needs, rerun_set, stalled_boot, Case, Vmm, ALWAYS_EMULATION_FAULTS};
use crate::console::CaseLog;
use crate::host::{self, Artifacts, Where};
use crate::markers;
use crate::process::{run_with_deadline, run_with_input};
use crate::record::{record, record_boot, Record, Skip};
use crate::test_host::{self, End, Fault};

/// How long one case may take before the harness kills it (inside the test host VM, or on the host);
/// `DAXVMM_TEST_CASE_TIMEOUT` (seconds) overrides. Cases pass daxvmm a shorter --timeout of their own.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// The result of one case.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The VMM's exit code (128 + N when signal N killed it; 137 when the harness killed it).
    pub exit_code: i32,
    /// What the VMM printed: the guest console, and its own messages.
    pub console: String,
    /// How long it ran, measured on this host.
    pub wall: Duration,
    /// Where it ran.
    pub place: Where,
}

impl Outcome {
    /// Whether some console line, trimmed, equals `line`.
    pub fn has_line(&self, line: &str) -> bool {
        self.console.lines().any(|l| l.trim() == line)
    }

    /// Whether the console contains `text` anywhere.
    pub fn contains(&self, text: &str) -> bool {
        self.console.contains(text)
    }

    /// The TAP result of the check whose description contains `what`: `Some(true)` for ok.
    pub fn tap_result(&self, what: &str) -> Option<bool> {
        self.console.lines().map(str::trim).find_map(|l| {
            let passed = if l.starts_with("ok ") {
                true
            } else if l.starts_with("not ok ") {
                false
            } else {
                return None;
            };
            l.split_once(" - ").filter(|(_, desc)| desc.contains(what)).map(|_| passed)
        })
    }

    /// A row of `daxvmm test`'s table: (tried, observed, blocked, skipped, violations) of `scenario` on
    /// `fs`.
    pub fn race_row(&self, scenario: &str, fs: &str) -> Option<[usize; 5]> {
        self.race_columns(scenario, fs, None).and_then(|n| n[..5].try_into().ok())
    }

    /// The stale-window column of `scenario`'s row on `fs`: runs in which a new file got a block still
    /// pinned.
    pub fn stale_windows(&self, scenario: &str, fs: &str) -> Option<usize> {
        self.race_columns(scenario, fs, None).map(|n| n[5])
    }

    /// The counts of `scenario`'s row on `fs` and `transport` (nfit or virtio) in the race table.
    pub fn race_row_on(&self, scenario: &str, fs: &str, transport: &str) -> Option<[usize; 5]> {
        self.race_columns(scenario, fs, Some(transport)).and_then(|n| n[..5].try_into().ok())
    }

    /// The row's six counts; the table's columns are scenario, fs, transport, then the counts.
    fn race_columns(&self, scenario: &str, fs: &str, transport: Option<&str>) -> Option<[usize; 6]> {
        self.console.lines().find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.len() != 9 || w[0] != scenario || w[1] != fs || transport.is_some_and(|t| w[2] != t) {
                return None;
            }
            let n: Vec<usize> = w[3..].iter().filter_map(|x| x.parse().ok()).collect();
            n.try_into().ok()
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<&str> = self.console.lines().collect();
        let tail = &lines[lines.len().saturating_sub(80)..];
        writeln!(
            f,
            "exit code {} after {:.1}s ({}); console, last {} lines:",
            self.exit_code,
            self.wall.as_secs_f64(),
            self.place.name(),
            tail.len()
        )?;
        for l in tail {
            writeln!(f, "  | {l}")?;
        }
        Ok(())
    }
}

/// Why a case has no [`Outcome`]. Clone (the I/O errors are shared) so that [`Batch::get`] can hand it
/// out while the batch keeps it.
#[derive(Debug, Clone, Error)]
pub enum RunError {
    /// The batch has no case of this name.
    #[error("no case named {name} in this batch; ask for one of the batch's case names")]
    NoSuchCase {
        /// The name asked for.
        name: String,
    },
    /// The case's setup snippet ran on this host and failed.
    #[error("setup `{setup}` exited {code}:\n{output}")]
    SetupFailed {
        /// The snippet.
        setup: String,
        /// Its exit code.
        code: i32,
        /// Its stdout, then its stderr.
        output: String,
    },
    /// The case's setup snippet could not start on this host.
    #[error("cannot run setup `{setup}`: {source}")]
    SetupSpawn {
        /// The snippet.
        setup: String,
        /// Why sh could not run it.
        source: Arc<io::Error>,
    },
    /// The VMM could not start on this host.
    #[error("cannot run {}: {source}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why it could not start.
        source: Arc<io::Error>,
    },
    /// The test host VM stopped while the case ran.
    #[error("the test host VM stopped during this case {vm}\nthe case's own output:\n{partial}")]
    Stopped {
        /// How the VM ended.
        vm: VmEnd,
        /// What the case printed until then.
        partial: String,
    },
    /// The test host VM ended before it reached the case.
    #[error("the test host VM never ran this case {vm}")]
    NeverRan {
        /// How the VM ended.
        vm: VmEnd,
    },
}

/// How the test host VM of a case with no result ended: its fault, if any, how long it ran, its console
/// log and the last console lines outside the cases.
#[derive(Debug, Clone)]
pub struct VmEnd {
    /// The VM's fault; `None` when the batch was done.
    pub fault: Option<Fault>,
    /// How long it ran.
    pub elapsed: Duration,
    /// The copy of its console.
    pub console_log: PathBuf,
    /// Its console lines outside the cases, joined.
    pub outside: String,
}

impl fmt::Display for VmEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fault {
            Some(fault) => write!(f, "(the test host VM failed: {fault}")?,
            None => f.write_str("(the batch was done")?,
        }
        write!(
            f,
            ", {:.0}s; console: {}); last console lines outside cases:\n{}",
            self.elapsed.as_secs_f64(),
            self.console_log.display(),
            self.outside
        )
    }
}

/// Each case's outcome, or why it has none, by name.
pub type Outcomes = BTreeMap<String, Result<Outcome, RunError>>;

/// The results of a batch, by case name; a case that did not finish carries the reason.
#[derive(Debug)]
pub struct Batch {
    /// Where the batch ran.
    pub place: Where,
    /// Each case's outcome, or why there is none.
    pub outcomes: Outcomes,
}

impl Batch {
    /// The outcome of case `name`, or why it has none.
    pub fn get(&self, name: &str) -> Result<&Outcome, RunError> {
        match self.outcomes.get(name) {
            Some(Ok(o)) => Ok(o),
            Some(Err(e)) => Err(e.clone()),
            None => Err(RunError::NoSuchCase { name: name.into() }),
        }
    }
}

/// Runs all cases where this host can boot guests, or says why it cannot; `{kernel}` is the bzImage the
/// environment variable `kernel_var` names.
pub fn run_batch(cases: &[Case], kernel_var: &str) -> Result<Batch, Skip> {
    run_batch_with(cases, kernel_var, false)
}

/// [`run_batch`]; with `kvm_hold`, a nested batch's test host VM keeps one idle KVM VM open for its whole
/// life, from the static `daxvmm-kvm-hold` that `DAXVMM_KVM_HOLD_BIN` names (scripts/test.sh builds it).
pub fn run_batch_with(cases: &[Case], kernel_var: &str, kvm_hold: bool) -> Result<Batch, Skip> {
    run_batch_inner(cases, kernel_var, kvm_hold, Vec::new(), None)
}

/// [`run_batch`] with more host files the cases use, named in their arguments by [`added_path`] (in
/// the test host VM they are copied into /bin), and cases that may take `case_timeout` each (when that
/// is longer than [`CASE_TIMEOUT`] or `DAXVMM_TEST_CASE_TIMEOUT`).
pub fn run_batch_adding(
    cases: &[Case],
    kernel_var: &str,
    adds: Vec<PathBuf>,
    case_timeout: Duration,
) -> Result<Batch, Skip> {
    run_batch_inner(cases, kernel_var, false, adds, Some(case_timeout))
}

/// Where a file given to [`run_batch_adding`] is for the cases: the host path, or in the test host VM
/// /bin/NAME.
pub fn added_path(place: Where, host_path: &std::path::Path) -> String {
    match (place, host_path.file_name()) {
        (Where::Nested, Some(name)) => format!("/bin/{}", name.to_string_lossy()),
        _ => host_path.display().to_string(),
    }
}

fn run_batch_inner(
    cases: &[Case],
    kernel_var: &str,
    kvm_hold: bool,
    adds: Vec<PathBuf>,
    case_timeout: Option<Duration>,
) -> Result<Batch, Skip> {
    if let Err(e) = cases.iter().try_for_each(Case::validate).and_then(|()| check_needs(cases)) {
        return Err(Skip(format!("invalid case: {e}")));
    }
    let place = host::detect()?;
    let art = Artifacts { kernel: host::env_file(kernel_var)?, adds, ..Artifacts::from_env(place)? };
    let outcomes = match place {
        Where::Direct => run_direct(cases, &art),
        Where::Nested => {
            let mut plan = Nested::tests();
            plan.case_timeout = plan.case_timeout.max(case_timeout.unwrap_or_default());
            if kvm_hold {
                plan.kvm_hold = Some(host::env_file("DAXVMM_KVM_HOLD_BIN")?);
            }
            run_nested(cases, &art, &plan)?
        }
    };
    Ok(Batch { place, outcomes })
}

fn case_timeout() -> Duration {
    std::env::var("DAXVMM_TEST_CASE_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(CASE_TIMEOUT, Duration::from_secs)
}

// Progress lines: visible with --nocapture (scripts/test.sh passes it), captured otherwise.
#[allow(clippy::print_stderr)]
fn progress(msg: &str) {
    eprintln!("daxvmm-tests: {msg}");
}

fn run_direct(cases: &[Case], art: &Artifacts) -> Outcomes {
    let mut out = BTreeMap::new();
    for c in cases {
        let program: PathBuf = match c.vmm {
            Vmm::Daxvmm => art.daxvmm.clone(),
            Vmm::Qemu => PathBuf::from("qemu-system-x86_64"),
        };
        let tmp = direct_tmp();
        let args = c.args_with(&art.kernel, &art.initrd, &tmp);
        if let Some(setup) = c.setup_with(&tmp, &art.kernel, &art.initrd, &art.daxvmm) {
            match run_with_deadline(Command::new("sh").args(["-c", &setup]), case_timeout()) {
                Ok(r) if r.code == 0 => {}
                Ok(r) => {
                    let output = r.stdout + &r.stderr;
                    out.insert(c.name.clone(), Err(RunError::SetupFailed { setup, code: r.code, output }));
                    continue;
                }
                Err(e) => {
                    out.insert(c.name.clone(), Err(RunError::SetupSpawn { setup, source: Arc::new(e) }));
                    continue;
                }
            }
        }
        let input = c.input.as_ref().map(|(d, t)| (Duration::from_secs(*d), t.clone().into_bytes()));
        let res = run_with_input(Command::new(&program).args(&args), case_timeout(), input);
        let outcome = match res {
            Ok(r) => {
                if c.boots {
                    record_boot(Where::Direct, &c.name, r.code);
                }
                let mut console = r.stdout;
                if !r.stderr.is_empty() {
                    console.push_str("--- stderr ---\n");
                    console.push_str(&r.stderr);
                }
                if r.timed_out {
                    console.push_str(&format!(
                        "--- killed by the harness after {}s ---\n",
                        case_timeout().as_secs()
                    ));
                }
                progress(&format!(
                    "direct: case {} exited {} after {:.1}s",
                    c.name,
                    r.code,
                    r.wall.as_secs_f64()
                ));
                Ok(Outcome { exit_code: r.code, console, wall: r.wall, place: Where::Direct })
            }
            Err(e) => Err(RunError::Spawn { program, source: Arc::new(e) }),
        };
        out.insert(c.name.clone(), outcome);
    }
    out
}

/// Scratch directory for `{tmp}` when cases run on this host: one per test process.
fn direct_tmp() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("daxvmm-tests-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// How long the test host VM's console may stay silent before the harness calls it hung.
/// Cases print every few seconds (guest boot lines, TAP lines, one line per race run); the longest
/// legitimate quiet stretch is a wedged guest left to daxvmm's own --timeout (240 s at most in these
/// tests), whose "timeout" report must still arrive. Shorter than the default (case timeout + 60 s):
/// each real test host VM hang costs this much.
const L1_STALL: Duration = Duration::from_secs(270);

/// How many test host VMs of a nested batch of the tests may end without one more case done (see
/// [`Nested::attempts`]).
const L1_ATTEMPTS: usize = 3;

/// Where the console of a nested run goes as it arrives, besides the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Nowhere.
    Off,
    /// All of it to stderr (`DAXVMM_TEST_VERBOSE`).
    Stderr,
    /// The cases' output to stdout, without the markers and the test host VM's own lines.
    CasesToStdout,
}

/// How a nested batch runs.
#[derive(Debug, Clone)]
pub struct Nested {
    /// Test host VMs that may end without one more case done. A VM after which fewer cases lack a
    /// result (or show an emulation fault, [`Case::nested_fault`]) than before it does not count, so a
    /// long batch whose VMs each get some way survives more faults; twice this many VMs in all at most.
    pub attempts: usize,
    /// The limit on each case inside the VM.
    pub case_timeout: Duration,
    /// The VM's stall limit.
    pub stall: Duration,
    /// The limit on one VM's run; `None`: 180 s plus the case timeout per case.
    pub total: Option<Duration>,
    /// Record boots, faults and reruns in the boot log.
    pub record: bool,
    /// Where the console goes as it arrives.
    pub echo: Echo,
    /// The static daxvmm-kvm-hold for the test host VM to keep one idle KVM VM open (see
    /// [`SharedBatch::holding_kvm`](crate::SharedBatch::holding_kvm)); `None`: as `DAXVMM_KVM_HOLD` says.
    pub kvm_hold: Option<PathBuf>,
}

impl Nested {
    /// The integration tests': three VMs that may end with no case done (six in all), the stall limit
    /// [`L1_STALL`], `DAXVMM_TEST_CASE_TIMEOUT`, recorded, echoed with `DAXVMM_TEST_VERBOSE`.
    pub fn tests() -> Nested {
        let verbose = std::env::var_os("DAXVMM_TEST_VERBOSE").is_some_and(|v| v != "0");
        Nested {
            attempts: L1_ATTEMPTS,
            case_timeout: case_timeout(),
            stall: L1_STALL,
            total: None,
            record: true,
            echo: if verbose { Echo::Stderr } else { Echo::Off },
            kvm_hold: None,
        }
    }
}

/// Runs the cases in one test host VM. When that VM dies before the batch is done (its own kernel stops
/// running user space, panics on a watchdog or resets: rare faults of QEMU TCG's nested SVM that no
/// in-VM timeout can catch), or a case shows its emulation-fault text, those cases run again in a new
/// one with the cases linked to them by [`Case::needs`] ([`rerun_set`]), until [`Nested::attempts`] VMs
/// have ended without one more case done, or twice that many in all. `Err` when no VM could run the
/// batch (bad input, KVM could not be set up): a new one would fail the same way.
pub fn run_nested(cases: &[Case], art: &Artifacts, plan: &Nested) -> Result<Outcomes, Skip> {
    let mut out = Outcomes::new();
    let mut todo = cases.to_vec();
    let mut budget = Budget::new(plan.attempts, cases.len());
    loop {
        for (name, res) in run_nested_once(&todo, art, plan)? {
            if replaces(out.get(&name), &res) {
                out.insert(name, res);
            }
        }
        let why = |c: &Case| rerun_reason(c, out.get(&c.name));
        if plan.record {
            for c in todo.iter().filter(|c| why(c) == Some(EMULATION_FAULT)) {
                record(&Record::Fault("guest-fault".into(), c.name.clone()));
            }
        }
        todo = rerun_set(cases, |c| why(c).is_some());
        if !budget.another(cases.iter().filter(|c| why(c).is_some()).count()) {
            break;
        }
        let reasons: Vec<String> =
            cases.iter().filter_map(|c| why(c).map(|w| format!("{} ({w})", c.name))).collect();
        let needed: Vec<&str> = todo.iter().filter(|c| why(c).is_none()).map(|c| c.name.as_str()).collect();
        if plan.record {
            for c in &todo {
                record(&Record::Rerun(
                    c.name.clone(),
                    why(c).unwrap_or("needed by a case that runs again").into(),
                ));
            }
        }
        progress(&format!(
            "nested: running {} cases again in a new test host VM ({}): {}{}",
            todo.len(),
            budget,
            reasons.join(", "),
            if needed.is_empty() {
                String::new()
            } else {
                format!("; with the cases linked to them by needs: {}", needed.join(" "))
            }
        ));
    }
    Ok(out)
}

/// How many more test host VMs a nested batch may use (see [`Nested::attempts`]).
#[derive(Debug)]
struct Budget {
    /// VMs that may end with no case done.
    attempts: usize,
    /// VMs so far.
    vms: usize,
    /// VMs so far that ended with no case done.
    fruitless: usize,
    /// Cases that still needed a VM after the last one.
    left: usize,
}

impl Budget {
    fn new(attempts: usize, cases: usize) -> Budget {
        Budget { attempts, vms: 0, fruitless: 0, left: cases }
    }

    /// Counts one more VM, after which `pending` cases still need one; whether another may run.
    fn another(&mut self, pending: usize) -> bool {
        self.vms += 1;
        self.fruitless += usize::from(pending >= self.left);
        self.left = pending;
        pending > 0 && self.fruitless < self.attempts && self.vms < 2 * self.attempts
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VM {} of at most {}; {} of the {} that may end with no case done have",
            self.vms + 1,
            2 * self.attempts,
            self.fruitless,
            self.attempts
        )
    }
}

const EMULATION_FAULT: &str = "emulation fault in its output";

/// Whether a case's result from a new test host VM replaces the one an earlier VM gave. A needed case
/// that finished before keeps that result if the new VM fails too; a case that was running when an
/// earlier VM died keeps that error over a later VM's that never reached it (one that wedged while
/// booting), because only the first says anything about the case.
fn replaces(old: Option<&Result<Outcome, RunError>>, new: &Result<Outcome, RunError>) -> bool {
    !matches!(
        (old, new),
        (Some(Ok(_)), Err(_)) | (Some(Err(RunError::Stopped { .. })), Err(RunError::NeverRan { .. }))
    )
}

/// Why a case must run again in a new test host VM, if it must.
fn rerun_reason(c: &Case, res: Option<&Result<Outcome, RunError>>) -> Option<&'static str> {
    match res {
        Some(Ok(o)) => {
            let mut faults = c.nested_fault.iter().map(String::as_str).chain(ALWAYS_EMULATION_FAULTS);
            (faults.any(|t| o.contains(t)) || stalled_boot(&o.console)).then_some(EMULATION_FAULT)
        }
        _ => Some("no result: its test host VM died"),
    }
}

#[allow(clippy::print_stderr, clippy::print_stdout)] // the echo of the console, as asked for
fn echo(how: Echo, line: &str) {
    match how {
        Echo::Off => {}
        Echo::Stderr => eprintln!("{line}"),
        Echo::CasesToStdout => {
            // Output that lacked a newline before a marker is still shown.
            let text = line.split(markers::PREFIX).next().unwrap_or_default();
            if (text.len() == line.len() || !text.is_empty()) && !text.starts_with(markers::L1_LOG) {
                println!("{text}");
            }
        }
    }
}

fn run_nested_once(cases: &[Case], art: &Artifacts, plan: &Nested) -> Result<Outcomes, Skip> {
    let total = plan.total.unwrap_or(Duration::from_secs(180) + plan.case_timeout * cases.len() as u32);
    let text: String = cases.iter().map(|c| c.batch_line() + "\n").collect();
    let mut cfg = test_host::Config::new(text, art.kernel.clone(), art.initrd.clone());
    cfg.daxvmm = Some(art.daxvmm.clone());
    cfg.adds.clone_from(&art.adds);
    cfg.timeout = total;
    cfg.case_timeout = plan.case_timeout;
    cfg.stall = plan.stall;
    cfg.with_qemu = cases.iter().any(|c| c.vmm == Vmm::Qemu);
    if let Some(hold) = &plan.kvm_hold {
        cfg.kvm_hold = Some(hold.clone());
    }
    progress(&format!(
        "nested: booting one test host VM for {} cases (up to {}s)",
        cases.len(),
        total.as_secs()
    ));
    let mut on_line = |line: &str, ended: Option<(&str, &CaseLog)>| {
        echo(plan.echo, line);
        if let Some((name, log)) = ended {
            progress(&format!(
                "nested: case {name} exited {} after {:.1}s",
                log.exit_code,
                log.wall.as_secs_f64()
            ));
        }
    };
    let run = test_host::run(&cfg, &mut on_line)
        .map_err(|e| Skip(format!("the test host VM could not start: {e}")))?;
    let mut parser = run.console;
    let fault = match run.end {
        End::NoKvm(reason) => {
            return Err(Skip(format!("KVM could not be set up inside the test host VM: {reason}")))
        }
        End::Done => None,
        End::Fault(f) => Some(f),
    };
    if let (Some(f), true) = (&fault, plan.record) {
        record(&Record::Fault(f.kind().into(), f.to_string()));
    }
    let vm = VmEnd {
        fault,
        elapsed: run.elapsed,
        console_log: run.console_log,
        outside: parser.outside.join("\n"),
    };
    let mut out = BTreeMap::new();
    for c in cases {
        let res = if let Some(log) = parser.finished.remove(&c.name) {
            if c.boots && plan.record {
                record_boot(Where::Nested, &c.name, log.exit_code);
            }
            Ok(Outcome {
                exit_code: log.exit_code,
                console: log.console,
                wall: log.wall,
                place: Where::Nested,
            })
        } else if let Some((_, partial)) = parser.unfinished.as_ref().filter(|(n, _)| *n == c.name) {
            Err(RunError::Stopped { vm: vm.clone(), partial: partial.clone() })
        } else {
            Err(RunError::NeverRan { vm: vm.clone() })
        };
        out.insert(c.name.clone(), res);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_rerun_when_their_vm_died_or_they_show_their_emulation_fault() {
        let out = |text: &str| {
            Ok(Outcome { exit_code: 0, console: text.into(), wall: Duration::ZERO, place: Where::Nested })
        };
        let plain = Case::daxvmm("a", ["x"]);
        let marked = Case::daxvmm("b", ["x"]).rerun_nested_on("vCPU 2: triple");
        assert!(rerun_reason(&plain, None).is_some());
        let stopped = RunError::NoSuchCase { name: "a".into() };
        assert!(rerun_reason(&plain, Some(&Err(stopped))).is_some());
        assert_eq!(rerun_reason(&plain, Some(&out("vCPU 2: triple"))), None);
        assert_eq!(rerun_reason(&marked, Some(&out("clean"))), None);
        assert!(rerun_reason(&marked, Some(&out("vCPU 2: triple"))).is_some());
        // Every case, marked or not: daxvmm's line for a guest triple fault (a refcount case in CI,
        // 2026-12-05), the guest kernel's when its other CPU took no NMI, and daxvmm's when a vCPU could
        // not be kicked out of the guest (CI, 2026-12-04).
        let triple = "daxvmm: vCPU 1: triple fault (KVM_EXIT_SHUTDOWN); treating it as a reset";
        let stuck = "[   25.235038] After 10 seconds, these CPUS still haven't responded to the NMI: 1";
        let unkicked = "daxvmm: error: vCPU 1 did not leave the guest within 10 s of the run's end";
        let stall = "[   25.2] rcu: INFO: rcu_sched detected stalls";
        for case in [&plain, &marked] {
            assert!(rerun_reason(case, Some(&out(triple))).is_some());
            assert!(rerun_reason(case, Some(&out(stuck))).is_some());
            assert!(rerun_reason(case, Some(&out(unkicked))).is_some());
            assert_eq!(rerun_reason(case, Some(&out(stall))), None);
        }
        // A guest silent for a minute before its init started (a mutants case's sequential run in CI,
        // 2026-12-05), for every case; after its init it stays a failure unless the case says otherwise.
        let entered = "daxvmm: entering the guest kernel 300 ms after start\n";
        let init = "daxvmm: guest userspace init started 2137 ms after start\n";
        let silent = "daxvmm: warning: no vCPU exited to daxvmm in the last 239 s of the run: ...\n";
        for case in [&plain, &marked] {
            assert!(rerun_reason(case, Some(&out(&format!("{entered}{silent}")))).is_some());
            assert_eq!(rerun_reason(case, Some(&out(&format!("{entered}{init}{silent}")))), None);
            // `--repeat` and replays boot again: only the last boot before the silence counts.
            let again = format!("{entered}{init}{entered}{silent}");
            assert!(rerun_reason(case, Some(&out(&again))).is_some());
            assert_eq!(rerun_reason(case, Some(&out(silent))), None);
        }
    }

    /// The race table as `daxvmm test` prints it (daxvmm_race::report::table) is what race_row reads.
    #[test]
    fn race_rows_are_read_from_the_table_daxvmm_test_prints() {
        use daxvmm_race::Transport;
        use daxvmm_race::{race_table as table, RaceRow as Row};
        let row = |fs: &str, transport, tried| Row {
            scenario: "truncate-unpin".into(),
            fs: fs.into(),
            transport,
            tried,
            observed: 5,
            blocked: 1,
            skipped: 0,
            violations: 2,
            stale_window: 3,
        };
        let rows = [
            row("ext4", Transport::Nfit, 6),
            row("ext4", Transport::Virtio, 7),
            row("xfs", Transport::Nfit, 8),
        ];
        let out = Outcome { exit_code: 0, console: table(&rows), wall: Duration::ZERO, place: Where::Nested };
        assert_eq!(out.race_row("truncate-unpin", "ext4"), Some([6, 5, 1, 0, 2]));
        assert_eq!(out.race_row_on("truncate-unpin", "ext4", "virtio"), Some([7, 5, 1, 0, 2]));
        assert_eq!(out.race_row("truncate-unpin", "xfs"), Some([8, 5, 1, 0, 2]));
        assert_eq!(out.race_row_on("truncate-unpin", "xfs", "virtio"), None);
        assert_eq!(out.stale_windows("truncate-unpin", "xfs"), Some(3));
        assert_eq!(out.race_row("total", ""), None);
    }

    #[test]
    fn vms_that_get_some_way_do_not_use_up_the_attempts() {
        // Three VMs in a row die with nothing done: the batch stops after the third.
        let mut b = Budget::new(3, 35);
        assert!(b.another(35) && b.another(35));
        assert_eq!(b.to_string(), "VM 3 of at most 6; 2 of the 3 that may end with no case done have");
        assert!(!b.another(35));
        // Two die at once, the third finishes five cases before it dies: a fourth runs, and a batch
        // that keeps getting some way still stops at six.
        let mut b = Budget::new(3, 35);
        assert!(b.another(35) && b.another(35) && b.another(30));
        assert!(b.another(20) && b.another(10));
        assert!(!b.another(5));
        // Done: no more VMs.
        assert!(!Budget::new(3, 35).another(0));
        // A crash every time (harness_retry): the first VM finishes the others, then three more try.
        let mut b = Budget::new(3, 3);
        assert!(b.another(1) && b.another(1) && b.another(1));
        assert!(!b.another(1));
    }

    #[test]
    fn a_rerun_keeps_the_result_that_says_more_about_the_case() {
        let ok = || {
            Ok(Outcome { exit_code: 0, console: String::new(), wall: Duration::ZERO, place: Where::Nested })
        };
        let vm = || VmEnd {
            fault: None,
            elapsed: Duration::ZERO,
            console_log: "/c".into(),
            outside: String::new(),
        };
        let stopped = || Err(RunError::Stopped { vm: vm(), partial: String::new() });
        let never = || Err(RunError::NeverRan { vm: vm() });
        assert!(replaces(None, &never()));
        assert!(replaces(Some(&never()), &stopped()));
        assert!(replaces(Some(&stopped()), &ok()));
        assert!(replaces(Some(&stopped()), &stopped()));
        assert!(replaces(Some(&ok()), &ok()));
        assert!(!replaces(Some(&ok()), &stopped()));
        assert!(!replaces(Some(&ok()), &never()));
        assert!(!replaces(Some(&stopped()), &never()));
    }

    #[test]
    fn a_case_without_a_result_says_how_its_test_host_vm_ended() {
        let vm = VmEnd {
            fault: Some(Fault::Died(Some(1))),
            elapsed: Duration::from_secs(42),
            console_log: "/c/console.log".into(),
            outside: "booting\nbye".into(),
        };
        let stopped = RunError::Stopped { vm: vm.clone(), partial: "half".into() };
        assert_eq!(
            stopped.to_string(),
            "the test host VM stopped during this case (the test host VM failed: QEMU exited with status 1 \
             before the batch was done, 42s; console: /c/console.log); last console lines outside cases:\n\
             booting\nbye\nthe case's own output:\nhalf"
        );
        let never = RunError::NeverRan { vm: VmEnd { fault: None, ..vm } };
        assert_eq!(
            never.to_string(),
            "the test host VM never ran this case (the batch was done, 42s; console: /c/console.log); \
             last console lines outside cases:\nbooting\nbye"
        );
    }
}
