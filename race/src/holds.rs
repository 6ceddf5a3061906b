//! Whether the kernel holds of a forced run happened where its schedule says, judged from kernel
//! evidence: the kernel-point events the guest driver writes when a tagged thread reaches a hold point
//! (thread, point, pfn), and the fs/dax hooks' folio-free events (pfn). The schedule's release order is
//! the host's own doing; these events are what the guest kernel really did.
//!
//! Three rules, each a [`FindingKind::Hold`] finding when broken:
//! - every kernel step of the schedule has its kernel-point event, and they come in schedule order;
//! - a hold on a page (busy, sleep, woken, free, ...) is on a page the run pinned;
//! - the pinned page's free (the first after the pin) falls between the kernel steps the schedule puts
//!   around the releasing thread's operation (after the last kernel step before it, before the first
//!   after it).

use daxvmm_devices::fault::{EventCode, KernelPoint, LogEntry, Record, Schedule, Step, THREAD_ANY};
use daxvmm_scenarios::MARKER_FAULT_TARGET;

use crate::oracle::{Finding, FindingKind};

/// A kernel step of a schedule: which thread, at which point.
fn kernel_step(step: &Step) -> Option<(u8, KernelPoint)> {
    step.kernel_point().map(|k| (step.thread, k))
}

/// Points that are about a page (the others carry pfn 0: no page left, or none involved).
fn about_a_page(k: KernelPoint) -> bool {
    !matches!(k, KernelPoint::Broken | KernelPoint::FinalBroken)
}

/// How far from the pinned page a pfn is, for [`kernel_order`]: within a PMD folio, else "other".
fn at_page(pfn: u64, pinned: Option<u64>) -> String {
    match pinned.map(|p| pfn.wrapping_sub(p)) {
        _ if pfn == 0 => String::new(),
        Some(d) if d < 512 => format!("@+{d}"),
        _ => "@other".into(),
    }
}

/// The kernel's own events of a run, in the order they came, as tokens a repro file records and a
/// replay compares: kernel-point arrivals (`0.kbusy@+0`), break-layout wait begin and end, and the first
/// free of each pinned page after its pin (`free@+0`). Pfns are offsets from the first pinned page, so
/// another boot's allocation does not change them. Frees of other pages (the run's new files), and later
/// frees of a pinned page (a new file reusing its block), depend on the allocator, so they are left out.
pub fn kernel_order(entries: &[LogEntry]) -> Vec<String> {
    let mut pins: Vec<u64> = Vec::new();
    let mut freed: Vec<u64> = Vec::new();
    let mut out = Vec::new();
    for e in entries {
        let Record::Event(ev) = &e.record else { continue };
        let pfn = ev.pfn();
        match ev.code {
            EventCode::PinTaken if ev.thread != THREAD_ANY => pins.push(pfn),
            EventCode::KernelPoint => {
                if let Some(k) = KernelPoint::from_id(ev.detail()) {
                    out.push(format!("{}.k{}{}", ev.thread, k.name(), at_page(pfn, pins.first().copied())));
                }
            }
            EventCode::WaitBegin | EventCode::WaitEnd => {
                out.push(format!("{}{}", ev.code.name(), at_page(pfn, pins.first().copied())))
            }
            EventCode::FolioFree if pins.contains(&pfn) && !freed.contains(&pfn) => {
                freed.push(pfn);
                out.push(format!("free{}", at_page(pfn, pins.first().copied())));
            }
            _ => {}
        }
    }
    out
}

