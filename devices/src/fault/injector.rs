//! The thread-safe [`FaultInjector`]: the armed schedule, the event log and the counters behind one
//! mutex, and a condition variable that held vCPU threads sleep on. [`FaultInjector::sync`] blocks its
//! caller (a vCPU thread inside its exit handler, holding no bus lock) until the schedule releases it,
//! the arrival's hold bound runs out, or one hold slice has passed ([`SyncOutcome::Retry`]: the guest
//! takes its pending interrupts and reads again). Every other vCPU can reach the injector meanwhile,
//! because the mutex is only held while the state machine runs, never across the wait.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::event_log::LogEntry;
use super::event_log::{EventLog, LogSnapshot, Record};
use super::protocol::{Event, EventCode, ProtocolError, SyncOutcome};
use super::scenario::{Schedule, Step};
use super::sequencer::{Arrival, Note, Sequencer, StepState, Ticket};
use crate::bus::lock;

/// Log entries kept between two [`FaultInjector::take_log`] calls unless the VMM asks otherwise.
pub const DEFAULT_LOG_CAPACITY: usize = 1 << 16;
/// How long one arrival may be held in all, from its first read, unless the VMM says otherwise: well
/// below the guest's soft-lockup (20 s) and RCU stall (21 s) watchdogs, well above any scheduling delay
/// of a runnable vCPU.
pub const DEFAULT_BOUND: Duration = Duration::from_secs(5);
/// How long one sync read holds its vCPU at most unless the VMM says otherwise. A held vCPU takes no
/// interrupts, and the other vCPU may be spinning until it acknowledges a TLB-flush IPI (truncate unmaps
/// the pinner's mapping before it waits), so a held read returns [`SyncOutcome::Retry`] this often.
pub const DEFAULT_SLICE: Duration = Duration::from_millis(10);
/// Longest bound or slice the injector accepts; longer ones are cut to this.
pub const MAX_HOLD: Duration = Duration::from_secs(600);

/// Counters over the injector's lifetime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Valid events.
    pub events: u64,
    /// Sync arrivals (the repeated reads of a held thread count once).
    pub arrivals: u64,
    /// Arrivals that had to wait.
    pub held: u64,
    /// Holds ended by their bound.
    pub timeouts: u64,
    /// Deviations from armed schedules (timeouts included).
    pub deviations: u64,
    /// Malformed accesses and events, by [`ProtocolError::kind`].
    pub protocol_errors: BTreeMap<&'static str, u64>,
    /// Log entries dropped because the log was full.
    pub log_dropped: u64,
}

#[derive(Debug)]
struct State {
    /// Bumped by every arm and disarm, so a held arrival notices that its schedule is gone.
    generation: u64,
    armed: Option<Sequencer>,
    /// When each held arrival of the armed schedule first read its sync point.
    held_since: HashMap<Ticket, Instant>,
    log: EventLog,
    stats: Stats,
}

/// Told about the guest's runs, for `daxvmm test`: the guest brackets each run of a scenario with
/// run-begin and run-end events, and the observer chooses the schedule for the run and receives its log.
/// Both calls come from a vCPU thread inside its exit handler, with no injector lock held.
pub trait RunObserver: Send + Sync {
    /// Run `run` starts: the schedule to arm for it (`None`: leave it unarmed).
    fn run_begin(&self, run: u64) -> Option<Schedule>;
    /// A valid event arrived (after it was logged), for checks that must look at the guest at that
    /// moment, such as whether data written through a pin is in its block.
    fn event(&self, _event: &Event) {}
    /// Run `run` ended: its log from its run-begin event on (`dropped` entries did not fit), and where
    /// each step of its schedule stood (`None` when none was armed).
    fn run_end(
        &self,
        run: u64,
        entries: Vec<LogEntry>,
        dropped: u64,
        progress: Option<Vec<(Step, StepState)>>,
    );
}

struct Observer(Arc<dyn RunObserver>);

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RunObserver")
    }
}

/// The host side of the fault-injection device; share it with `Arc`.
#[derive(Debug)]
pub struct FaultInjector {
    start: Instant,
    bound: Duration,
    state: Mutex<State>,
    changed: Condvar,
    observer: Mutex<Option<Observer>>,
}

impl Default for FaultInjector {
    /// [`DEFAULT_LOG_CAPACITY`] and [`DEFAULT_BOUND`].
    fn default() -> Self {
        Self::new(DEFAULT_LOG_CAPACITY, DEFAULT_BOUND)
    }
}

