//! The race scenario library: the host's view of each scenario the guest program `daxvmm-race`
//! (images/refcount-test/src/race/) knows, as [`Scenario`]s whose schedules the fault injector enforces.
//! The guest side of each entry runs the same sync points in the same program order; the names here are
//! the ones both sides use on the kernel command line, in reports and in repro files.

use super::protocol::EventCode;
use super::scenario::{Scenario, ThreadSpec};

/// One entry of the library.
#[derive(Debug, Clone)]
pub struct LibraryEntry {
    /// The scenario, with its name and thread programs.
    pub scenario: Scenario,
    /// One line for `daxvmm test --list` and reports.
    pub about: &'static str,
    /// Whether it needs the dax_refcount driver (pins through /dev/dax_refcount). Scenarios that do not
    /// (user-space references only) also run on kernels without our patches, such as 6.12.
    pub needs_driver: bool,
}

impl LibraryEntry {
    /// Guest threads, hence the vCPUs a run needs (each scenario thread gets its own vCPU).
    pub fn threads(&self) -> usize {
        self.scenario.threads().len()
    }
}

/// A truncating (or punching, evicting) thread 0 and a releasing thread 1, each with a sync point
/// before and after its operation; `wait` adds the break-layout wait-begin event to thread 0, so a
/// schedule can put the release inside the kernel's wait.
fn two_threads(name: &str, t0: (&str, &str, &str), t1: (&str, &str, &str), wait: bool) -> Scenario {
    let mut a = ThreadSpec::new(0, t0.0).sync(1, t0.1);
    if wait {
        a = a.event(EventCode::WaitBegin);
    }
    let a = a.sync(2, t0.2);
    let b = ThreadSpec::new(1, t1.0).sync(1, t1.1).sync(2, t1.2);
    #[allow(clippy::expect_used)] // Constant programs, covered by the unit tests.
    Scenario::new(name, vec![a, b]).expect("library scenarios are well formed")
}

const TRUNCATOR: (&str, &str, &str) = ("truncator", "before-truncate", "after-truncate");
const UNPINNER: (&str, &str, &str) = ("unpinner", "before-unpin", "after-unpin");

/// Every scenario, in the order `daxvmm test` runs them.
pub fn library() -> Vec<LibraryEntry> {
    let punch = ("puncher", "before-punch", "after-punch");
    let evict = ("evictor", "before-unlink", "after-unlink");
    let umount = ("unmounter", "before-umount", "after-umount");
    let dio = ("dio-reader", "before-read", "after-read");
    let drain = ("drainer", "before-drain", "after-drain");
    let unpin_second = ThreadSpec::new(2, "second-unpinner").sync(1, "before-unpin").sync(2, "after-unpin");
    let two_pins = {
        let t0 = ThreadSpec::new(0, TRUNCATOR.0).sync(1, TRUNCATOR.1).sync(2, TRUNCATOR.2);
        let t1 = ThreadSpec::new(1, "first-unpinner").sync(1, "before-unpin").sync(2, "after-unpin");
        #[allow(clippy::expect_used)] // Constant program, covered by the unit tests.
        Scenario::new("two-pins", vec![t0, t1, unpin_second]).expect("library scenarios are well formed")
    };
    vec![
        LibraryEntry {
            scenario: two_threads("truncate-unpin", TRUNCATOR, UNPINNER, true),
            about: "ftruncate over a pinned page races the unpin; data written through the pin after truncate started must not reach a reused block",
            needs_driver: true,
        },
        LibraryEntry {
            scenario: two_threads("punch-unpin", punch, UNPINNER, true),
            about: "fallocate(PUNCH_HOLE) over a pinned page races the unpin",
            needs_driver: true,
        },
        LibraryEntry {
            scenario: two_threads("pin-munmap-truncate", TRUNCATOR, UNPINNER, true),
            about: "the pinner unmaps first, then truncate races the unpin (truncate must still wait: fixed in 6.15)",
            needs_driver: true,
        },
        LibraryEntry {
            scenario: two_threads("pmd-truncate", TRUNCATOR, UNPINNER, true),
            about: "a 2 MiB PMD-mapped folio pinned whole races truncate; its final put splits it",
            needs_driver: true,
        },
        LibraryEntry {
            scenario: two_pins,
            about: "two pins on one page, released by two threads in either order, race truncate",
            needs_driver: true,
        },
        LibraryEntry {
            scenario: two_threads("evict-live-pin", evict, UNPINNER, false),
            about: "the last unlink evicts an inode whose page is still pinned (7.2 waits uninterruptibly)",
            needs_driver: true,
        },
        LibraryEntry {
            scenario: two_threads("umount-live-pin", umount, UNPINNER, false),
            about: "unmount of the filesystem while a closed file's page is pinned (7.2 waits in the inode's eviction)",
            needs_driver: true,
        },
        LibraryEntry {
            scenario: two_threads("odirect-truncate", TRUNCATOR, dio, false),
            about: "O_DIRECT read from a non-DAX block device into a DAX mapping races truncate (xfstests generic/503 pattern, no driver pins)",
            needs_driver: false,
        },
        LibraryEntry {
            scenario: two_threads("vmsplice-munmap-truncate", TRUNCATOR, drain, false),
            about: "vmsplice holds a page reference, the mapping goes, truncate races the pipe drain (the pre-6.15 bug; runs without the driver)",
            needs_driver: false,
        },
    ]
}

/// The library entry called `name`.
pub fn find(name: &str) -> Option<LibraryEntry> {
    library().into_iter().find(|e| e.scenario.name() == name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let lib = library();
        for (i, e) in lib.iter().enumerate() {
            assert!(lib[..i].iter().all(|o| o.scenario.name() != e.scenario.name()));
            assert_eq!(find(e.scenario.name()).unwrap().scenario, e.scenario);
            assert!(!e.about.is_empty());
        }
        assert!(find("no-such-scenario").is_none());
    }

    #[test]
    fn interleaving_counts() {
        let count = |n: &str| find(n).unwrap().scenario.interleaving_count().unwrap();
        // 3 steps + 2 steps: C(5,2).
        assert_eq!(count("truncate-unpin"), 10);
        assert_eq!(count("evict-live-pin"), 6);
        // Three threads of two steps: 6! / (2! 2! 2!).
        assert_eq!(count("two-pins"), 90);
        assert_eq!(find("two-pins").unwrap().threads(), 3);
    }

    #[test]
    fn driverless_scenarios_are_the_fallback_pair() {
        let names: Vec<String> = library()
            .into_iter()
            .filter(|e| !e.needs_driver)
            .map(|e| e.scenario.name().to_string())
            .collect();
        assert_eq!(names, ["odirect-truncate", "vmsplice-munmap-truncate"]);
    }
}