/// The hold findings of one run of `schedule` with fault log `entries`; none for a schedule without
/// kernel steps.
pub fn check_holds(schedule: &Schedule, entries: &[LogEntry]) -> Vec<Finding> {
    let expected: Vec<(u8, KernelPoint)> = schedule.steps().iter().filter_map(kernel_step).collect();
    if expected.is_empty() {
        return Vec::new();
    }
    let mut pinned: Vec<u64> = Vec::new();
    // Pages a thread maps again during the run (a fault's hold may be on one of those).
    let mut targets: Vec<u64> = Vec::new();
    let mut pinned_at = 0;
    // Each pinned page's releasing thread: the last to unpin it (two pins on one page free it once).
    let mut released_by: Vec<(u64, u8)> = Vec::new();
    // (log position, thread, point, pfn) of each kernel-point event; log positions of folio frees.
    let mut holds: Vec<(usize, u8, KernelPoint, u64)> = Vec::new();
    let mut frees: Vec<(usize, u64)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let Record::Event(ev) = &e.record else { continue };
        match ev.code {
            EventCode::PinTaken if ev.thread != THREAD_ANY => {
                pinned.push(ev.pfn());
                pinned_at = i;
            }
            EventCode::Unpin if ev.thread != THREAD_ANY => {
                released_by.retain(|&(p, _)| p != ev.pfn());
                released_by.push((ev.pfn(), ev.thread));
            }
            EventCode::KernelPoint => {
                if let Some(k) = KernelPoint::from_id(ev.detail()) {
                    holds.push((i, ev.thread, k, ev.pfn()));
                }
            }
            EventCode::FolioFree => frees.push((i, ev.pfn())),
            EventCode::Marker if ev.detail() & 0xF00 == MARKER_FAULT_TARGET => targets.push(ev.pfn()),
            _ => {}
        }
    }
    let mut out = Vec::new();

    // Each expected hold, in the order the threads reach them, each event used once.
    let mut at = vec![None; expected.len()];
    let mut from = 0;
    let order = arrival_order(schedule);
    for (i, &n) in order.iter().enumerate() {
        let (thread, k) = expected[n];
        match holds[from..].iter().position(|&(_, t, p, _)| t == thread && p == k) {
            Some(j) => {
                let (pos, _, _, pfn) = holds[from + j];
                if about_a_page(k) && !pinned.is_empty() && !pinned.contains(&pfn) && !targets.contains(&pfn)
                {
                    out.push(hold(format!(
                        "thread {thread} held at kernel point {} on pfn {pfn:#x}, not on a pinned page ({:#x}) or one the run faults in",
                        k.name(),
                        pinned[0]
                    )));
                }
                at[n] = Some(pos);
                from += j + 1;
            }
            None => {
                // Which visit of the point this step is, and how many visits the kernel made.
                let visit = order[..=i].iter().filter(|&&m| expected[m] == (thread, k)).count();
                let seen = holds.iter().filter(|&&(_, t, p, _)| t == thread && p == k).count();
                let text = match (seen, visit) {
                    (s, 1) if s > 0 => {
                        format!("was held at kernel point {} but not where the schedule says", k.name())
                    }
                    (_, 1) => format!("never reached kernel point {} where the schedule says", k.name()),
                    (s, v) if s >= v => {
                        format!("was held at kernel point {} again but not where the schedule says", k.name())
                    }
                    _ => format!(
                        "never reached kernel point {} again (visit {visit} of the schedule)",
                        k.name()
                    ),
                };
                out.push(hold(format!("thread {thread} {text}")));
            }
        }
    }
    if !out.is_empty() {
        return out;
    }

    // Each pinned page's free (the first after the pins: later ones are of new files that reused the
    // block) lies inside the window of the thread that released it.
    let windows = Windows { schedule, expected: &expected, at: &at };
    for (i, &pfn) in pinned.iter().enumerate() {
        if pinned[..i].contains(&pfn) {
            continue; // two pins on one page: one free
        }
        let Some(&(_, t)) = released_by.iter().find(|&&(p, _)| p == pfn) else { continue };
        match frees.iter().find(|&&(at, p)| p == pfn && at > pinned_at) {
            Some(&(free_pos, _)) => out.extend(windows.check(t, pfn, free_pos)),
            None => out.push(hold(format!("the pinned page {pfn:#x} was never freed during the run"))),
        }
    }
    out
}

