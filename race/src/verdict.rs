//! Turns one boot's evidence into per-run results: the guest program's `@@race` console lines (which runs
//! began and ended, its own findings and notes), the kernel log lines between them (scanned for
//! WARN/BUG/KASAN/hung-task signatures), and the host's run records.

use std::collections::BTreeMap;

use daxvmm_devices::fault::Schedule;

use crate::guest::Transport;
use crate::oracle::{scan_log, Finding, FindingKind, RunSummary};
use crate::plan::PlannedRun;
use crate::session::RunRecord;

/// The guest program's greeting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// `uname -r`.
    pub kernel: String,
    /// sha256 of /proc/config.gz, uncompressed.
    pub config_sha256: String,
    /// Whether /dev/dax_refcount exists.
    pub driver: bool,
    /// Whether the driver bound the fault injector.
    pub fault: bool,
    /// The kernel's GNU build id (hex), empty when the guest could not read it.
    pub build_id: String,
    /// The deliberate bug the kernel selected at boot (`None`: a kernel without one, or none selected;
    /// the guest says `mutant=none`).
    pub mutant: Option<String>,
}

/// What the console says about one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestRun {
    /// Its end line came.
    pub ended: bool,
    /// `@@race finding` texts.
    pub findings: Vec<String>,
    /// `@@race note` texts.
    pub notes: Vec<String>,
    /// `@@race skip` reason.
    pub skip: Option<String>,
    /// The console lines from its begin line to the next run's.
    pub log: String,
}

/// The console of one boot, parsed.
#[derive(Debug, Clone, Default)]
pub struct GuestReport {
    /// The greeting, if the program started.
    pub hello: Option<Hello>,
    /// Runs that began, by number.
    pub runs: BTreeMap<u64, GuestRun>,
    /// The program finished its plan.
    pub done: bool,
    /// Console lines before the first run (boot, setup).
    pub preamble: String,
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Parses the captured console of a `daxvmm-race` boot.
pub fn parse_console(text: &str) -> GuestReport {
    let mut report = GuestReport::default();
    let mut current: Option<u64> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let proto = line.find("@@race ").map(|i| &line[i + 7..]);
        if let Some(p) = proto {
            let (kind, rest) = p.split_once(' ').unwrap_or((p, ""));
            let run = field(rest, "run").and_then(|r| r.parse::<u64>().ok());
            let text_after_run = rest.split_once(' ').map_or("", |(_, t)| t).trim().to_string();
            match (kind, run) {
                ("hello", _) => {
                    report.hello = Some(Hello {
                        kernel: field(rest, "kernel").unwrap_or("").to_string(),
                        config_sha256: field(rest, "config-sha256").unwrap_or("").to_string(),
                        driver: field(rest, "driver") == Some("yes"),
                        fault: field(rest, "fault") == Some("yes"),
                        mutant: field(rest, "mutant").filter(|m| *m != "none").map(String::from),
                        build_id: field(rest, "build-id").unwrap_or("").to_string(),
                    })
                }
                ("begin", Some(r)) => current = Some(r),
                ("done", _) => {
                    report.done = true;
                    current = None;
                }
                ("end", Some(r)) => report.runs.entry(r).or_default().ended = true,
                ("finding", Some(r)) => report.runs.entry(r).or_default().findings.push(text_after_run),
                ("note", Some(r)) => report.runs.entry(r).or_default().notes.push(text_after_run),
                ("skip", Some(r)) => report.runs.entry(r).or_default().skip = Some(text_after_run),
                _ => {}
            }
        }
        let sink = match current {
            Some(r) => &mut report.runs.entry(r).or_default().log,
            None => &mut report.preamble,
        };
        sink.push_str(line);
        sink.push('\n');
    }
    report
}

