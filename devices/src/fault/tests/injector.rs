//! The threaded injector: real threads held and released in schedule order, bounded holds, disarming,
//! and other callers getting through while a thread is held.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{a2_b1, wait_until_held};
use crate::fault::*;

const LONG: Duration = Duration::from_secs(3);

/// An injector whose holds only the schedule ends: no bound runs out however slow the machine is, so a
/// test's outcome never depends on the clock.
fn patient() -> FaultInjector {
    FaultInjector::new(DEFAULT_LOG_CAPACITY, MAX_HOLD)
}

fn released_order(log: &LogSnapshot) -> Vec<Step> {
    log.entries
        .iter()
        .filter_map(|e| if let Record::Released(s) = e.record { Some(s) } else { None })
        .collect()
}

/// Thread `tag` passes `points` in order and appends `(tag, point)` to `seen` right after each release.
fn spawn(
    inj: &Arc<FaultInjector>,
    seen: &Arc<Mutex<Vec<(u8, u16)>>>,
    tag: u8,
    points: Vec<u16>,
    delay: Duration,
) -> thread::JoinHandle<Vec<SyncOutcome>> {
    let (inj, seen) = (inj.clone(), seen.clone());
    thread::spawn(move || {
        thread::sleep(delay);
        points
            .into_iter()
            .map(|p| {
                let outcome = inj.sync_on(Some(tag), tag, p, LONG);
                seen.lock().unwrap().push((tag, p));
                outcome
            })
            .collect()
    })
}

/// Whether the injector promises that mark `a` lands in `seen` before mark `b` (a mark is `(thread,
/// point)`, pushed right after that thread passed that point). Only one thing orders two marks: thread
/// `a.0` makes its mark before it arrives at its next point, and that step must be released before any
/// later step of the schedule, including `b`'s. A thread's mark after its last point is ordered by nothing.
fn promised_before(schedule: &Schedule, a: (u8, u16), b: (u8, u16)) -> bool {
    let steps = schedule.steps();
    let pos = |t: u8, p: u16| steps.iter().position(|s| *s == Step::sync(t, p));
    let (Some(pa), Some(pb)) = (pos(a.0, a.1), pos(b.0, b.1)) else { return false };
    let next_of_a = steps.iter().enumerate().skip(pa + 1).find(|(_, s)| s.thread == a.0);
    matches!(next_of_a, Some((pn, _)) if pn < pb)
}

/// Every pair of marks in `seen` that the schedule orders is in that order; returns how many pairs
/// the schedule orders, so a caller can insist the check was not empty.
fn check_promised_order(schedule: &Schedule, seen: &[(u8, u16)]) -> usize {
    let mut promised = 0;
    for (i, &a) in seen.iter().enumerate() {
        for &b in &seen[..i] {
            assert!(!promised_before(schedule, a, b), "{schedule}: {a:?} must come before {b:?} in {seen:?}");
        }
        promised += seen[i + 1..].iter().filter(|&&b| promised_before(schedule, a, b)).count();
    }
    promised
}

#[test]
fn the_promised_order_of_marks_follows_the_schedule() {
    let s: Schedule = "1.s1 1.s2 0.s1 0.s2".parse().unwrap();
    assert!(promised_before(&s, (1, 1), (0, 1)), "1 marks before its point 2, which precedes 0.s1");
    assert!(promised_before(&s, (1, 1), (0, 2)));
    assert!(!promised_before(&s, (1, 2), (0, 1)), "thread 1's last mark is ordered by nothing");
    assert!(!promised_before(&s, (0, 1), (1, 1)));
    assert!(!promised_before(&s, (0, 1), (0, 2)), "a thread's own marks are in program order anyway");
    let mut breaks_it =
        std::panic::catch_unwind(|| check_promised_order(&s, &[(0, 1), (1, 1), (1, 2), (0, 2)]));
    assert!(breaks_it.is_err(), "thread 0 ran before thread 1 reached its point 2");
    breaks_it = std::panic::catch_unwind(|| check_promised_order(&s, &[(1, 1), (0, 1), (1, 2), (0, 2)]));
    assert_eq!(breaks_it.ok(), Some(2), "the order the flaky version of the test refused is a good one");
}

