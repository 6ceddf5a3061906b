//! The host-side oracle: judges one run of a race scenario from outside the guest. It reads the run's
//! fault log (the guest's own events and the kernel hooks' events, in the order the host saw them), the
//! pmem backing memory (through a reader the VMM gives it), and the guest's console output. What it
//! reports as a [`Finding`] is a violation of the fs-dax refcount rules:
//! - *ordering*: a truncate or hole punch returned successfully while a pin it covered was still held;
//! - *data*: a block handed to a new file after the truncate holds bytes that are not that file's, such as
//!   a pattern written through a stale pin;
//! - *signature*: a WARN, BUG, KASAN report, Oops or hung task in the guest's log;
//! - *guest*: a check the guest program made itself (used where the host sees no events: a kernel without
//!   the driver);
//! - *hold*: a forced run's kernel hold was not where its schedule says (crate::holds).
//!
//! It also recovers the interleaving a run really took ([`observed_order`]), which the benchmark and the
//! reports use.

use std::collections::HashMap;
use std::fmt;

use daxvmm_devices::fault::{
    Deviation, Event, EventCode, LogEntry, Record, Scenario, Schedule, Step, StepKind, THREAD_ANY,
};
pub use daxvmm_scenarios::MARKER_NEW_BLOCK;
/// Bytes the oracle reads per block.
pub const BLOCK: usize = 4096;

/// The class of a violation; repro files compare these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    /// An operation finished in an order the refcount rules forbid.
    Ordering,
    /// pmem holds bytes it must not.
    Data,
    /// The guest kernel logged a warning, bug or hang.
    Signature,
    /// The guest program found a violation itself.
    Guest,
    /// The guest died (panic, reset, timeout) during the run.
    Crash,
    /// A kernel hold of a forced schedule did not happen where the schedule says (the run does not show
    /// the interleaving it was meant to force).
    Hold,
}

impl FindingKind {
    /// The name used in reports and repro files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ordering => "ordering",
            Self::Data => "data",
            Self::Signature => "signature",
            Self::Guest => "guest",
            Self::Crash => "crash",
            Self::Hold => "hold",
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Ordering, Self::Data, Self::Signature, Self::Guest, Self::Crash, Self::Hold]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// One violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Its class.
    pub kind: FindingKind,
    /// What exactly, for people.
    pub text: String,
}

impl Finding {
    /// A finding of `kind`.
    pub fn new(kind: FindingKind, text: impl Into<String>) -> Self {
        Self { kind, text: text.into() }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.text)
    }
}

fn guest_events(entries: &[LogEntry]) -> impl Iterator<Item = (u64, &Event)> {
    entries.iter().filter_map(|e| match &e.record {
        Record::Event(ev) => Some((e.seq, ev)),
        _ => None,
    })
}

/// The scenario threads' events (hook events, from any thread, left out), each with the pins held at
/// that point (pfn to pins taken minus pins released, before the event: a pin or unpin event counts from
/// the next one on).
fn with_pins(entries: &[LogEntry], mut each: impl FnMut(u64, &Event, &HashMap<u64, i64>)) {
    let mut pins: HashMap<u64, i64> = HashMap::new();
    for (seq, ev) in guest_events(entries).filter(|(_, ev)| ev.thread != THREAD_ANY) {
        each(seq, ev, &pins);
        match ev.code {
            EventCode::PinTaken => *pins.entry(ev.pfn()).or_default() += 1,
            EventCode::Unpin => *pins.entry(ev.pfn()).or_default() -= 1,
            _ => {}
        }
    }
}

