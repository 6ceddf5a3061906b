//! The deliberate bugs of daxvmm's guest kernel (its series' last patch, guest-kernel/patches/0008): their
//! names (`daxvmm test --mutant NAME` puts `daxvmm_mutant=NAME` on the guest kernel's command line),
//! what each breaks, and the library scenarios whose forced schedules must kill it. The kernel patch's
//! message and this table say the same; the integration tests (tests/tests/mutants.rs) check each claim
//! on the built kernel.

use daxvmm_scenarios::ScenarioId;

/// One deliberate bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mutant {
    /// `daxvmm_mutant=` value.
    pub name: &'static str,
    /// What it breaks, one line.
    pub about: &'static str,
    /// Scenarios whose forced schedules kill it (every run of them fails with it selected).
    pub killers: &'static [ScenarioId],
    /// Whether only some orders of events show it. A schedule-independent mutant is a control: the
    /// sequential refcount checks must catch it too.
    pub schedule_dependent: bool,
    /// Part of the finding a kill of it reports: how the bug shows.
    pub shows: &'static str,
}

/// Every mutant of the kernel patch.
pub const MUTANTS: [Mutant; 11] = [
    Mutant {
        name: "pinned-idle",
        about: "the busy scan treats a DMA-pinned folio as idle: truncate, punch and eviction never wait for a pin",
        killers: &[ScenarioId::TruncateUnpin, ScenarioId::TruncateUnpinSleeping],
        schedule_dependent: false,
        shows: ORDERING,
    },
    Mutant {
        name: "lost-wake",
        about: "dax_break_layout() sleeps once without checking the page again after queueing: an unpin between the busy scan and the queueing is a lost wake-up",
        killers: &[
            ScenarioId::TruncateUnpinBusy,
            ScenarioId::PunchUnpinBusy,
            ScenarioId::TruncateTwoPages,
            ScenarioId::TruncateLatePin,
            ScenarioId::TruncateLatePinAbove,
            ScenarioId::PunchPmdSubpage,
            ScenarioId::TruncateVmspliceBusy,
            ScenarioId::PunchVmspliceBusy,
            ScenarioId::TruncateUnpinHeld,
            ScenarioId::TruncateIouringBusy,
            ScenarioId::PunchIouringBusy,
            ScenarioId::TruncateOdirectBusy,
            ScenarioId::PunchOdirectBusy,
            ScenarioId::TruncatePoisonMapped,
            ScenarioId::TruncatePoisonBusy,
        ],
        schedule_dependent: true,
        shows: HANG,
    },
    Mutant {
        name: "state-reset",
        about: "dax_break_layout() sets the task state again after queueing, just before sleeping: an unpin in between is a lost wake-up",
        killers: &[
            ScenarioId::TruncateUnpinSleeping,
            ScenarioId::PunchUnpinSleeping,
            ScenarioId::TruncateTwoPages,
            ScenarioId::TruncateUnpinStraddle,
        ],
        schedule_dependent: true,
        shows: HANG,
    },
    Mutant {
        name: "final-lost-wake",
        about: "lost-wake in dax_break_layout_final(): eviction sleeps uninterruptibly through the unpin's wake-up",
        killers: &[ScenarioId::EvictUnpinBusy, ScenarioId::EvictTwoPages],
        schedule_dependent: true,
        shows: HANG,
    },
    Mutant {
        name: "final-state-reset",
        about: "state-reset in dax_break_layout_final()",
        killers: &[ScenarioId::EvictUnpinSleeping, ScenarioId::EvictTwoPages],
        schedule_dependent: true,
        shows: HANG,
    },
    Mutant {
        name: "no-rescan",
        about: "dax_break_layout() does not scan again after a wait: with two pinned pages, releasing the one it waits on first lets truncate free the other under its pin (or a page pinned during the wait); a folio mapped with a PMD during the wait and moved by mremap is left mapped, and truncate trips the kernel's rmap checks",
        killers: &[
            ScenarioId::TruncateTwoPages,
            ScenarioId::TruncateLatePin,
            ScenarioId::TruncateLatePinAbove,
            ScenarioId::TruncateMremapPmd,
        ],
        schedule_dependent: true,
        shows: ORDERING,
    },
    Mutant {
        name: "final-no-rescan",
        about: "no-rescan in dax_break_layout_final(): eviction frees the second pinned page's block",
        killers: &[ScenarioId::EvictTwoPages],
        schedule_dependent: true,
        shows: ORDERING,
    },
    Mutant {
        name: "resume-scan",
        about: "after a wait, dax_break_layout() scans again from the page it waited for: a lower page pinned during the wait (the layout lock is dropped while it sleeps) is freed under its pin",
        killers: &[ScenarioId::TruncateLatePin],
        schedule_dependent: true,
        shows: ORDERING,
    },
    Mutant {
        name: "scan-once",
        about: "dax_break_layout() finds every busy page in one pass and waits for those only: a page pinned during a wait, below or above, is freed under its pin, and a folio mapped during the wait (and moved by mremap) is left mapped",
        killers: &[ScenarioId::TruncateLatePin, ScenarioId::TruncateLatePinAbove, ScenarioId::TruncateMremapPmd],
        schedule_dependent: true,
        shows: ORDERING,
    },
    Mutant {
        name: "early-wake-check",
        about: "an unpin decides before it drops the pin whether the free must wake waiters (mm/gup.c, mm/memremap.c): a truncate that queues itself on the page in between sleeps through its only wake-up",
        killers: &[ScenarioId::TruncateUnpinStraddle],
        schedule_dependent: true,
        shows: HANG,
    },
    // Shows only when a signal ends the wait, but the sequential checks include one (a timer fires
    // 250 ms into truncate's wait), so it is a control: both its forced schedule and those checks
    // catch it.
    Mutant {
        name: "interrupted-idle",
        about: "a signal that ends dax_break_layout()'s wait is taken as the page going idle: truncate goes on over the pinned page instead of failing with EINTR",
        killers: &[ScenarioId::TruncateSignal],
        schedule_dependent: false,
        shows: ORDERING,
    },
];

/// What the guest's hang watchdog reports (images/refcount-test/src/race/watchdog.rs).
const HANG: &str = "had not returned 3 s after the last reference to the page was released";
/// What the oracle's ordering check reports (`crate::oracle::check_order`).
const ORDERING: &str = "ordering: truncate or eviction returned";

impl Mutant {
    /// Whether a kill shows as a hang (a lost wake-up: the operation returns late, never early).
    pub fn hangs(&self) -> bool {
        self.shows == HANG
    }
}

/// The mutant called `name`.
pub fn find(name: &str) -> Option<&'static Mutant> {
    MUTANTS.iter().find(|m| m.name == name)
}

/// The names, comma-separated, for error messages.
pub fn names() -> String {
    MUTANTS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_killers_are_forced_library_scenarios() {
        for (i, m) in MUTANTS.iter().enumerate() {
            assert!(MUTANTS[..i].iter().all(|o| o.name != m.name));
            assert_eq!(find(m.name), Some(m));
            assert!(!m.killers.is_empty(), "{}", m.name);
            for &k in m.killers {
                let e = crate::library::entry(k);
                // A schedule-dependent mutant needs a forced schedule to show; a control must show in a
                // plain scenario too.
                assert!(!m.schedule_dependent || !e.schedules.is_empty(), "{}: {k}", m.name);
            }
        }
        assert!(find("none").is_none() && find("").is_none());
        assert!(names().starts_with("pinned-idle, lost-wake"));
    }
}