#[test]
fn threads_arriving_in_the_wrong_order_run_in_the_scheduled_one() {
    // Thread 0 starts first and would win without the hold. What the injector promises: the order of
    // releases (its log), and that a mark a thread makes between two of its points precedes every step
    // the schedule puts after the second point. Nothing here reads the clock.
    for schedule in
        ["1.s1 1.s2 0.s1 0.s2", "0.s1 0.s2 1.s1 1.s2", "1.s1 0.s1 1.s2 0.s2", "0.s1 1.s1 1.s2 0.s2"]
    {
        let schedule: Schedule = schedule.parse().unwrap();
        let inj = Arc::new(patient());
        inj.arm(&schedule);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let a = spawn(&inj, &seen, 0, vec![1, 2], Duration::ZERO);
        let b = spawn(&inj, &seen, 1, vec![1, 2], Duration::from_millis(30));
        assert_eq!(a.join().unwrap(), [SyncOutcome::Released; 2]);
        assert_eq!(b.join().unwrap(), [SyncOutcome::Released; 2]);
        let seen = seen.lock().unwrap().clone();
        assert!(check_promised_order(&schedule, &seen) > 0, "{schedule}: nothing to check");
        assert_eq!(released_order(&inj.take_log()), schedule.steps());
        let stats = inj.stats();
        assert_eq!((stats.deviations, stats.timeouts), (0, 0), "{schedule}");
        assert_eq!(inj.is_complete(), Some(true));
    }
}

#[test]
fn every_interleaving_of_a_small_scenario_is_forced() {
    let sc = a2_b1();
    for schedule in sc.interleavings(10).unwrap() {
        for delay_a in [Duration::ZERO, Duration::from_millis(20)] {
            let inj = Arc::new(patient());
            inj.arm(&schedule);
            let seen = Arc::new(Mutex::new(Vec::new()));
            let a = spawn(&inj, &seen, 0, vec![1, 2], delay_a);
            let b = spawn(&inj, &seen, 1, vec![1], Duration::from_millis(10));
            assert!(a.join().unwrap().iter().chain(&b.join().unwrap()).all(|&o| o == SyncOutcome::Released));
            let log = inj.take_log();
            assert_eq!(released_order(&log), schedule.steps(), "{schedule}");
            // The log carries each access's vCPU and is in sequence order.
            assert!(log.entries.windows(2).all(|w| w[0].seq + 1 == w[1].seq && w[0].at <= w[1].at));
            assert!(log
                .entries
                .iter()
                .any(|e| matches!(e.record, Record::Arrive { thread: 1, .. }) && e.vcpu == Some(1)));
        }
    }
}

#[test]
fn the_bound_releases_a_held_thread_and_reports_it() {
    let inj = FaultInjector::new(100, Duration::from_millis(50));
    inj.arm(&"0.s0 1.s0".parse().unwrap());
    let start = Instant::now();
    assert_eq!(inj.sync(1, 0, LONG), SyncOutcome::TimedOut);
    // TimedOut (not Retry) says the bound ended the hold, not the 3 s slice; the bound is a floor.
    assert!(start.elapsed() >= Duration::from_millis(50));
    let stats = inj.stats();
    assert_eq!((stats.held, stats.timeouts, stats.deviations), (1, 1, 1));
    // The schedule goes on: thread 0 is still released in order, and the run completes.
    assert_eq!(inj.sync(0, 0, LONG), SyncOutcome::Released);
    assert_eq!(inj.is_complete(), Some(true));
    let log = inj.take_log();
    let timed_out = Deviation::TimedOut { step: Step::sync(1, 0), blocked_on: Some(Step::sync(0, 0)) };
    assert!(log.entries.iter().any(|e| e.record == Record::Deviation(timed_out)));
    let outcome = Record::Proceed { thread: 1, point: 0, outcome: SyncOutcome::TimedOut };
    assert!(log.entries.iter().any(|e| e.record == outcome));
}