/// Ordering: every successful truncate-returned / punch-hole-returned event from a scenario thread must
/// come after the unpins of every pin the guest program took.
pub fn check_order(entries: &[LogEntry]) -> Vec<Finding> {
    let mut out = Vec::new();
    with_pins(entries, |seq, ev, pins| {
        let returned = matches!(ev.code, EventCode::TruncateReturned | EventCode::PunchHoleReturned);
        if !returned || ev.detail() != 0 {
            return;
        }
        // Every page a scenario pins is in the range its operation removes, or in a folio of that
        // range (a folio is busy as a whole), so any pin still held counts, not only one on the page
        // the event names.
        let mut held: Vec<(u64, i64)> = pins.iter().filter(|&(_, &n)| n > 0).map(|(&p, &n)| (p, n)).collect();
        held.sort_unstable();
        let Some(&(pfn, n)) = held.first() else { return };
        // Scenarios that evict (unlink, umount) report with the truncate codes too.
        let op = if ev.code == EventCode::TruncateReturned { "truncate or eviction" } else { "punch-hole" };
        let more = match held.len() {
            1 => String::new(),
            k => format!(" (and {} more pinned pages)", k - 1),
        };
        out.push(Finding::new(
            FindingKind::Ordering,
            format!(
                "{op} returned (log #{seq}) while pfn {pfn:#x} still had {n} pin(s){more}: the kernel freed blocks still under DMA"
            ),
        ));
    });
    out
}

/// Data: reads every block the guest announced as a new file's (marker with [`MARKER_NEW_BLOCK`]) through
/// `read(guest_phys_addr, buf)` and checks that it holds only that file's pattern. Bytes of a pattern the
/// guest wrote through a pin on the same pfn make the finding name the stale pin. Blocks `read` cannot
/// reach are skipped (returned as the second value, for the report).
pub fn check_data(entries: &[LogEntry], read: &dyn Fn(u64, &mut [u8]) -> bool) -> (Vec<Finding>, Vec<u64>) {
    let mut through_pin: Vec<(u64, u8)> = Vec::new();
    let mut new_blocks: Vec<(u64, u8)> = Vec::new();
    for (_, ev) in guest_events(entries) {
        match ev.code {
            EventCode::WriteThroughPin => through_pin.push((ev.pfn(), ev.detail() as u8)),
            EventCode::Marker if ev.detail() & 0xF00 == MARKER_NEW_BLOCK => {
                new_blocks.push((ev.pfn(), ev.detail() as u8))
            }
            _ => {}
        }
    }
    let mut findings = Vec::new();
    let mut unreadable = Vec::new();
    let mut buf = vec![0u8; BLOCK];
    for &(pfn, pattern) in &new_blocks {
        if !read(pfn << 12, &mut buf) {
            unreadable.push(pfn);
            continue;
        }
        let wrong = buf.iter().filter(|&&b| b != pattern).count();
        if wrong == 0 {
            continue;
        }
        let stale = through_pin
            .iter()
            .filter(|&&(p, a)| p == pfn && a != pattern)
            .map(|&(_, a)| (a, buf.iter().filter(|&&b| b == a).count()))
            .find(|&(_, n)| n > 0);
        let text = match stale {
            Some((a, n)) => format!(
                "block pfn {pfn:#x} of a file created after the truncate holds {n} bytes of pattern {a:#04x} written through a stale pin (its own pattern is {pattern:#04x})"
            ),
            None => format!("block pfn {pfn:#x} of a file created after the truncate has {wrong} bytes that are not its pattern {pattern:#04x}"),
        };
        findings.push(Finding::new(FindingKind::Data, text));
    }
    (findings, unreadable)
}

/// Data, at the moment the guest announces a write through a pin: the pinned block (the pin's pfn, the
/// block of the pinned file when it was pinned) must hold the pattern, because the write went through that
/// very page. `None` when it does, or when `read` cannot reach the block.
pub fn check_pin_write(pfn: u64, pattern: u8, read: &dyn Fn(u64, &mut [u8]) -> bool) -> Option<Finding> {
    let mut buf = vec![0u8; BLOCK];
    if !read(pfn << 12, &mut buf) {
        return None;
    }
    let landed = buf.iter().filter(|&&b| b == pattern).count();
    (landed < BLOCK).then(|| {
        Finding::new(
            FindingKind::Data,
            format!("of the {BLOCK} bytes of pattern {pattern:#04x} written through the pin of pfn {pfn:#x}, only {landed} are in that block of pmem"),
        )
    })
}