impl FaultInjector {
    /// An injector with nothing armed, a log of at most `log_capacity` entries, and arrivals held for at
    /// most `bound` (cut to [`MAX_HOLD`]) in all.
    pub fn new(log_capacity: usize, bound: Duration) -> Self {
        let state = State {
            generation: 0,
            armed: None,
            held_since: HashMap::new(),
            log: EventLog::new(log_capacity),
            stats: Stats::default(),
        };
        let bound = bound.min(MAX_HOLD);
        Self {
            start: Instant::now(),
            bound,
            state: Mutex::new(state),
            changed: Condvar::new(),
            observer: Mutex::new(None),
        }
    }

    /// From now on, run-begin events arm the schedule `observer` chooses and run-end events disarm and
    /// hand it the run's log. Without an observer those events are only logged.
    pub fn set_observer(&self, observer: Arc<dyn RunObserver>) {
        *lock(&self.observer) = Some(Observer(observer));
    }

    /// Starts enforcing `schedule`, replacing any armed one (whose held arrivals proceed with
    /// [`SyncOutcome::NotArmed`]). Returns the arming's generation number.
    pub fn arm(&self, schedule: &Schedule) -> u64 {
        let mut st = lock(&self.state);
        st.generation += 1;
        let generation = st.generation;
        st.armed = Some(Sequencer::new(schedule));
        st.held_since.clear();
        log::info!("fault injector: armed schedule {generation}: {schedule}");
        self.record(&mut st, None, Record::Armed { generation, schedule: schedule.to_string() });
        self.changed.notify_all();
        generation
    }

    /// Stops enforcing the armed schedule; held arrivals proceed with [`SyncOutcome::NotArmed`]. Returns
    /// where each of its steps stood. The VMM calls it before stopping, so no vCPU stays held.
    pub fn disarm(&self) -> Option<Vec<(Step, StepState)>> {
        let mut st = lock(&self.state);
        let seq = st.armed.take()?;
        st.held_since.clear();
        let generation = st.generation;
        st.generation += 1;
        self.record(&mut st, None, Record::Disarmed { generation });
        self.changed.notify_all();
        Some(seq.progress().collect())
    }

    /// Whether a schedule is armed.
    pub fn is_armed(&self) -> bool {
        lock(&self.state).armed.is_some()
    }

    /// Whether the armed schedule has run to its end (`None` when nothing is armed).
    pub fn is_complete(&self) -> Option<bool> {
        lock(&self.state).armed.as_ref().map(Sequencer::is_complete)
    }

    /// Where each step of the armed schedule stands.
    pub fn progress(&self) -> Option<Vec<(Step, StepState)>> {
        lock(&self.state).armed.as_ref().map(|s| s.progress().collect())
    }

    /// Thread `thread` reads sync point `point`: blocks until the schedule releases it, its bound runs
    /// out (counted from its first read), or `slice` (cut to [`MAX_HOLD`]) has passed, and says which.
    /// Call it with no other lock held.
    pub fn sync(&self, thread: u8, point: u16, slice: Duration) -> SyncOutcome {
        self.sync_on(None, thread, point, slice)
    }

    /// [`FaultInjector::sync`] for an access made by vCPU `vcpu`, which the log records.
    pub fn sync_on(&self, vcpu: Option<u8>, thread: u8, point: u16, slice: Duration) -> SyncOutcome {
        let now = Instant::now();
        let slice_end = now + slice.min(MAX_HOLD);
        let mut st = lock(&self.state);
        let generation = st.generation;
        let arrival = match st.armed.as_mut() {
            Some(seq) => seq.arrive(thread, point),
            None => Arrival::Go(SyncOutcome::NotArmed),
        };
        if !matches!(arrival, Arrival::Wait { again: true, .. } | Arrival::Collected(_)) {
            st.stats.arrivals += 1;
            self.record(&mut st, vcpu, Record::Arrive { thread, point });
        }
        self.flush_notes(&mut st, vcpu);
        let outcome = match arrival {
            Arrival::Go(outcome) => outcome,
            Arrival::Collected(ticket) => {
                st.held_since.remove(&ticket);
                SyncOutcome::Released
            }
            Arrival::Wait { ticket, again } => {
                if !again {
                    st.stats.held += 1;
                    st.held_since.insert(ticket, now);
                    log::debug!("fault injector: holding thread {thread} at point {point}");
                }
                let deadline = *st.held_since.entry(ticket).or_insert(now) + self.bound;
                let outcome;
                (st, outcome) = self.hold(st, vcpu, (generation, ticket), deadline, slice_end);
                if outcome != SyncOutcome::Retry {
                    st.held_since.remove(&ticket);
                }
                outcome
            }
        };
        if outcome == SyncOutcome::TimedOut {
            st.stats.timeouts += 1;
            log::warn!("fault injector: thread {thread} at point {point} released by the hold bound");
        }
        if outcome != SyncOutcome::Retry {
            self.record(&mut st, vcpu, Record::Proceed { thread, point, outcome });
        }
        outcome
    }