/// The schedule's kernel steps (indices in schedule order) in the order their threads *arrive* at them,
/// which is the order of their kernel-point events. A schedule places a step where it is released; a
/// forced schedule lets a released thread run alone to its next step, so that step's arrival comes
/// right after the thread's previous step was released, before anything later is released. A thread
/// released from a point where it sleeps arrives only once another thread has woken it: at the latest
/// just before its own release.
fn arrival_order(schedule: &Schedule) -> Vec<usize> {
    let steps = schedule.steps();
    let mut keyed: Vec<(usize, usize)> = Vec::new();
    for (pos, step) in steps.iter().enumerate().filter(|(_, s)| kernel_step(s).is_some()) {
        let previous = steps[..pos].iter().rposition(|s| s.thread == step.thread);
        // Twice the position, so that "just after" and "just before" a position are whole numbers.
        let key = match previous {
            Some(p) if kernel_step(&steps[p]).is_some_and(|(_, k)| k.blocks()) => 2 * pos - 1,
            Some(p) => 2 * p + 1,
            None => 0,
        };
        keyed.push((key, keyed.len()));
    }
    keyed.sort();
    keyed.into_iter().map(|(_, n)| n).collect()
}

fn hold(text: String) -> Finding {
    Finding::new(FindingKind::Hold, text)
}

/// A schedule's kernel steps with where their kernel-point events came (`at`, log positions), to place
/// a page's free against the window of the thread that released it.
struct Windows<'a> {
    schedule: &'a Schedule,
    expected: &'a [(u8, KernelPoint)],
    at: &'a [Option<usize>],
}