/// The stale-write window of a run: the new-file blocks (announced by the guest) that were still pinned
/// by a scenario thread when the new file got them. A pin that outlives its block is harmless until
/// another file gets the block; then a device write through the pin lands in that file. Each such pfn
/// once, in the order the files got them.
pub fn stale_window(entries: &[LogEntry]) -> Vec<u64> {
    let mut out = Vec::new();
    with_pins(entries, |_, ev, pins| {
        let pfn = ev.pfn();
        let new_block = ev.code == EventCode::Marker && ev.detail() & 0xF00 == MARKER_NEW_BLOCK;
        if new_block && pins.get(&pfn).is_some_and(|&n| n > 0) && !out.contains(&pfn) {
            out.push(pfn);
        }
    });
    out
}

/// Lines of a guest kernel log that mean a refcount bug (docs/dax-refcount.md lists the WARN and BUG sites).
const SIGNATURES: &[&str] = &[
    "WARNING:",
    "kernel BUG at",
    "BUG: KASAN",
    "BUG: unable to handle",
    "BUG: Bad page",
    "BUG: sleeping function",
    "BUG: workqueue lockup",
    "Oops:",
    "general protection fault",
    "blocked for more than",
    "Kernel panic",
    "rcu_sched self-detected stall",
    "rcu: INFO:",
    "watchdog: BUG: soft lockup",
    "possible circular locking dependency",
    "EXT4-fs error",
    "Corruption detected",
    "Corruption of in-memory data",
    "metadata I/O error",
    "xfs_do_force_shutdown",
];

/// Signature findings in a stretch of the guest's console output, one per matching line.
pub fn scan_log(text: &str) -> Vec<Finding> {
    text.lines()
        .filter(|l| SIGNATURES.iter().any(|s| l.contains(s)))
        .map(|l| Finding::new(FindingKind::Signature, strip_printk_time(l).trim().to_string()))
        .collect()
}

fn strip_printk_time(line: &str) -> &str {
    match (line.find('['), line.find(']')) {
        (Some(0), Some(end)) => &line[end + 1..],
        _ => line,
    }
}

/// How a run went against its schedule (not violations: a correct kernel that blocks shows up here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Held arrivals released by the hold bound (the schedule waited for a step that did not come: often
    /// the kernel blocking as it must).
    pub timeouts: usize,
    /// Steps passed over (an event that never came, e.g. no break-layout wait).
    pub skipped: usize,
    /// Other deviations.
    pub other_deviations: usize,
}

/// Counts the deviations in a run's log.
pub fn summarize(entries: &[LogEntry]) -> RunSummary {
    let mut s = RunSummary::default();
    for e in entries {
        if let Record::Deviation(d) = &e.record {
            match d {
                Deviation::TimedOut { .. } => s.timeouts += 1,
                Deviation::Skipped { .. } => s.skipped += 1,
                _ => s.other_deviations += 1,
            }
        }
    }
    s
}