#[test]
fn slices_return_retry_and_the_bound_counts_from_the_first_read() {
    let inj = FaultInjector::new(100, Duration::from_millis(150));
    inj.arm(&"0.s0 1.s0".parse().unwrap());
    let start = Instant::now();
    let mut retries = 0;
    let outcome = loop {
        match inj.sync_on(Some(1), 1, 0, Duration::from_millis(10)) {
            SyncOutcome::Retry if retries < 50 => retries += 1,
            other => break other,
        }
    };
    let waited = start.elapsed();
    // Were the bound counted from each read, no read would ever time out and the loop would end at 50
    // retries. Every Retry took at least one 10 ms slice, so there are at most 15 before the 150 ms
    // bound; a loaded machine may make fewer, never more.
    assert_eq!(outcome, SyncOutcome::TimedOut, "after {retries} retries");
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!((1..=15).contains(&retries), "{retries} retries of 10 ms in {waited:?}");
    let stats = inj.stats();
    assert_eq!((stats.arrivals, stats.held, stats.timeouts, stats.deviations), (1, 1, 1, 1));
    // One arrival and one final outcome in the log, however many reads it took.
    let log = inj.take_log();
    let arrives = log.entries.iter().filter(|e| matches!(e.record, Record::Arrive { .. })).count();
    let proceeds = log.entries.iter().filter(|e| matches!(e.record, Record::Proceed { .. })).count();
    assert_eq!((arrives, proceeds), (1, 1));
}

#[test]
fn a_release_between_two_reads_is_collected_by_the_next() {
    let inj = FaultInjector::default();
    inj.arm(&"0.s0 1.s0".parse().unwrap());
    assert_eq!(inj.sync(1, 0, Duration::ZERO), SyncOutcome::Retry);
    assert_eq!(inj.sync(1, 0, Duration::ZERO), SyncOutcome::Retry);
    assert_eq!(inj.sync(0, 0, LONG), SyncOutcome::Released);
    assert_eq!(inj.sync(1, 0, Duration::ZERO), SyncOutcome::Released);
    let stats = inj.stats();
    assert_eq!((stats.arrivals, stats.held, stats.deviations), (2, 1, 0));
    assert_eq!(inj.is_complete(), Some(true));
}

