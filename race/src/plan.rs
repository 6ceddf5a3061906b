//! Which runs a `daxvmm test` session makes: for each filesystem and scenario, every schedule of a small
//! scenario (or seeded samples of a large one), numbered in the order the guest program runs them, and
//! the `--plan` argument that tells the guest program the same order.

use daxvmm_devices::fault::Schedule;

use crate::library::LibraryEntry;

/// One run: a scenario on a filesystem, under one schedule (none in baseline mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRun {
    /// Library scenario name.
    pub scenario: String,
    /// ext4 or xfs.
    pub fs: String,
    /// What the fault injector enforces; `None`: nothing (the sleep-based baseline).
    pub schedule: Option<Schedule>,
    /// The seed the schedule was sampled from (`None`: enumerated, or baseline).
    pub seed: Option<u64>,
}

/// How to choose schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Every schedule of scenarios with at most `limit`, else `samples` seeded samples from `seed` on.
    Forced {
        /// Enumeration limit.
        limit: usize,
        /// Samples per larger scenario.
        samples: usize,
        /// First seed.
        seed: u64,
    },
    /// `runs` unscheduled runs per scenario (the guest sleeps at random instead).
    Baseline {
        /// Runs per scenario and filesystem.
        runs: usize,
    },
}

/// The runs, in guest order.
pub fn build(entries: &[LibraryEntry], filesystems: &[String], choice: Choice) -> Vec<PlannedRun> {
    let mut out = Vec::new();
    for fs in filesystems {
        for e in entries {
            let run = |schedule, seed| PlannedRun {
                scenario: e.scenario.name().to_string(),
                fs: fs.clone(),
                schedule,
                seed,
            };
            match choice {
                Choice::Baseline { runs } => out.extend((0..runs).map(|_| run(None, None))),
                Choice::Forced { limit, samples, seed } => match e.forcible(limit) {
                    Some(all) => out.extend(all.into_iter().map(|s| run(Some(s), None))),
                    None => {
                        let mut seen: Vec<Schedule> = Vec::new();
                        for i in 0..samples as u64 {
                            let s = e.scenario.sample(seed.wrapping_add(i));
                            if !seen.contains(&s) {
                                seen.push(s.clone());
                                out.push(run(Some(s), Some(seed.wrapping_add(i))));
                            }
                        }
                    }
                },
            }
        }
    }
    out
}

/// The guest program's `--plan`: consecutive runs of one scenario on one filesystem as `FS:NAME:COUNT`.
pub fn guest_plan(runs: &[PlannedRun]) -> String {
    let mut items: Vec<(String, String, usize)> = Vec::new();
    for r in runs {
        match items.last_mut() {
            Some((fs, name, n)) if *fs == r.fs && *name == r.scenario => *n += 1,
            _ => items.push((r.fs.clone(), r.scenario.clone(), 1)),
        }
    }
    items.iter().map(|(fs, name, n)| format!("{fs}:{name}:{n}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::library::{find as find_scenario, library};

    fn fss() -> Vec<String> {
        vec!["ext4".into(), "xfs".into()]
    }

    #[test]
    fn enumerates_small_scenarios_and_samples_large_ones() {
        let entries = vec![find_scenario("truncate-unpin").unwrap(), find_scenario("two-pins").unwrap()];
        let runs = build(&entries, &fss(), Choice::Forced { limit: 24, samples: 5, seed: 9 });
        let count = |fs: &str, name: &str| runs.iter().filter(|r| r.fs == fs && r.scenario == name).count();
        // 10 interleavings, of which the 4 that put the wait-begin event after the unpinner's step are
        // left out: that event comes while the truncator runs alone after its release.
        assert_eq!(count("ext4", "truncate-unpin"), 6);
        assert!(runs.iter().all(|r| !r.schedule.as_ref().unwrap().leaves_order_to_timing()));
        assert!((1..=5).contains(&count("xfs", "two-pins")));
        assert!(runs.iter().filter(|r| r.scenario == "truncate-unpin").all(|r| r.seed.is_none()));
        assert!(runs.iter().filter(|r| r.scenario == "two-pins").all(|r| r.seed.is_some()));
        // Each schedule belongs to its scenario; the sampled ones are reproducible from their seed.
        for r in &runs {
            let e = find_scenario(&r.scenario).unwrap();
            e.scenario.check(r.schedule.as_ref().unwrap()).unwrap();
            if let Some(seed) = r.seed {
                assert_eq!(Some(e.scenario.sample(seed)), r.schedule);
            }
        }
        assert_eq!(
            guest_plan(&runs),
            format!(
                "ext4:truncate-unpin:6,ext4:two-pins:{},xfs:truncate-unpin:6,xfs:two-pins:{}",
                count("ext4", "two-pins"),
                count("xfs", "two-pins")
            )
        );
    }

    #[test]
    fn baseline_runs_have_no_schedule() {
        let runs = build(&library()[..1], &fss()[..1], Choice::Baseline { runs: 3 });
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|r| r.schedule.is_none()));
        assert_eq!(guest_plan(&runs), "ext4:truncate-unpin:3");
    }
}