/// The order in which the run's threads really passed the scenario's steps: the release order when a
/// schedule was enforced, else the arrival order, with each awaited event placed where it first came (and
/// left out where it never came). `None` when the log does not hold every sync step as often as the
/// scenario has it.
pub fn observed_order(scenario: &Scenario, entries: &[LogEntry]) -> Option<Schedule> {
    let enforced = entries.iter().any(|e| matches!(e.record, Record::Released(_)));
    // The scenario's steps of one kind (events, or sync points), in thread and program order.
    let of_kind = |event: bool| -> Vec<Step> {
        let threads = scenario.threads().iter();
        threads
            .flat_map(|t| t.steps.iter().map(move |s| Step { thread: t.tag, kind: s.kind }))
            .filter(|s| matches!(s.kind, StepKind::Event(_)) == event)
            .collect()
    };
    let awaited = of_kind(true);
    let mut seen_events: Vec<Step> = Vec::new();
    let mut steps = Vec::new();
    for e in entries {
        match &e.record {
            Record::Released(s) | Record::EventMatched(s) if enforced => steps.push(*s),
            Record::Arrive { thread, point } if !enforced => steps.push(Step::sync(*thread, *point)),
            Record::Event(ev) if !enforced => {
                let step = awaited.iter().find(|s| {
                    s.kind == StepKind::Event(ev.code)
                        && (ev.thread == THREAD_ANY || ev.thread == s.thread)
                        && !seen_events.contains(s)
                });
                if let Some(&s) = step {
                    seen_events.push(s);
                    steps.push(s);
                }
            }
            _ => {}
        }
    }
    // Every sync step as often as the scenario has it (a kernel hold point can come twice); awaited
    // events only where they came (a kernel that did not wait has no wait-begin), so the order is still
    // one the report can count.
    let syncs = of_kind(false);
    let count = |v: &[Step], s: Step| v.iter().filter(|&&x| x == s).count();
    let complete = syncs.iter().all(|&s| count(&steps, s) == count(&syncs, s))
        && steps.iter().filter(|s| matches!(s.kind, StepKind::Sync(_))).count() == syncs.len();
    complete.then(|| Schedule::new(steps))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::library::find;

    fn log(records: Vec<Record>) -> Vec<LogEntry> {
        records
            .into_iter()
            .enumerate()
            .map(|(i, record)| LogEntry { seq: i as u64, at: Duration::ZERO, vcpu: None, record })
            .collect()
    }

    fn ev(code: EventCode, thread: u8, pfn: u64, detail: u16) -> Record {
        Record::Event(Event::with_pfn(code, thread, pfn, detail).unwrap())
    }

    #[test]
    fn truncate_after_unpin_is_clean_before_is_a_violation() {
        use EventCode::*;
        let good = log(vec![
            ev(PinTaken, 1, 0x1234, 0),
            ev(TruncateStart, 0, 0x1234, 0),
            ev(WaitBegin, THREAD_ANY, 0x1234, 0),
            ev(Unpin, 1, 0x1234, 0),
            ev(TruncateReturned, 0, 0x1234, 0),
        ]);
        assert!(check_order(&good).is_empty());
        let bad = log(vec![
            ev(PinTaken, 1, 0x1234, 0),
            ev(TruncateStart, 0, 0x1234, 0),
            ev(TruncateReturned, 0, 0x1234, 0),
            ev(Unpin, 1, 0x1234, 0),
        ]);
        let f = check_order(&bad);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FindingKind::Ordering);
        assert!(f[0].text.contains("pfn 0x1234 still had 1 pin"), "{}", f[0]);
        // A failed truncate (EINTR) freed nothing; hook events (any thread) do not count as pins.
        let interrupted =
            log(vec![ev(PinTaken, 1, 7, 0), ev(PinTaken, THREAD_ANY, 8, 0), ev(TruncateReturned, 0, 7, 4)]);
        assert!(check_order(&interrupted).is_empty());
        // Two pins: one unpin is not enough.
        let two = log(vec![
            ev(PinTaken, 1, 9, 0),
            ev(PinTaken, 2, 9, 0),
            ev(Unpin, 1, 9, 0),
            ev(PunchHoleReturned, 0, 9, 0),
        ]);
        assert!(check_order(&two)[0].text.starts_with("punch-hole returned"));
        // Two pinned pages: the event names the first, released; the second still pinned counts.
        let pages = log(vec![
            ev(PinTaken, 1, 0x20, 0),
            ev(PinTaken, 2, 0x21, 0),
            ev(Unpin, 1, 0x20, 0),
            ev(TruncateReturned, 0, 0x20, 0),
            ev(Unpin, 2, 0x21, 0),
        ]);
        let f = check_order(&pages);
        assert_eq!(f.len(), 1);
        assert!(f[0].text.contains("pfn 0x21 still had 1 pin(s):"), "{}", f[0]);
        let both =
            log(vec![ev(PinTaken, 1, 0x20, 0), ev(PinTaken, 2, 0x21, 0), ev(TruncateReturned, 0, 0x20, 0)]);
        assert!(check_order(&both)[0].text.contains("pfn 0x20 still had 1 pin(s) (and 1 more pinned pages)"));
    }

    #[test]
    fn the_stale_write_window_is_a_new_file_on_a_block_still_pinned() {
        use EventCode::*;
        let new = |pfn| ev(Marker, 0, pfn, MARKER_NEW_BLOCK | 0x3c);
        // Block 0x21 went to a new file while pinned; 0x20 only after its unpin; 0x30 was never pinned.
        let entries = log(vec![
            ev(PinTaken, 1, 0x20, 0),
            ev(PinTaken, 2, 0x21, 0),
            ev(Unpin, 1, 0x20, 0),
            new(0x20),
            new(0x21),
            new(0x21),
            new(0x30),
            ev(Marker, 0, 0x21, 0x001),
            ev(Unpin, 2, 0x21, 0),
        ]);
        assert_eq!(stale_window(&entries), [0x21]);
        assert!(stale_window(&entries[..3]).is_empty());
    }

    #[test]
    fn data_check_reads_new_blocks_and_names_stale_pins() {
        use EventCode::*;
        let entries = log(vec![
            ev(WriteThroughPin, 1, 0x10, 0xa5),
            ev(Marker, 0, 0x10, MARKER_NEW_BLOCK | 0x3c),
            ev(Marker, 0, 0x11, MARKER_NEW_BLOCK | 0x3c),
            ev(Marker, 0, 0x99, MARKER_NEW_BLOCK | 0x3c),
            ev(Marker, 0, 0x12, 0x001),
        ]);
        // pfn 0x10 got 100 bytes of the stale pattern, 0x11 is clean, 0x99 is outside pmem.
        let read = |gpa: u64, buf: &mut [u8]| -> bool {
            match gpa >> 12 {
                0x10 => {
                    buf.fill(0x3c);
                    buf[..100].fill(0xa5);
                    true
                }
                0x11 => {
                    buf.fill(0x3c);
                    true
                }
                _ => false,
            }
        };
        let (f, unreadable) = check_data(&entries, &read);
        assert_eq!(unreadable, [0x99]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, FindingKind::Data);
        assert!(
            f[0].text.contains("holds 100 bytes of pattern 0xa5 written through a stale pin"),
            "{}",
            f[0]
        );
        // Wrong bytes without a matching pin write are still reported.
        let entries = log(vec![ev(Marker, 0, 0x11, MARKER_NEW_BLOCK | 0x77)]);
        let (f, _) = check_data(&entries, &read);
        assert!(f[0].text.contains("4096 bytes that are not its pattern 0x77"), "{}", f[0]);
    }

    #[test]
    fn a_write_through_a_pin_must_be_in_the_pinned_block() {
        let read = |gpa: u64, buf: &mut [u8]| -> bool {
            match gpa >> 12 {
                0x20 => buf.fill(0xa5),
                0x21 => {
                    buf.fill(0xa5);
                    buf[4000..].fill(0);
                }
                _ => return false,
            }
            true
        };
        assert_eq!(check_pin_write(0x20, 0xa5, &read), None);
        let f = check_pin_write(0x21, 0xa5, &read).unwrap();
        assert_eq!(f.kind, FindingKind::Data);
        assert!(f.text.contains("only 4000 are in that block"), "{f}");
        assert_eq!(check_pin_write(0x99, 0xa5, &read), None, "outside pmem: nothing to say");
    }

    #[test]
    fn log_scan_finds_signatures() {
        let text = "[    1.0] ok\n[   12.5] WARNING: CPU: 1 PID: 80 at fs/dax.c:380 dax_disassociate_entry+0x9c/0xb0\nplain\n[ 40.0] INFO: task sh:81 blocked for more than 20 seconds.\n";
        let f = scan_log(text);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].text, "WARNING: CPU: 1 PID: 80 at fs/dax.c:380 dax_disassociate_entry+0x9c/0xb0");
        assert!(f[1].text.contains("blocked for more than"));
        assert!(scan_log("all good\n").is_empty());
        // Filesystem damage, as ext4 and xfs report it.
        for line in [
            "[ 9.1] EXT4-fs error (device pmem0): ext4_validate_block_bitmap:421: comm kworker: bg 0: bad block bitmap checksum",
            "[ 9.2] XFS (pmem0): Corruption detected. Unmount and run xfs_repair",
            "[ 9.3] XFS (pmem0): metadata I/O error in \"xfs_imap_to_bp+0x61\" at daddr 0x20 len 32 error 117",
            "[ 9.4] XFS (pmem0): xfs_do_force_shutdown(0x8) called from line 1234 of file fs/xfs/xfs_trans.c",
        ] {
            assert_eq!(scan_log(line).len(), 1, "{line}");
        }
    }

    #[test]
    fn observed_order_from_releases_or_arrivals() {
        let scenario = find("truncate-unpin").unwrap().scenario;
        let s = |t: &str| t.parse::<Schedule>().unwrap();
        let wait = ev(EventCode::WaitBegin, THREAD_ANY, 5, 0);
        // Unarmed: arrival order plus the first wait-begin.
        let arrivals = log(vec![
            Record::Arrive { thread: 0, point: 1 },
            wait.clone(),
            Record::Arrive { thread: 1, point: 1 },
            Record::Arrive { thread: 1, point: 2 },
            wait.clone(),
            Record::Arrive { thread: 0, point: 2 },
        ]);
        assert_eq!(observed_order(&scenario, &arrivals), Some(s("0.s1 0.e7 1.s1 1.s2 0.s2")));
        // No wait: the sync steps alone.
        let no_wait = log(vec![
            Record::Arrive { thread: 1, point: 1 },
            Record::Arrive { thread: 1, point: 2 },
            Record::Arrive { thread: 0, point: 1 },
            Record::Arrive { thread: 0, point: 2 },
        ]);
        assert_eq!(observed_order(&scenario, &no_wait), Some(s("1.s1 1.s2 0.s1 0.s2")));
        // A sync step missing (the run stopped early): no order.
        assert_eq!(observed_order(&scenario, &no_wait[..3]), None);
        // Enforced: the release order, whatever the arrivals.
        let released = log(vec![
            Record::Arrive { thread: 1, point: 1 },
            Record::Arrive { thread: 0, point: 1 },
            Record::Released("0.s1".parse().unwrap()),
            Record::EventMatched("0.e7".parse().unwrap()),
            Record::Released("1.s1".parse().unwrap()),
            Record::Released("0.s2".parse().unwrap()),
            Record::Released("1.s2".parse().unwrap()),
        ]);
        assert_eq!(observed_order(&scenario, &released), Some(s("0.s1 0.e7 1.s1 0.s2 1.s2")));
        // A kernel point the scenario holds twice counts twice; once is not the whole order.
        let late = find("truncate-late-pin").unwrap();
        let order = late.schedules[0].clone();
        let released: Vec<Record> = order.steps().iter().map(|&st| Record::Released(st)).collect();
        assert_eq!(observed_order(&late.scenario, &log(released.clone())), Some(order));
        let busy: Step = "0.kbusy".parse().unwrap();
        let second_busy = released.iter().rposition(|r| *r == Record::Released(busy)).unwrap();
        let mut once = released;
        once.remove(second_busy);
        assert_eq!(observed_order(&late.scenario, &log(once)), None);
    }

    #[test]
    fn summary_counts_deviations() {
        let step: Step = "1.s1".parse().unwrap();
        let entries = log(vec![
            Record::Deviation(Deviation::TimedOut { step, blocked_on: None }),
            Record::Deviation(Deviation::Skipped { step }),
            Record::Deviation(Deviation::Unscheduled { thread: 3, point: 1 }),
        ]);
        assert_eq!(summarize(&entries), RunSummary { timeouts: 1, skipped: 1, other_deviations: 1 });
        assert_eq!(FindingKind::from_name("data"), Some(FindingKind::Data));
        assert_eq!(FindingKind::from_name("nope"), None);
    }
}
