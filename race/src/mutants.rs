//! The deliberate bugs of the `mutants` guest kernel variant (guest-kernel/variants/mutants): their
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
}

/// Every mutant of the variant.
pub const MUTANTS: [Mutant; 5] = [
    Mutant {
        name: "pinned-idle",
        about: "the busy scan treats a DMA-pinned folio as idle: truncate, punch and eviction never wait for a pin",
        killers: &[ScenarioId::TruncateUnpin, ScenarioId::TruncateUnpinSleeping],
        schedule_dependent: false,
    },
    Mutant {
        name: "lost-wake",
        about: "dax_break_layout() sleeps once without checking the page again after queueing: an unpin between the busy scan and the queueing is a lost wake-up",
        killers: &[ScenarioId::TruncateUnpinBusy, ScenarioId::PunchUnpinBusy],
        schedule_dependent: true,
    },
    Mutant {
        name: "state-reset",
        about: "dax_break_layout() sets the task state again after queueing, just before sleeping: an unpin in between is a lost wake-up",
        killers: &[ScenarioId::TruncateUnpinSleeping, ScenarioId::PunchUnpinSleeping],
        schedule_dependent: true,
    },
    Mutant {
        name: "final-lost-wake",
        about: "lost-wake in dax_break_layout_final(): eviction sleeps uninterruptibly through the unpin's wake-up",
        killers: &[ScenarioId::EvictUnpinBusy],
        schedule_dependent: true,
    },
    Mutant {
        name: "final-state-reset",
        about: "state-reset in dax_break_layout_final()",
        killers: &[ScenarioId::EvictUnpinSleeping],
        schedule_dependent: true,
    },
];

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
