//! The race benchmark (`bench race`, scripts/bench-race.sh): for every mutant of the guest kernel
//! (`daxvmm_race::MUTANTS`), in one run on one host (one test host VM when nested), on ext4:
//! - `forced`: `daxvmm test --mutant M` over the mutant's killing scenarios (their forced schedules);
//! - `baseline`: the same scenarios with `--sleeps --runs N`: no schedule and no kernel hold points
//!   (the guest does not tag its threads), each guest thread sleeps a random 0-2 ms before each sync
//!   point, as a sleep-based race test would;
//! - `sequential`: daxvmm-refcount-test's sequential checks with the mutant selected.
//!
//! The table says, per mutant, whether each mode killed it (runs with a violation, of runs) and in how
//! many seconds of runs (boot excluded), and how many sequential checks failed.

use std::fmt::Write as _;

use daxvmm_race::{Mutant, MUTANTS};

use crate::bench::{place_note, value_after, Paths};
use crate::case::shell_quote;
use crate::host::Where;

/// The batch: three cases per mutant (`forced-M`, `baseline-M`, `seq-M`), reports under `out`.
pub fn batch(baseline_runs: usize, out: &str, p: &Paths) -> String {
    let (d, k, i) = (shell_quote(&p.daxvmm), shell_quote(&p.kernel), shell_quote(&p.initrd));
    let mut b = String::new();
    for m in &MUTANTS {
        let scenarios: Vec<&str> = m.killers.iter().map(|s| s.name()).collect();
        let test = format!(
            "{d} test --kernel {k} --initrd {i} --scenario {} --fs ext4 --mutant {} --timeout 20m",
            scenarios.join(","),
            m.name
        );
        let o = |mode: &str| shell_quote(&format!("{out}/{mode}-{}", m.name));
        let _ = writeln!(b, "forced-{}\t{test} --out {}", m.name, o("forced"));
        let _ = writeln!(
            b,
            "baseline-{}\t{test} --out {} --sleeps --runs {baseline_runs}",
            m.name,
            o("baseline")
        );
        let cmdline = shell_quote(&format!("quiet daxvmm_mutant={} -- /tests/refcount.sh ext4", m.name));
        let _ = writeln!(
            b,
            "seq-{}\t{d} --kernel {k} --initrd {i} --cpus 2 --mem 512M --pmem 1G --cmdline {cmdline} --timeout 240s",
            m.name
        );
    }
    b
}

/// What one `daxvmm test` of the benchmark did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kills {
    /// Runs.
    pub runs: usize,
    /// Runs with a violation.
    pub killed: usize,
    /// Seconds of runs, boot excluded.
    pub secs: f64,
}

impl Kills {
    /// Reads `daxvmm test`'s table total row and closing line; `None` when either is missing or the
    /// guest did not select `mutant` (then nothing was measured).
    pub fn parse(output: &str, mutant: &str) -> Option<Kills> {
        if !output.contains(&format!("mutant {mutant} selected")) {
            return None;
        }
        let total: Vec<usize> = output.lines().find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 7 && w[0] == "total").then(|| w[1..6].iter().filter_map(|x| x.parse().ok()).collect())
        })?;
        let secs = output
            .lines()
            .filter(|l| l.starts_with("daxvmm test: "))
            .filter_map(|l| value_after(l, " with the boot, ", |c| c == ' ')?.parse().ok())
            .next_back()?;
        match total[..] {
            [runs, _, _, _, killed] => Some(Kills { runs, killed, secs }),
            _ => None,
        }
    }

    fn cell(k: Option<Kills>) -> String {
        match k {
            Some(k) => format!(
                "{:<3} {:>3}/{:<3} {:>6.1} s",
                if k.killed > 0 { "yes" } else { "no" },
                k.killed,
                k.runs,
                k.secs
            ),
            None => format!("{:<19}", "no result"),
        }
    }
}

/// The sequential checks: (failed, planned), from the TAP output; `None` without a plan line.
pub fn sequential(output: &str) -> Option<(usize, usize)> {
    let plan = output.lines().find_map(|l| l.trim().strip_prefix("1..")?.parse().ok())?;
    let failed = output.lines().filter(|l| l.trim_start().starts_with("not ok ")).count();
    Some((failed, plan))
}

/// One mutant's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The mutant.
    pub mutant: &'static Mutant,
    /// Forced schedules.
    pub forced: Option<Kills>,
    /// Sleep-based baseline.
    pub baseline: Option<Kills>,
    /// Sequential checks: (failed, planned).
    pub sequential: Option<(usize, usize)>,
}

