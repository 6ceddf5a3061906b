//! Unit tests of the fault-injection device, one file per module under test: protocol decoding and
//! encoding, scenario enumeration and sampling, the pure sequencer, the threaded injector, and a flood of
//! random accesses through the MMIO handler.

mod device;
mod injector;
mod protocol;
mod scenario;
mod sequencer;

use super::{EventCode, Scenario, ThreadSpec};

/// Thread 0 ("a") with sync points 1 and 2, thread 1 ("b") with sync point 1: three interleavings.
pub(super) fn a2_b1() -> Scenario {
    let a = ThreadSpec::new(0, "a").sync(1, "a1").sync(2, "a2");
    let b = ThreadSpec::new(1, "b").sync(1, "b1");
    Scenario::new("a2-b1", vec![a, b]).expect("valid scenario")
}

/// Threads 0..counts.len() with counts[i] sync points each (ids 0..counts[i]).
pub(super) fn shape(counts: &[u16]) -> Scenario {
    let threads = counts
        .iter()
        .enumerate()
        .map(|(t, &n)| {
            (0..n).fold(ThreadSpec::new(t as u8, &format!("t{t}")), |s, p| s.sync(p, &format!("p{p}")))
        })
        .collect();
    Scenario::new("shape", threads).expect("valid scenario")
}

/// Truncate vs unpin, the worked example of docs/fault-injection.md: the truncator (0) passes point 1
/// before ftruncate and point 2 after it returns; the unpinner (1) passes point 1 before UNPIN and
/// point 2 after it; break-layout's wait is an event step of the truncator.
pub(super) fn truncate_vs_unpin() -> Scenario {
    let t = ThreadSpec::new(0, "truncator")
        .sync(1, "before-truncate")
        .event(EventCode::WaitBegin)
        .sync(2, "after-truncate");
    let u = ThreadSpec::new(1, "unpinner").sync(1, "before-unpin").sync(2, "after-unpin");
    Scenario::new("truncate-vs-unpin", vec![t, u]).expect("valid scenario")
}

/// Waits until `inj` has held `n` arrivals. The minute is a guard against a broken hold hanging the
/// test, not a timing the test depends on: a held arrival is counted as soon as its thread runs.
pub(super) fn wait_until_held(inj: &super::FaultInjector, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while inj.stats().held < n {
        assert!(std::time::Instant::now() < deadline, "no arrival was held");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