/// The result of one planned run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Run number.
    pub run: u64,
    /// What was planned.
    pub planned: PlannedRun,
    /// What the filesystems' NVDIMM was in the run's boot.
    pub transport: Transport,
    /// Violations, host's and guest's.
    pub findings: Vec<Finding>,
    /// Why it did not run (skipped by the guest, or never reached).
    pub skipped: Option<String>,
    /// Deviations from the schedule.
    pub summary: RunSummary,
    /// The interleaving it really took.
    pub observed: Option<Schedule>,
    /// The guest's notes.
    pub notes: Vec<String>,
    /// Its console lines.
    pub log: String,
    /// Its fault log, one line per entry.
    pub fault_log: Vec<String>,
    /// The kernel's own events in order ([`crate::kernel_order`]).
    pub kernel_order: Vec<String>,
    /// New-file blocks that were still pinned when the file got them (the record's, [`crate::stale_window`]).
    pub stale_window: Vec<u64>,
}

impl RunResult {
    /// Whether the run found a violation.
    pub fn failed(&self) -> bool {
        !self.findings.is_empty()
    }
}

/// Combines the plan, the host's records and the parsed console of a boot on `transport`. `stopped` says how the guest ended
/// when that was not a clean finish; the run it was in is then a crash finding, and so is the run it
/// never got to when it stopped between runs (or the last run, after it): a plan cut short never passes.
pub fn combine(
    plan: &[PlannedRun],
    transport: Transport,
    records: &BTreeMap<u64, RunRecord>,
    guest: &GuestReport,
    stopped: Option<&str>,
) -> Vec<RunResult> {
    let stopped = stopped.or((!guest.done).then_some("the guest program ended before its plan was done"));
    let mut crashed_reported = false;
    let mut results: Vec<RunResult> = plan
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let run = i as u64;
            let record = records.get(&run).cloned().unwrap_or_default();
            let g = guest.runs.get(&run);
            let mut findings = record.findings.clone();
            let skipped = match g {
                Some(g) => {
                    findings.extend(g.findings.iter().map(|t| Finding::new(FindingKind::Guest, t.clone())));
                    findings.extend(scan_log(&g.log));
                    if !g.ended && !crashed_reported {
                        crashed_reported = true;
                        let how = stopped.unwrap_or("the guest program stopped");
                        findings.push(Finding::new(FindingKind::Crash, format!("{how} during this run")));
                    }
                    g.skip.clone()
                }
                None => Some("not reached: the guest stopped before this run".into()),
            };
            RunResult {
                run,
                planned: p.clone(),
                transport,
                findings,
                skipped,
                summary: record.summary.clone(),
                observed: record.observed.clone(),
                log: g.map(|g| g.log.clone()).unwrap_or_default(),
                notes: {
                    let mut notes = g.map(|g| g.notes.clone()).unwrap_or_default();
                    if !record.stale_window.is_empty() {
                        notes.push(format!(
                            "stale-write window: a new file got block(s) still pinned: {:x?}",
                            record.stale_window
                        ));
                    }
                    if !record.unreadable.is_empty() {
                        notes.push(format!(
                            "new-file blocks outside pmem, not checked: {:x?}",
                            record.unreadable
                        ));
                    }
                    notes
                },
                fault_log: fault_log(&record),
                kernel_order: crate::holds::kernel_order(&record.entries),
                stale_window: record.stale_window.clone(),
            }
        })
        .collect();
    if let (Some(how), false) = (stopped, crashed_reported) {
        let next = results.iter().position(|r| !guest.runs.contains_key(&r.run));
        let (at, when) = match next {
            Some(i) => (Some(i), "before this run began"),
            None => (results.len().checked_sub(1), "after this run ended"),
        };
        if let Some(r) = at.and_then(|i| results.get_mut(i)) {
            r.findings.push(Finding::new(FindingKind::Crash, format!("{how} {when}")));
        }
    }
    results
}

