//! The injector's bounded record of everything that happened: events, arrivals, releases, deviations,
//! arming. The host-side oracle and repro files consume it. It keeps at most its capacity of entries and
//! counts the rest as dropped; sequence numbers keep counting, so a reader sees where the gap is. The
//! earliest entries are the ones kept: the start of a run is what explains it.

use std::fmt;
use std::time::Duration;

use super::protocol::{Event, SyncOutcome};
use super::scenario::Step;
use super::sequencer::{Deviation, Note};

/// What one entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A valid event write.
    Event(Event),
    /// A sync read arrived.
    Arrive {
        /// Thread tag.
        thread: u8,
        /// Sync point id.
        point: u16,
    },
    /// The schedule released a sync step (in schedule order).
    Released(Step),
    /// An event step passed in schedule order.
    EventMatched(Step),
    /// A sync read returned to the guest with this outcome.
    Proceed {
        /// Thread tag.
        thread: u8,
        /// Sync point id.
        point: u16,
        /// What the guest read.
        outcome: SyncOutcome,
    },
    /// A deviation from the armed schedule.
    Deviation(Deviation),
    /// A schedule was armed (the text form of the schedule).
    Armed {
        /// The arming's generation number.
        generation: u64,
        /// The schedule, in text form.
        schedule: String,
    },
    /// The schedule of this generation was disarmed.
    Disarmed {
        /// The arming's generation number.
        generation: u64,
    },
}

impl From<Note> for Record {
    fn from(n: Note) -> Self {
        match n {
            Note::Released(s) => Self::Released(s),
            Note::EventMatched(s) => Self::EventMatched(s),
            Note::Deviation(d) => Self::Deviation(d),
        }
    }
}

/// One line of a repro file's fault log: `0.s3 arrived`, `deviation: ...`, `schedule 2 armed: ...`.
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Event(e) => write!(f, "event {e}"),
            Self::Arrive { thread, point } => write!(f, "{} arrived", Step::sync(*thread, *point)),
            Self::Released(step) => write!(f, "{step} released"),
            Self::EventMatched(step) => write!(f, "{step} passed"),
            Self::Proceed { thread, point, outcome } => {
                write!(f, "{} proceeds: {outcome}", Step::sync(*thread, *point))
            }
            Self::Deviation(d) => write!(f, "deviation: {d}"),
            Self::Armed { generation, schedule } => write!(f, "schedule {generation} armed: {schedule}"),
            Self::Disarmed { generation } => write!(f, "schedule {generation} disarmed"),
        }
    }
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Position in the injector's history, from 0, gapless unless entries were dropped.
    pub seq: u64,
    /// Time since the injector was created.
    pub at: Duration,
    /// The vCPU whose access caused it, when the caller said.
    pub vcpu: Option<u8>,
    /// What happened.
    pub record: Record,
}

/// `#7 +0.125s vcpu 1: 0.s3 arrived` (no vCPU part when the caller did not say which).
impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} +{:.3}s", self.seq, self.at.as_secs_f64())?;
        if let Some(v) = self.vcpu {
            write!(f, " vcpu {v}")?;
        }
        write!(f, ": {}", self.record)
    }
}

/// What [`EventLog::take`] hands out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSnapshot {
    /// The kept entries, in order.
    pub entries: Vec<LogEntry>,
    /// Entries dropped for lack of room since the previous take.
    pub dropped: u64,
}

/// A log that never holds more than its capacity.
#[derive(Debug)]
pub struct EventLog {
    capacity: usize,
    entries: Vec<LogEntry>,
    next_seq: u64,
    dropped: u64,
    dropped_total: u64,
}

impl EventLog {
    /// An empty log holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: Vec::new(), next_seq: 0, dropped: 0, dropped_total: 0 }
    }

    /// Appends an entry, or counts it as dropped when the log is full.
    pub fn push(&mut self, at: Duration, vcpu: Option<u8>, record: Record) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.entries.len() >= self.capacity {
            if self.dropped == 0 {
                log::warn!("fault injector log full ({} entries): dropping until it is taken", self.capacity);
            }
            self.dropped += 1;
            self.dropped_total += 1;
            return;
        }
        self.entries.push(LogEntry { seq, at, vcpu, record });
    }

    /// Takes the kept entries and the drop count, leaving the log empty (sequence numbers continue).
    pub fn take(&mut self) -> LogSnapshot {
        LogSnapshot { entries: std::mem::take(&mut self.entries), dropped: std::mem::take(&mut self.dropped) }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entries are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most entries it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries dropped over the log's lifetime.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(i: u16) -> Record {
        Record::Arrive { thread: 0, point: i }
    }

    #[test]
    fn bounded_keeps_earliest_and_counts_the_rest() {
        let mut log = EventLog::new(3);
        for i in 0..10 {
            log.push(Duration::from_nanos(u64::from(i)), Some(1), marker(i));
        }
        assert_eq!(log.len(), 3);
        let snap = log.take();
        assert_eq!(snap.dropped, 7);
        assert_eq!(snap.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(snap.entries[2].record, marker(2));
        assert!(log.is_empty());
        log.push(Duration::ZERO, None, marker(99));
        let snap = log.take();
        assert_eq!((snap.entries[0].seq, snap.dropped), (10, 0), "seq continues across the gap");
        assert_eq!(log.dropped_total(), 7);
    }

    #[test]
    fn entries_read_as_sentences_without_rust_syntax() {
        use crate::fault::protocol::{EventCode, THREAD_ANY};
        let pin = Event::new(EventCode::PinTaken, 1, 0x1234).expect("a valid event");
        let hook = Event::new(EventCode::Unpin, THREAD_ANY, 7).expect("a valid event");
        let lines = [
            (Some(1), Record::Event(pin), "#0 +0.000s vcpu 1: event pin from thread 1, arg 0x1234"),
            (None, Record::Event(hook), "#1 +0.001s: event unpin from a kernel hook, arg 0x7"),
            (Some(0), Record::Arrive { thread: 0, point: 3 }, "#2 +0.002s vcpu 0: 0.s3 arrived"),
            (None, Record::Released(Step::sync(1, 2)), "#3 +0.003s: 1.s2 released"),
            (
                Some(0),
                Record::Proceed { thread: 0, point: 3, outcome: SyncOutcome::TimedOut },
                "#4 +0.004s vcpu 0: 0.s3 proceeds: timed out",
            ),
            (
                None,
                Record::Deviation(Deviation::Unscheduled { thread: 2, point: 9 }),
                "#5 +0.005s: deviation: 2.s9 arrived, which the schedule does not name: let through",
            ),
            (
                None,
                Record::Armed { generation: 2, schedule: "0.s1 1.s1".into() },
                "#6 +0.006s: schedule 2 armed: 0.s1 1.s1",
            ),
            (None, Record::Disarmed { generation: 2 }, "#7 +0.007s: schedule 2 disarmed"),
        ];
        let mut log = EventLog::new(16);
        for (i, (vcpu, record, _)) in lines.iter().enumerate() {
            log.push(Duration::from_millis(i as u64), *vcpu, record.clone());
        }
        let shown: Vec<String> = log.take().entries.iter().map(ToString::to_string).collect();
        let want: Vec<&str> = lines.iter().map(|l| l.2).collect();
        assert_eq!(shown, want);
    }
}