impl Windows<'_> {
    /// The findings for page `pfn`, released by thread `t`, freed at log position `free_pos`.
    fn check(&self, t: u8, pfn: u64, free_pos: usize) -> Vec<Finding> {
        let (expected, at) = (self.expected, self.at);
        let mut out = Vec::new();
        let steps = self.schedule.steps();
        // A thread that took its pin during the run releases it between its release points.
        use daxvmm_scenarios::{AFTER, AFTER_RELEASE, BEFORE, BEFORE_RELEASE};
        let (b, a) = if steps.contains(&Step::sync(t, BEFORE_RELEASE)) {
            (BEFORE_RELEASE, AFTER_RELEASE)
        } else {
            (BEFORE, AFTER)
        };
        let window = steps
            .iter()
            .position(|s| *s == Step::sync(t, b))
            .zip(steps.iter().position(|s| *s == Step::sync(t, a)));
        let Some((begin, end)) = window else { return out };
        let kernel_index = |i: usize| steps[..i].iter().filter(|s| kernel_step(s).is_some()).count();
        // The schedule places a step where it is *released*; its kernel-point event marks the *arrival*.
        // Reached before the window: a kernel step of another thread released before it, or released
        // after it began by a thread whose previous step was released before it and does not block (a
        // forced schedule lets nobody else go until that thread has arrived at its next step). Reached
        // after it: only a step its thread could not reach before the window ended, because the thread's
        // previous step was released after the window, or was a point where it went to sleep (then only
        // the unpin's wake-up lets it reach the next one).
        let kernel_positions: Vec<usize> =
            (0..steps.len()).filter(|&i| kernel_step(&steps[i]).is_some()).collect();
        // Kernel step j's thread's previous step: its position, and whether it is a point where it sleeps.
        let previous = |j: usize| {
            let (thread, pos) = (expected[j].0, kernel_positions[j]);
            let p = steps[..pos].iter().rposition(|s| s.thread == thread)?;
            Some((p, kernel_step(&steps[p]).is_some_and(|(_, k)| k.blocks())))
        };
        let reached_before = |j: usize| {
            expected[j].0 != t
                && (kernel_positions[j] < begin
                    || previous(j).is_some_and(|(p, sleeps)| p < begin && !sleeps))
        };
        let before =
            (0..expected.len()).filter(|&j| reached_before(j)).find(|&j| at[j].is_some_and(|p| p > free_pos));
        let after = (kernel_index(end)..expected.len())
            .find(|&j| expected[j].0 != t && previous(j).is_some_and(|(p, sleeps)| p > end || sleeps));
        if let Some(j) = before {
            out.push(hold(format!(
                "the pinned page {pfn:#x} was freed before thread {} reached kernel point {}",
                expected[j].0,
                expected[j].1.name()
            )));
        }
        if let Some(j) = after.filter(|&j| at[j].is_some_and(|p| p < free_pos)) {
            out.push(hold(format!(
                "thread {} reached kernel point {} before the pinned page {pfn:#x} was freed",
                expected[j].0,
                expected[j].1.name()
            )));
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use daxvmm_devices::fault::Event;

    use super::*;

    const PFN: u64 = 0x42_0000;

    fn ev(code: EventCode, thread: u8, pfn: u64, detail: u16) -> LogEntry {
        let event = Event::with_pfn(code, thread, pfn, detail).unwrap();
        LogEntry { seq: 0, at: Duration::ZERO, vcpu: None, record: Record::Event(event) }
    }

    fn kp(thread: u8, k: KernelPoint, pfn: u64) -> LogEntry {
        ev(EventCode::KernelPoint, thread, pfn, k.id())
    }

    fn sleeping() -> Schedule {
        "0.s1 0.kbusy 1.s1 1.s2 0.ksleep 0.kwoken 0.kbroken 0.s2".parse().unwrap()
    }

    /// What the kernel does under that schedule: busy, sleep (held there), then the unpin frees the page,
    /// then woken.
    fn good_log() -> Vec<LogEntry> {
        use KernelPoint::*;
        vec![
            ev(EventCode::PinTaken, 1, PFN, 0),
            kp(0, Busy, PFN),
            kp(0, Sleep, PFN),
            ev(EventCode::Unpin, 1, PFN, 0),
            ev(EventCode::FolioFree, THREAD_ANY, PFN, 0),
            kp(0, Woken, PFN),
            kp(0, Broken, 0),
        ]
    }

    /// truncate-unpin-busy: truncate reaches kbusy (and is held there) before the unpinner is released;
    /// its kbusy release comes after the unpin, and only kwoken must follow the free.
    #[test]
    fn a_step_reached_before_the_window_but_released_after_it_is_not_misread() {
        use KernelPoint::*;
        let busy: Schedule = "0.s1 1.s1 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2".parse().unwrap();
        let log = vec![
            ev(EventCode::PinTaken, 1, PFN, 0),
            kp(0, Busy, PFN),
            ev(EventCode::Unpin, 1, PFN, 0),
            ev(EventCode::FolioFree, THREAD_ANY, PFN, 0),
            kp(0, Woken, PFN),
            kp(0, Broken, 0),
        ];
        assert!(check_holds(&busy, &log).is_empty(), "{:?}", check_holds(&busy, &log));
        let mut woke_first = log.clone();
        woke_first.swap(3, 4);
        let f = check_holds(&busy, &woke_first);
        assert!(f[0].text.contains("reached kernel point woken before the pinned page"), "{f:?}");
    }

    /// truncate-vmsplice-busy: truncate arrives at kbusy before the drainer is even released, so its
    /// kernel-point event comes before the drainer's kfree, which the schedule releases first.
    #[test]
    fn holds_are_matched_in_the_order_threads_arrive_at_them() {
        use KernelPoint::*;
        let s: Schedule = "0.s1 1.s1 1.kfree 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2".parse().unwrap();
        let log = vec![
            ev(EventCode::PinTaken, 1, PFN, 0),
            kp(0, Busy, PFN),
            ev(EventCode::Unpin, 1, PFN, 0),
            ev(EventCode::FolioFree, THREAD_ANY, PFN, 0),
            kp(1, Free, PFN),
            kp(0, Woken, PFN),
            kp(0, Broken, 0),
        ];
        assert!(check_holds(&s, &log).is_empty(), "{:?}", check_holds(&s, &log));
        // The drain's free before truncate's busy scan: truncate had nothing to find.
        let mut late = log.clone();
        let busy = late.remove(1);
        late.insert(4, busy);
        let f = check_holds(&s, &late);
        assert!(f[0].text.contains("held at kernel point free but not where the schedule says"), "{f:?}");
        // Every forced schedule of the library whose threads arrive in release order keeps that order.
        let wakeup: Schedule =
            "0.s1 0.kbusy 0.ksleep 1.s1 1.kfree 1.s2 0.kwoken 0.kbroken 0.kdisassociate 0.s2"
                .parse()
                .unwrap();
        assert_eq!(arrival_order(&wakeup), [0, 1, 2, 3, 4, 5]);
        assert_eq!(arrival_order(&s), [1, 0, 2, 3]);
    }

    /// truncate-two-pages: each page's free is placed in the window of the thread that released it.
    #[test]
    fn each_pinned_page_is_freed_in_its_own_releasers_window() {
        use KernelPoint::*;
        let two: Schedule = "0.s1 1.s1 1.s2 0.kbusy 0.kwoken 2.s1 2.s2 0.ksleep 0.s2".parse().unwrap();
        let b = PFN + 1;
        let log = vec![
            ev(EventCode::PinTaken, 1, PFN, 0),
            ev(EventCode::PinTaken, 2, b, 0),
            kp(0, Busy, PFN),
            ev(EventCode::Unpin, 1, PFN, 0),
            ev(EventCode::FolioFree, THREAD_ANY, PFN, 0),
            kp(0, Woken, PFN),
            kp(0, Sleep, b),
            ev(EventCode::Unpin, 2, b, 0),
            ev(EventCode::FolioFree, THREAD_ANY, b, 0),
        ];
        assert!(check_holds(&two, &log).is_empty(), "{:?}", check_holds(&two, &log));
        // The second page freed before truncate was held on its wait queue.
        let mut early = log.clone();
        let free = early.remove(8);
        early.insert(6, free);
        let f = check_holds(&two, &early);
        assert!(
            f[0].text.contains(&format!("page {b:#x} was freed before thread 0 reached kernel point sleep")),
            "{f:?}"
        );
        // No rescan: truncate never reached the second wait.
        let mut no_rescan = log.clone();
        no_rescan.remove(6);
        assert!(check_holds(&two, &no_rescan)[0].text.contains("never reached kernel point sleep"));
    }

    /// truncate-late-pin: the second page is pinned first and waited on; the first page is pinned by
    /// thread 2 during that wait and released between thread 2's release points, while truncate is held
    /// where its second busy scan found it.
    #[test]
    fn a_page_pinned_during_the_wait_is_freed_in_its_release_window() {
        use KernelPoint::*;
        let late: Schedule =
            "0.s1 0.kbusy 0.ksleep 2.s1 2.s2 1.s1 1.s2 0.kwoken 2.s3 2.s4 0.kbusy 0.s2".parse().unwrap();
        let b = PFN + 1;
        let log = vec![
            ev(EventCode::PinTaken, 1, b, 0),
            kp(0, Busy, b),
            kp(0, Sleep, b),
            ev(EventCode::PinTaken, 2, PFN, 0),
            ev(EventCode::Unpin, 1, b, 0),
            ev(EventCode::FolioFree, THREAD_ANY, b, 0),
            kp(0, Woken, b),
            kp(0, Busy, PFN),
            ev(EventCode::Unpin, 2, PFN, 0),
            ev(EventCode::FolioFree, THREAD_ANY, PFN, 0),
        ];
        assert!(check_holds(&late, &log).is_empty(), "{:?}", check_holds(&late, &log));
        // Resume-scan: truncate never waited for the new pin.
        let mut resumed = log.clone();
        resumed.remove(7);
        let f = check_holds(&late, &resumed);
        assert!(f[0].text.contains("never reached kernel point busy again (visit 2"), "{f:?}");
        // The first page freed before truncate's second busy scan was held on it.
        let mut early = log.clone();
        let free = early.remove(9);
        early.insert(7, free);
        let f = check_holds(&late, &early);
        assert!(
            f[0].text.contains(&format!("page {PFN:#x} was freed before thread 0 reached kernel point busy")),
            "{f:?}"
        );
    }

    #[test]
    fn the_kernel_order_is_in_page_offsets_and_leaves_out_reuse() {
        let mut log = good_log();
        log.insert(0, ev(EventCode::FolioFree, THREAD_ANY, PFN - 5, 0)); // before the pin: not ours
        log.push(ev(EventCode::FolioFree, THREAD_ANY, PFN, 0)); // a new file reusing the block
        log.push(ev(EventCode::FolioFree, THREAD_ANY, PFN + 4096, 0)); // some other page
        log.push(ev(EventCode::FolioFree, THREAD_ANY, PFN + 1, 0)); // a new file's block nearby
        log.push(ev(EventCode::WaitBegin, THREAD_ANY, PFN + 1, 0));
        assert_eq!(
            kernel_order(&log),
            ["0.kbusy@+0", "0.ksleep@+0", "free@+0", "0.kwoken@+0", "0.kbroken", "wait-begin@+1"]
        );
        assert!(kernel_order(&[]).is_empty());
    }

    #[test]
    fn a_run_that_held_where_the_schedule_says_is_clean() {
        assert!(check_holds(&sleeping(), &good_log()).is_empty());
        assert!(check_holds(&"0.s1 1.s1".parse().unwrap(), &[]).is_empty(), "no kernel steps, no checks");
    }

    #[test]
    fn a_missing_or_misordered_hold_or_a_free_outside_its_window_is_found() {
        let mut missing = good_log();
        missing.remove(2);
        let f = check_holds(&sleeping(), &missing);
        assert!(f[0].text.contains("never reached kernel point sleep"), "{f:?}");
        assert_eq!(f[0].kind, FindingKind::Hold);

        let mut swapped = good_log();
        swapped.swap(1, 2);
        assert!(!check_holds(&sleeping(), &swapped).is_empty(), "sleep before busy");

        // The page freed before truncate went to sleep: the unpin was not inside the wait.
        let mut early = good_log();
        let free = early.remove(4);
        early.insert(2, free);
        let f = check_holds(&sleeping(), &early);
        assert!(f[0].text.contains("freed before thread 0 reached kernel point sleep"), "{f:?}");

        // Woken before the free: a hold that did not hold.
        let mut late = good_log();
        late.swap(4, 5);
        let f = check_holds(&sleeping(), &late);
        assert!(f[0].text.contains("reached kernel point woken before the pinned page"), "{f:?}");

        // A new file reusing the block frees it again later: only the first free after the pin counts.
        let mut reused = good_log();
        reused.push(ev(EventCode::FolioFree, THREAD_ANY, PFN, 0));
        assert!(check_holds(&sleeping(), &reused).is_empty(), "{:?}", check_holds(&sleeping(), &reused));

        // A hold on some other page.
        let mut other = good_log();
        other[1] = kp(0, KernelPoint::Busy, PFN + 1);
        assert!(check_holds(&sleeping(), &other)[0].text.contains("not on a pinned page"));
        // ... unless the guest announced it as a page the run faults in.
        other.insert(0, ev(EventCode::Marker, 2, PFN + 1, MARKER_FAULT_TARGET));
        assert!(check_holds(&sleeping(), &other).is_empty(), "{:?}", check_holds(&sleeping(), &other));
    }
}