/// The run's fault log, one line per entry, then where each step of its schedule stood.
fn fault_log(record: &RunRecord) -> Vec<String> {
    let mut lines: Vec<String> = record.entries.iter().map(ToString::to_string).collect();
    if record.dropped > 0 {
        lines.push(format!("({} entries did not fit in the log)", record.dropped));
    }
    if let Some(p) = &record.progress {
        let steps: Vec<String> = p.iter().map(|(step, st)| format!("{step}:{st}")).collect();
        lines.push(format!("schedule progress at run end: {}", steps.join(" ")));
    }
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
[    1.0] booting
@@race hello run=0 kernel=7.2.12 config-sha256=abc driver=yes fault=yes cpus=3
@@race begin run=0 scenario=truncate-unpin fs=ext4
@@race note run=0 ftruncate returned success after 3 ms
@@race end run=0
@@race begin run=1 scenario=truncate-unpin fs=ext4
[   12.5] WARNING: CPU: 1 PID: 80 at fs/dax.c:380 dax_disassociate_entry+0x9c/0xb0
some text @@race finding run=1 truncate returned while a vmsplice reference to the page was still held
@@race end run=1
@@race begin run=2 scenario=punch-unpin fs=ext4
@@race skip run=2 needs /dev/dax_refcount
@@race end run=2
@@race begin run=3 scenario=punch-unpin fs=ext4
";

    fn plan(n: usize) -> Vec<PlannedRun> {
        (0..n)
            .map(|_| PlannedRun {
                scenario: "truncate-unpin".into(),
                fs: "ext4".into(),
                schedule: None,
                seed: None,
            })
            .collect()
    }

    #[test]
    fn parses_the_protocol_lines() {
        let g = parse_console(CONSOLE);
        let hello = g.hello.clone().unwrap();
        assert_eq!(
            (hello.kernel.as_str(), hello.config_sha256.as_str(), hello.driver, hello.fault),
            ("7.2.12", "abc", true, true)
        );
        assert!(g.preamble.contains("booting"));
        assert!(g.runs[&0].ended && g.runs[&0].findings.is_empty());
        assert_eq!(g.runs[&0].notes, ["ftruncate returned success after 3 ms"]);
        assert_eq!(g.runs[&1].findings.len(), 1);
        assert!(g.runs[&1].log.contains("dax_disassociate_entry"));
        assert_eq!(g.runs[&2].skip.as_deref(), Some("needs /dev/dax_refcount"));
        assert!(!g.runs[&3].ended && !g.done);
    }

    #[test]
    fn combines_guest_findings_signatures_and_crashes() {
        let g = parse_console(CONSOLE);
        let results = combine(&plan(5), Transport::Nfit, &BTreeMap::new(), &g, Some("guest kernel panic"));
        assert!(!results[0].failed());
        let kinds: Vec<FindingKind> = results[1].findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [FindingKind::Guest, FindingKind::Signature]);
        assert!(results[2].skipped.is_some() && !results[2].failed());
        assert_eq!(results[3].findings[0].kind, FindingKind::Crash);
        assert!(results[3].findings[0].text.starts_with("guest kernel panic"));
        assert!(results[4].skipped.as_deref().unwrap().starts_with("not reached"));
        assert!(!results[4].failed(), "one crash finding for one crash");
    }

    #[test]
    fn a_guest_that_stops_between_runs_fails_the_plan() {
        let between = "@@race hello run=0 kernel=7.2.12 config-sha256=abc driver=yes fault=yes cpus=2\n\
                       @@race begin run=0 scenario=truncate-unpin fs=ext4\n@@race end run=0\n";
        let g = parse_console(between);
        let results = combine(&plan(3), Transport::Nfit, &BTreeMap::new(), &g, Some("the guest reset"));
        assert!(!results[0].failed());
        assert_eq!(results[1].findings[0].kind, FindingKind::Crash);
        assert_eq!(results[1].findings[0].text, "the guest reset before this run began");
        assert!(results[1].skipped.is_some() && !results[2].failed());
        // A clean power-off without `done` is cut short too.
        let results = combine(&plan(3), Transport::Nfit, &BTreeMap::new(), &g, None);
        assert!(results[1].findings[0].text.starts_with("the guest program ended before its plan was done"));
        // After the last run.
        let results =
            combine(&plan(1), Transport::Nfit, &BTreeMap::new(), &g, Some("the guest kernel panicked"));
        assert_eq!(results[0].findings[0].text, "the guest kernel panicked after this run ended");
        // A finished plan with a clean power-off passes.
        let done = format!("{between}@@race done run=1 runs=1\n");
        let results = combine(&plan(1), Transport::Nfit, &BTreeMap::new(), &parse_console(&done), None);
        assert!(!results[0].failed());
    }
}