#[test]
fn guest_style_retry_loops_are_forced_into_the_schedule() {
    // Threads that re-read on Retry every millisecond, as the guest driver does; thread 0 starts first.
    for schedule in ["1.s1 1.s2 0.s1 0.s2", "0.s1 1.s1 0.s2 1.s2"] {
        let inj = Arc::new(patient());
        inj.arm(&schedule.parse().unwrap());
        let threads: Vec<_> = [(0u8, 0u64), (1, 20)]
            .into_iter()
            .map(|(tag, delay)| {
                let inj = inj.clone();
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(delay));
                    for point in [1, 2] {
                        let mut outcome = SyncOutcome::Retry;
                        while outcome == SyncOutcome::Retry {
                            outcome = inj.sync_on(Some(tag), tag, point, Duration::from_millis(1));
                        }
                        assert_eq!(outcome, SyncOutcome::Released);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(released_order(&inj.take_log()), schedule.parse::<Schedule>().unwrap().steps());
        assert_eq!(inj.stats().deviations, 0);
    }
}

#[test]
fn not_armed_proceeds_at_once() {
    let inj = FaultInjector::default();
    assert_eq!(inj.sync(0, 0, LONG), SyncOutcome::NotArmed);
    assert_eq!(inj.disarm(), None);
    assert_eq!(inj.is_complete(), None);
    assert_eq!(inj.stats().held, 0);
}

#[test]
fn others_get_through_while_a_thread_is_held_and_disarm_releases_it() {
    // The held read has a slice and a bound of MAX_HOLD, so only disarm can end it: whatever returns
    // while it is still held got through beside it, on a machine of any speed.
    let inj = Arc::new(patient());
    let generation = inj.arm(&"0.s0 1.s0".parse().unwrap());
    let held = {
        let inj = inj.clone();
        thread::spawn(move || inj.sync(1, 0, MAX_HOLD))
    };
    wait_until_held(&inj, 1);
    inj.event(Event::new(EventCode::Marker, 0, 7).unwrap().encode());
    assert_eq!(inj.stats().events, 1);
    assert!(inj.log_len() > 0 && inj.is_armed());
    assert_eq!(inj.sync(5, 5, LONG), SyncOutcome::Unscheduled);
    assert!(!held.is_finished(), "the held read ended before disarm");

    let progress = inj.disarm().unwrap();
    assert_eq!(progress, [(Step::sync(0, 0), StepState::Pending), (Step::sync(1, 0), StepState::Waiting)]);
    assert_eq!(held.join().unwrap(), SyncOutcome::NotArmed);
    let log = inj.take_log();
    assert!(log.entries.iter().any(|e| e.record == Record::Disarmed { generation }));
}

#[test]
fn rearming_releases_holds_of_the_old_schedule() {
    let inj = Arc::new(patient());
    inj.arm(&"0.s0 1.s0".parse().unwrap());
    let held = {
        let inj = inj.clone();
        thread::spawn(move || inj.sync(1, 0, LONG))
    };
    wait_until_held(&inj, 1);
    inj.arm(&"1.s0".parse().unwrap());
    assert_eq!(held.join().unwrap(), SyncOutcome::NotArmed);
    assert_eq!(inj.sync(1, 0, LONG), SyncOutcome::Released, "the new schedule is in force");
}

type Progress = Option<Vec<(Step, StepState)>>;

/// Arms one schedule per run and records what each run ended with.
#[derive(Default)]
struct Runs {
    ended: Mutex<Vec<(u64, Vec<LogEntry>, Progress)>>,
}

impl RunObserver for Runs {
    fn run_begin(&self, run: u64) -> Option<Schedule> {
        (run == 7).then(|| "0.s1 0.s2".parse().unwrap())
    }
    fn run_end(
        &self,
        run: u64,
        entries: Vec<LogEntry>,
        _dropped: u64,
        progress: Option<Vec<(Step, StepState)>>,
    ) {
        self.ended.lock().unwrap().push((run, entries, progress));
    }
}

#[test]
fn run_events_arm_the_observers_schedule_and_hand_back_the_runs_log() {
    let inj = FaultInjector::new(64, LONG);
    let runs = Arc::new(Runs::default());
    inj.set_observer(runs.clone());
    let ev = |code, arg| Event::new(code, 0, arg).unwrap().encode();
    inj.event(ev(EventCode::Marker, 1)); // before any run: not part of one
    inj.event(ev(EventCode::RunBegin, 7));
    assert!(inj.is_armed());
    assert_eq!(inj.sync(0, 1, LONG), SyncOutcome::Released);
    assert_eq!(inj.sync(0, 2, LONG), SyncOutcome::Released);
    inj.event(ev(EventCode::RunEnd, 7));
    assert!(!inj.is_armed());
    // A run the observer has no schedule for stays unarmed.
    inj.event(ev(EventCode::RunBegin, 8));
    assert_eq!(inj.sync(0, 1, LONG), SyncOutcome::NotArmed);
    inj.event(ev(EventCode::RunEnd, 8));

    let ended = runs.ended.lock().unwrap();
    assert_eq!(ended.len(), 2);
    let (run, entries, progress) = &ended[0];
    assert_eq!(*run, 7);
    assert!(matches!(entries[0].record, Record::Armed { .. }), "{:?}", entries[0]);
    assert!(entries.iter().all(|e| !matches!(e.record, Record::Event(ev) if ev.code == EventCode::Marker)));
    assert!(progress.as_ref().unwrap().iter().all(|(_, st)| *st == StepState::Passed));
    assert_eq!(ended[1].0, 8);
    assert!(ended[1].2.is_none());
}