/// The benchmark's report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Where it ran.
    pub place: Where,
    /// A row per mutant.
    pub rows: Vec<Row>,
}

impl Report {
    /// Reads every case's output; `output(name)` gives a case's.
    pub fn parse<'a>(place: Where, output: impl Fn(&str) -> &'a str) -> Report {
        let rows = MUTANTS
            .iter()
            .map(|m| Row {
                mutant: m,
                forced: Kills::parse(output(&format!("forced-{}", m.name)), m.name),
                baseline: Kills::parse(output(&format!("baseline-{}", m.name)), m.name),
                sequential: sequential(output(&format!("seq-{}", m.name))),
            })
            .collect();
        Report { place, rows }
    }

    /// Whether every case gave its figures.
    pub fn complete(&self) -> bool {
        self.rows.iter().all(|r| r.forced.is_some() && r.baseline.is_some() && r.sequential.is_some())
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "\nMutant kills on ext4: forced schedules vs the sleep-based baseline vs the sequential checks\n",
        );
        let _ = writeln!(
            s,
            "all measured in the same run ({}); seconds are the runs alone, boot excluded",
            place_note(self.place, "one test host VM, QEMU TCG + nested SVM")
        );
        let killers = |m: &Mutant| m.killers.iter().map(|k| k.name()).collect::<Vec<_>>().join(",");
        let w = self.rows.iter().map(|r| killers(r.mutant).len()).max().unwrap_or(0).max(17);
        let _ = writeln!(
            s,
            "{:<18} {:<10} {:<w$} {:<19} {:<19} sequential checks",
            "mutant", "schedule", "killing scenarios", "forced: killed", "baseline: killed"
        );
        for r in &self.rows {
            let m = r.mutant;
            let seq = match r.sequential {
                Some((0, n)) => format!("missed (0 of {n} failed)"),
                Some((f, n)) => format!("caught ({f} of {n} failed)"),
                None => "no result".into(),
            };
            let _ = writeln!(
                s,
                "{:<18} {:<10} {:<w$} {} {} {seq}",
                m.name,
                if m.schedule_dependent { "dependent" } else { "control" },
                killers(m),
                Kills::cell(r.forced),
                Kills::cell(r.baseline)
            );
        }
        let dependent: Vec<&Row> = self.rows.iter().filter(|r| r.mutant.schedule_dependent).collect();
        let count = |f: fn(&Row) -> bool| dependent.iter().filter(|r| f(r)).count();
        let _ = writeln!(
            s,
            "schedule-dependent mutants killed: forced {} of {n}, baseline {} of {n}, sequential checks {} of {n}",
            count(|r| r.forced.is_some_and(|k| k.killed > 0)),
            count(|r| r.baseline.is_some_and(|k| k.killed > 0)),
            count(|r| r.sequential.is_some_and(|(f, _)| f > 0)),
            n = dependent.len()
        );
        // A miss counts only if the baseline had at least the forced runs' time; a baseline that
        // killed may stop early (the hang it found ends the boot's plan).
        let longer = self.rows.iter().all(|r| match (r.forced, r.baseline) {
            (Some(f), Some(b)) => b.killed > 0 || b.secs >= f.secs,
            _ => false,
        });
        let _ = writeln!(
            s,
            "the baseline ran at least as many seconds as the forced runs for every mutant it missed: {}",
            if longer { "yes" } else { "no" }
        );
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FORCED: &str = "\
guest kernel 7.2.12+ (config sha256 939cf80007ef), driver bound, mutant lost-wake selected
scenario                 fs    transport  tried  observed  blocked  skipped  violations  stale-window
truncate-unpin-busy      ext4  nfit           1         1        0        0           1             0
total                                         1         1        0        0           1             0
daxvmm test: 1 runs in 12.3 s with the boot, 3.4 s of runs (17 runs/minute), 1 with violations, 0 skipped; guest boots: 1
";

    #[test]
    fn the_batch_runs_three_cases_per_mutant() {
        let b = batch(30, "/tmp/r", &Paths::nested(""));
        assert_eq!(b.lines().count(), 3 * MUTANTS.len());
        // Its killing scenarios, in the mutant table's order.
        let killers: Vec<&str> =
            daxvmm_race::find_mutant("lost-wake").unwrap().killers.iter().map(|k| k.name()).collect();
        assert!(killers.starts_with(&["truncate-unpin-busy", "punch-unpin-busy"]), "{killers:?}");
        let forced = format!(
            "forced-lost-wake\t/bin/daxvmm test --kernel /guest/bzImage --initrd /guest/initrd.cpio.lz4 --scenario {} --fs ext4 --mutant lost-wake --timeout 20m --out /tmp/r/forced-lost-wake\n",
            killers.join(",")
        );
        assert!(b.contains(&forced), "{b}");
        assert!(b.contains("--out /tmp/r/baseline-lost-wake --sleeps --runs 30\n"), "{b}");
        assert!(b.contains("seq-lost-wake\t/bin/daxvmm --kernel /guest/bzImage --initrd /guest/initrd.cpio.lz4 --cpus 2 --mem 512M --pmem 1G --cmdline 'quiet daxvmm_mutant=lost-wake -- /tests/refcount.sh ext4' --timeout 240s\n"), "{b}");
    }

    #[test]
    fn kills_and_sequential_results_are_read() {
        assert_eq!(Kills::parse(FORCED, "lost-wake"), Some(Kills { runs: 1, killed: 1, secs: 3.4 }));
        assert_eq!(Kills::parse(FORCED, "state-reset"), None, "another mutant selected: no figures");
        assert_eq!(Kills::parse("mutant lost-wake selected\n", "lost-wake"), None);
        assert_eq!(sequential("TAP version 13\n1..30\nok 1 - a\nnot ok 2 - b\n"), Some((1, 30)));
        assert_eq!(sequential("no plan\n"), None);
    }

    #[test]
    fn the_table_counts_the_kills() {
        let forced = FORCED.to_string();
        let baseline = FORCED.replace("1           1\ndaxvmm", "30           0\ndaxvmm").replace(
            "total                                         1         1        0        0           1             0",
            "total                                        30        30        0        0           0             0",
        );
        let out = |name: &str| -> &str {
            if name == "forced-lost-wake" {
                &forced
            } else if name == "baseline-lost-wake" {
                &baseline
            } else if name == "seq-lost-wake" {
                "1..30\nok 1 - x\n"
            } else {
                ""
            }
        };
        let r = Report::parse(Where::Nested, out);
        assert!(!r.complete());
        let t = r.table();
        let line = t.lines().find(|l| l.starts_with("lost-wake")).unwrap();
        assert!(line.contains("yes   1/1      3.4 s no    0/30     3.4 s missed (0 of 30 failed)"), "{t}");
        let n = MUTANTS.iter().filter(|m| m.schedule_dependent).count();
        assert!(
            t.contains(&format!("forced 1 of {n}, baseline 0 of {n}, sequential checks 0 of {n}")),
            "{t}"
        );
        assert!(t.contains("nested: one test host VM"), "{t}");
        assert!(
            t.contains("as many seconds as the forced runs for every mutant it missed: no"),
            "rows without figures: {t}"
        );
    }

    #[test]
    fn a_baseline_that_killed_in_less_time_is_not_short_of_time() {
        // One `daxvmm test` output: 1 run of mutant `m`, killed or not, in `secs` seconds of runs.
        let text = |m: &str, killed: bool, secs: &str| {
            let t = FORCED.replace("lost-wake", m).replace("3.4 s", secs);
            if killed {
                t
            } else {
                t.replace("1           1             0\ntotal", "1           0             0\ntotal").replace(
                    "0        0           1             0\ndaxvmm",
                    "0        0           0             0\ndaxvmm",
                )
            }
        };
        // Forced kills in 3.4 s; the baseline kills lost-wake in 1.0 s (or misses it, `lost_wake_killed`)
        // and misses the others in 9.9 s.
        let table = |lost_wake_killed: bool| {
            let texts: Vec<(String, String)> = MUTANTS
                .iter()
                .flat_map(|m| {
                    let baseline = if m.name == "lost-wake" {
                        text(m.name, lost_wake_killed, "1.0 s")
                    } else {
                        text(m.name, false, "9.9 s")
                    };
                    [
                        (format!("forced-{}", m.name), text(m.name, true, "3.4 s")),
                        (format!("baseline-{}", m.name), baseline),
                        (format!("seq-{}", m.name), "1..30\nok 1 - x\n".to_string()),
                    ]
                })
                .collect();
            let out = |name: &str| -> &str {
                texts.iter().find(|(n, _)| n == name).map_or("", |(_, t)| t.as_str())
            };
            Report::parse(Where::Nested, out).table()
        };
        let n = MUTANTS.iter().filter(|m| m.schedule_dependent).count();
        let t = table(true);
        assert!(t.contains(&format!("baseline 1 of {n}")), "{t}");
        assert!(t.contains("for every mutant it missed: yes"), "{t}");
        // Missing lost-wake in 1.0 s of runs is too little time to count.
        let t = table(false);
        assert!(t.contains(&format!("baseline 0 of {n}")), "{t}");
        assert!(t.contains("for every mutant it missed: no"), "{t}");
    }
}
