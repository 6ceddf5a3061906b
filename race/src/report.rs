//! Reports of a `daxvmm test` session: the summary table for people (scenario, filesystem, interleavings
//! tried and seen, blocked, skipped, violations, stale-write windows), TAP and JUnit XML for CI, one test
//! point per run.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::verdict::RunResult;

/// One row of the table: a scenario on a filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Filesystem.
    pub fs: String,
    /// Runs made (each under its own schedule, or unscheduled in baseline mode).
    pub tried: usize,
    /// Distinct interleavings the runs really took.
    pub observed: usize,
    /// Runs in which the host held a thread to the bound (the kernel blocked it).
    pub blocked: usize,
    /// Runs skipped.
    pub skipped: usize,
    /// Runs with a violation.
    pub violations: usize,
    /// Runs in which a new file got a block still pinned: the stale-write window was open.
    pub stale_window: usize,
}

/// Rows in plan order.
pub fn rows(results: &[RunResult]) -> Vec<Row> {
    let mut rows: Vec<(Row, BTreeSet<String>)> = Vec::new();
    for r in results {
        let idx = match rows
            .iter()
            .position(|(row, _)| row.scenario == r.planned.scenario && row.fs == r.planned.fs)
        {
            Some(i) => i,
            None => {
                let row = Row {
                    scenario: r.planned.scenario.clone(),
                    fs: r.planned.fs.clone(),
                    tried: 0,
                    observed: 0,
                    blocked: 0,
                    skipped: 0,
                    violations: 0,
                    stale_window: 0,
                };
                rows.push((row, BTreeSet::new()));
                rows.len() - 1
            }
        };
        let (row, seen) = &mut rows[idx];
        if r.skipped.is_some() {
            row.skipped += 1;
        } else {
            row.tried += 1;
        }
        if let Some(o) = &r.observed {
            seen.insert(o.to_string());
        }
        row.blocked += usize::from(r.summary.timeouts > 0);
        row.violations += usize::from(r.failed());
        row.stale_window += usize::from(!r.stale_window.is_empty());
    }
    rows.into_iter()
        .map(|(mut row, seen)| {
            row.observed = seen.len();
            row
        })
        .collect()
}

/// The table, with a header and a total line.
pub fn table(rows: &[Row]) -> String {
    let w = rows.iter().map(|r| r.scenario.len()).max().unwrap_or(8).max(8);
    let mut s = format!(
        "{:<w$}  {:<4}  {:>5}  {:>8}  {:>7}  {:>7}  {:>10}  {:>12}\n",
        "scenario", "fs", "tried", "observed", "blocked", "skipped", "violations", "stale-window"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<w$}  {:<4}  {:>5}  {:>8}  {:>7}  {:>7}  {:>10}  {:>12}",
            r.scenario, r.fs, r.tried, r.observed, r.blocked, r.skipped, r.violations, r.stale_window
        );
    }
    let sum = |f: fn(&Row) -> usize| rows.iter().map(f).sum::<usize>();
    let _ = writeln!(
        s,
        "{:<w$}  {:<4}  {:>5}  {:>8}  {:>7}  {:>7}  {:>10}  {:>12}",
        "total",
        "",
        sum(|r| r.tried),
        sum(|r| r.observed),
        sum(|r| r.blocked),
        sum(|r| r.skipped),
        sum(|r| r.violations),
        sum(|r| r.stale_window)
    );
    s
}

fn run_name(r: &RunResult) -> String {
    let schedule = r.planned.schedule.as_ref().map_or("unscheduled".to_string(), |s| s.to_string());
    format!("{} {} run {} [{schedule}]", r.planned.scenario, r.planned.fs, r.run)
}

/// TAP version 13: one point per run; skips as `# SKIP`, findings as YAML-ish diagnostics.
pub fn tap(results: &[RunResult]) -> String {
    let mut s = format!("TAP version 13\n1..{}\n", results.len());
    for (i, r) in results.iter().enumerate() {
        let n = i + 1;
        match (&r.skipped, r.failed()) {
            (Some(why), false) => {
                let _ = writeln!(s, "ok {n} - {} # SKIP {why}", run_name(r));
            }
            (_, false) => {
                let _ = writeln!(s, "ok {n} - {}", run_name(r));
                for note in &r.notes {
                    let _ = writeln!(s, "# {note}");
                }
            }
            (_, true) => {
                let _ = writeln!(s, "not ok {n} - {}", run_name(r));
                s.push_str("  ---\n  findings:\n");
                for f in &r.findings {
                    let _ = writeln!(s, "    - {:?}", f.to_string());
                }
                s.push_str("  ...\n");
            }
        }
    }
    s
}