    /// Sleeps on the condition variable until `ticket` of arming `generation` is released or its
    /// schedule is gone, or until `deadline` (the bound: it proceeds out of order) or `slice_end` (retry).
    fn hold<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        vcpu: Option<u8>,
        (generation, ticket): (u64, Ticket),
        deadline: Instant,
        slice_end: Instant,
    ) -> (MutexGuard<'a, State>, SyncOutcome) {
        loop {
            if st.generation != generation {
                return (st, SyncOutcome::NotArmed);
            }
            let Some(seq) = st.armed.as_mut() else { return (st, SyncOutcome::NotArmed) };
            if let Some(outcome) = seq.claim(ticket) {
                return (st, outcome);
            }
            let now = Instant::now();
            if now >= deadline {
                let outcome = seq.expire(ticket);
                self.flush_notes(&mut st, vcpu);
                return (st, outcome);
            }
            if now >= slice_end {
                return (st, SyncOutcome::Retry);
            }
            let wait = deadline.min(slice_end) - now;
            st = self.changed.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// A value the guest wrote to the event register: logged and fed to the armed schedule, or counted
    /// as a protocol error when it does not decode.
    pub fn event(&self, raw: u64) {
        self.event_on(None, raw);
    }

    /// [`FaultInjector::event`] for an access made by vCPU `vcpu`.
    pub fn event_on(&self, vcpu: Option<u8>, raw: u64) {
        let ev = match Event::decode(raw) {
            Ok(ev) => ev,
            Err(e) => return self.protocol_error(vcpu, e),
        };
        let observer = lock(&self.observer).as_ref().map(|o| o.0.clone());
        if let (Some(obs), EventCode::RunBegin) = (&observer, ev.code) {
            // The run's log starts here; whatever came before belongs to no run.
            self.disarm();
            drop(self.take_log());
            if let Some(schedule) = obs.run_begin(ev.arg) {
                self.arm(&schedule);
            }
        }
        {
            let mut st = lock(&self.state);
            st.stats.events += 1;
            self.record(&mut st, vcpu, Record::Event(ev));
            if let Some(seq) = st.armed.as_mut() {
                seq.event(ev.thread, ev.code);
                self.flush_notes(&mut st, vcpu);
            }
        }
        if let Some(obs) = &observer {
            obs.event(&ev);
        }
        if let (Some(obs), EventCode::RunEnd) = (&observer, ev.code) {
            let progress = self.disarm();
            let snap = self.take_log();
            obs.run_end(ev.arg, snap.entries, snap.dropped, progress);
        }
    }

    /// Counts a malformed access; the first of each kind is logged as a warning, the rest at debug level.
    pub fn protocol_error(&self, vcpu: Option<u8>, err: ProtocolError) {
        let mut st = lock(&self.state);
        let count = st.stats.protocol_errors.entry(err.kind()).or_insert(0);
        *count += 1;
        let from = vcpu.map_or("the guest".to_string(), |v| format!("vCPU {v}"));
        if *count == 1 {
            log::warn!("fault injector: protocol error from {from}: {err} (further ones at debug level)");
        } else {
            log::debug!("fault injector: protocol error from {from}: {err}");
        }
    }

    /// Takes the log collected since the last call.
    pub fn take_log(&self) -> LogSnapshot {
        lock(&self.state).log.take()
    }

    /// The lifetime counters.
    pub fn stats(&self) -> Stats {
        let st = lock(&self.state);
        Stats { log_dropped: st.log.dropped_total(), ..st.stats.clone() }
    }

    /// Entries in the log now (bounded by its capacity).
    pub fn log_len(&self) -> usize {
        lock(&self.state).log.len()
    }

    fn record(&self, st: &mut State, vcpu: Option<u8>, record: Record) {
        st.log.push(self.start.elapsed(), vcpu, record);
    }

    /// Moves the state machine's notes into the log and wakes held threads when one was released.
    fn flush_notes(&self, st: &mut MutexGuard<'_, State>, vcpu: Option<u8>) {
        let Some(notes) = st.armed.as_mut().map(Sequencer::take_notes) else { return };
        let mut released = false;
        for note in notes {
            match note {
                Note::Released(_) => released = true,
                Note::Deviation(d) => {
                    st.stats.deviations += 1;
                    log::info!("fault injector: deviation: {d}");
                }
                Note::EventMatched(_) => {}
            }
            self.record(st, vcpu, note.into());
        }
        if released {
            self.changed.notify_all();
        }
    }
}
