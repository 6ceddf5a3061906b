//! The fault injector's run observer for one `daxvmm test` boot: arms each guest run's planned schedule
//! on its run-begin event, and on its run-end event applies the oracle's host-side checks (event order,
//! pmem contents) while the guest's memory is still as the run left it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daxvmm_devices::bus::lock;
use daxvmm_devices::fault::{Event, EventCode, LogEntry, RunObserver, Schedule, Step, StepState};

use crate::guest::PmemReader;
use crate::holds::check_holds;
use crate::library::find as find_scenario;
use crate::oracle::{
    check_data, check_order, check_pin_write, observed_order, stale_window, summarize, Finding, RunSummary,
};
use crate::plan::PlannedRun;

/// What the host saw of one run.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    /// The run's fault log, from its run-begin event on.
    pub entries: Vec<LogEntry>,
    /// Log entries that did not fit.
    pub dropped: u64,
    /// Where each step of its schedule stood at run-end.
    pub progress: Option<Vec<(Step, StepState)>>,
    /// Ordering and data findings.
    pub findings: Vec<Finding>,
    /// New-file blocks the oracle could not read (outside pmem).
    pub unreadable: Vec<u64>,
    /// New-file blocks that were still pinned when the file got them ([`stale_window`]).
    pub stale_window: Vec<u64>,
    /// Deviations from the schedule.
    pub summary: RunSummary,
    /// The interleaving the run really took, when it was one of the scenario's.
    pub observed: Option<Schedule>,
}

/// Observer of one boot's runs.
#[derive(Debug)]
pub struct Session {
    plan: Vec<PlannedRun>,
    pmem: Arc<dyn PmemReader>,
    records: Mutex<BTreeMap<u64, RunRecord>>,
    /// When the first run began and the last one ended.
    span: Mutex<(Option<Instant>, Option<Instant>)>,
    /// Findings made while the current run goes on (at its events), moved to its record at its end.
    during: Mutex<Vec<Finding>>,
}

impl Session {
    /// A session for `plan`, whose oracle reads pmem through `pmem`.
    pub fn new(plan: Vec<PlannedRun>, pmem: Arc<dyn PmemReader>) -> Self {
        Self {
            plan,
            pmem,
            records: Mutex::new(BTreeMap::new()),
            span: Mutex::new((None, None)),
            during: Mutex::new(Vec::new()),
        }
    }

    /// Time from the first run's start to the last run's end (the runs alone, without the boot).
    pub fn span(&self) -> Option<Duration> {
        match *lock(&self.span) {
            (Some(a), Some(b)) => Some(b.saturating_duration_since(a)),
            _ => None,
        }
    }

    /// The records so far, by run number.
    pub fn records(&self) -> BTreeMap<u64, RunRecord> {
        lock(&self.records).clone()
    }

    fn planned(&self, run: u64) -> Option<&PlannedRun> {
        usize::try_from(run).ok().and_then(|i| self.plan.get(i))
    }
}

impl RunObserver for Session {
    fn run_begin(&self, run: u64) -> Option<Schedule> {
        lock(&self.span).0.get_or_insert_with(Instant::now);
        lock(&self.during).clear();
        let p = self.planned(run);
        if p.is_none() {
            log::warn!("the guest started run {run}, which is not in the plan of {} runs", self.plan.len());
        }
        p.and_then(|p| p.schedule.clone())
    }

    fn event(&self, ev: &Event) {
        if ev.code == EventCode::WriteThroughPin {
            if let Some(f) =
                check_pin_write(ev.pfn(), ev.detail() as u8, &|gpa, buf| self.pmem.read(gpa, buf))
            {
                lock(&self.during).push(f);
            }
        }
    }

    fn run_end(
        &self,
        run: u64,
        entries: Vec<LogEntry>,
        dropped: u64,
        progress: Option<Vec<(Step, StepState)>>,
    ) {
        lock(&self.span).1 = Some(Instant::now());
        let mut findings = check_order(&entries);
        findings.append(&mut lock(&self.during));
        let (data, unreadable) = check_data(&entries, &|gpa, buf| self.pmem.read(gpa, buf));
        findings.extend(data);
        let planned = self.planned(run);
        if let Some(schedule) = planned.and_then(|p| p.schedule.as_ref()) {
            findings.extend(check_holds(schedule, &entries));
        }
        let observed = planned
            .and_then(|p| find_scenario(&p.scenario))
            .and_then(|e| observed_order(&e.scenario, &entries));
        let summary = summarize(&entries);
        let stale = stale_window(&entries);
        if let Some(p) = planned {
            let verdict = match findings.first() {
                None => "host checks clean".to_string(),
                Some(f) => format!("VIOLATION {f}"),
            };
            let blocked = if summary.timeouts > 0 { ", held to the bound (the kernel blocked)" } else { "" };
            let window = match stale.first() {
                Some(pfn) => {
                    format!("; stale-write window open: a new file got block {pfn:#x}, still pinned")
                }
                None => String::new(),
            };
            let observed = observed.as_ref().map_or("incomplete".to_string(), |s| s.to_string());
            log::info!(
                "[{}/{}] {} on {} [{}] observed [{observed}]: {verdict}{blocked}{window}",
                run + 1,
                self.plan.len(),
                p.scenario,
                p.fs,
                p.schedule.as_ref().map_or("unscheduled".to_string(), |s| s.to_string()),
            );
        }
        let record = RunRecord {
            entries,
            dropped,
            progress,
            findings,
            unreadable,
            stale_window: stale,
            summary,
            observed,
        };
        lock(&self.records).insert(run, record);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A pmem reader that reaches nothing.
    #[derive(Debug)]
    struct NoPmem;

    impl PmemReader for NoPmem {
        fn read(&self, _gpa: u64, _buf: &mut [u8]) -> bool {
            false
        }
    }

    #[test]
    fn arms_the_planned_schedule_and_times_the_runs() {
        let schedule: Schedule = "0.s1 0.e7 0.s2 1.s1 1.s2".parse().unwrap();
        let plan = vec![PlannedRun {
            scenario: "truncate-unpin".into(),
            fs: "ext4".into(),
            schedule: Some(schedule.clone()),
            seed: None,
        }];
        let s = Session::new(plan, Arc::new(NoPmem));
        assert!(s.span().is_none());
        assert_eq!(s.run_begin(0), Some(schedule));
        assert_eq!(s.run_begin(1), None, "not in the plan");
        std::thread::sleep(Duration::from_millis(20));
        s.run_end(0, Vec::new(), 0, None);
        assert!(s.span().unwrap() >= Duration::from_millis(20));
        let rec = &s.records()[&0];
        assert!(rec.findings.is_empty() && rec.observed.is_none());
    }
}