fn xml_escape(s: &str) -> String {
    s.chars().filter(|&c| c == '\n' || c == '\t' || !c.is_control()).fold(
        String::with_capacity(s.len()),
        |mut o, c| {
            match c {
                '&' => o.push_str("&amp;"),
                '<' => o.push_str("&lt;"),
                '>' => o.push_str("&gt;"),
                '"' => o.push_str("&quot;"),
                '\'' => o.push_str("&apos;"),
                c => o.push(c),
            }
            o
        },
    )
}

/// JUnit XML: one testsuite per scenario and filesystem, one testcase per run.
pub fn junit(results: &[RunResult]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let failures = results.iter().filter(|r| r.failed()).count();
    let _ =
        writeln!(s, "<testsuites name=\"daxvmm test\" tests=\"{}\" failures=\"{failures}\">", results.len());
    for row in rows(results) {
        let mine: Vec<&RunResult> =
            results.iter().filter(|r| r.planned.scenario == row.scenario && r.planned.fs == row.fs).collect();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}.{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
            xml_escape(&row.scenario),
            row.fs,
            mine.len(),
            row.violations,
            row.skipped
        );
        for r in mine {
            let _ = write!(
                s,
                "    <testcase classname=\"{}.{}\" name=\"{}\">",
                xml_escape(&row.scenario),
                row.fs,
                xml_escape(&run_name(r))
            );
            if r.failed() {
                let text: Vec<String> = r.findings.iter().map(ToString::to_string).collect();
                let _ = write!(
                    s,
                    "<failure message=\"{}\">{}</failure><system-out>{}</system-out>",
                    xml_escape(&text[0]),
                    xml_escape(&text.join("\n")),
                    xml_escape(&r.log)
                );
            } else if let Some(why) = &r.skipped {
                let _ = write!(s, "<skipped message=\"{}\"/>", xml_escape(why));
            }
            s.push_str("</testcase>\n");
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::oracle::{Finding, FindingKind, RunSummary};
    use crate::plan::PlannedRun;

    fn result(
        run: u64,
        fs: &str,
        schedule: &str,
        findings: Vec<Finding>,
        skipped: Option<&str>,
    ) -> RunResult {
        RunResult {
            run,
            planned: PlannedRun {
                scenario: "truncate-unpin".into(),
                fs: fs.into(),
                schedule: Some(schedule.parse().unwrap()),
                seed: None,
            },
            findings,
            skipped: skipped.map(String::from),
            summary: RunSummary { timeouts: usize::from(run == 1), ..Default::default() },
            observed: Some(schedule.parse().unwrap()),
            notes: vec![],
            log: "console <line> & more\n".into(),
            fault_log: vec![],
            kernel_order: vec![],
            stale_window: vec![],
        }
    }

    fn sample() -> Vec<RunResult> {
        vec![
            result(0, "ext4", "0.s1 1.s1 0.s2 1.s2", vec![], None),
            result(
                1,
                "ext4",
                "1.s1 0.s1 0.s2 1.s2",
                vec![Finding::new(FindingKind::Ordering, "truncate <returned> early")],
                None,
            ),
            result(2, "xfs", "0.s1 1.s1 0.s2 1.s2", vec![], Some("needs 3 CPUs")),
        ]
    }

    #[test]
    fn rows_and_table() {
        let rows = rows(&sample());
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].tried, rows[0].observed, rows[0].blocked, rows[0].violations), (2, 2, 1, 1));
        assert_eq!((rows[1].tried, rows[1].skipped), (0, 1));
        let t = table(&rows);
        assert!(t.lines().next().unwrap().starts_with("scenario"));
        assert!(t.lines().last().unwrap().starts_with("total"));
        assert_eq!(t.lines().count(), 4);
    }

    #[test]
    fn tap_marks_failures_and_skips() {
        let t = tap(&sample());
        assert!(t.starts_with("TAP version 13\n1..3\n"));
        assert!(t.contains("ok 1 - truncate-unpin ext4 run 0 [0.s1 1.s1 0.s2 1.s2]\n"));
        assert!(t.contains("not ok 2 - truncate-unpin ext4 run 1"));
        assert!(t.contains("ordering: truncate <returned> early"));
        assert!(t.contains("ok 3 - truncate-unpin xfs run 2 [0.s1 1.s1 0.s2 1.s2] # SKIP needs 3 CPUs"));
    }

    #[test]
    fn junit_is_escaped_and_counts() {
        let x = junit(&sample());
        assert!(x.contains("<testsuites name=\"daxvmm test\" tests=\"3\" failures=\"1\">"));
        assert!(
            x.contains("<testsuite name=\"truncate-unpin.ext4\" tests=\"2\" failures=\"1\" skipped=\"0\">")
        );
        assert!(x.contains("message=\"ordering: truncate &lt;returned&gt; early\""));
        assert!(x.contains("console &lt;line&gt; &amp; more"));
        assert!(x.contains("<skipped message=\"needs 3 CPUs\"/>"));
        assert_eq!(x.matches("<testcase ").count(), 3);
        assert_eq!(x.matches("</testcase>").count(), 3);
    }
}
