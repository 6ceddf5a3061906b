//! Reports of a `daxvmm test` session: the summary table for people (scenario, filesystem, transport,
//! interleavings tried and seen, blocked, skipped, violations, stale-write windows), TAP and JUnit XML for
//! CI, one test point per run. When the session booted more than one transport, TAP and JUnit names carry
//! the transport too, so the same scenario on the same filesystem has one name per transport; a
//! one-transport session keeps the names it always had, which CI history and scripts match on.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::guest::Transport;
use crate::verdict::RunResult;

/// One row of the table: a scenario on a filesystem on a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Filesystem.
    pub fs: String,
    /// What the filesystem's NVDIMM was.
    pub transport: Transport,
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

/// Whether `r` is one of `row`'s runs.
fn of_row(row: &Row, r: &RunResult) -> bool {
    row.scenario == r.planned.scenario && row.fs == r.planned.fs && row.transport == r.transport
}

/// Rows in plan order (transports in the order they ran).
pub fn rows(results: &[RunResult]) -> Vec<Row> {
    let mut rows: Vec<(Row, BTreeSet<String>)> = Vec::new();
    for r in results {
        let idx = match rows.iter().position(|(row, _)| of_row(row, r)) {
            Some(i) => i,
            None => {
                let row = Row {
                    scenario: r.planned.scenario.clone(),
                    fs: r.planned.fs.clone(),
                    transport: r.transport,
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
        "{:<w$}  {:<4}  {:<9}  {:>5}  {:>8}  {:>7}  {:>7}  {:>10}  {:>12}\n",
        "scenario",
        "fs",
        "transport",
        "tried",
        "observed",
        "blocked",
        "skipped",
        "violations",
        "stale-window"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<w$}  {:<4}  {:<9}  {:>5}  {:>8}  {:>7}  {:>7}  {:>10}  {:>12}",
            r.scenario,
            r.fs,
            r.transport.name(),
            r.tried,
            r.observed,
            r.blocked,
            r.skipped,
            r.violations,
            r.stale_window
        );
    }
    let sum = |f: fn(&Row) -> usize| rows.iter().map(f).sum::<usize>();
    // The total line keeps its seven words (bench_race.rs reads them).
    let _ = writeln!(
        s,
        "{:<w$}  {:<4}  {:<9}  {:>5}  {:>8}  {:>7}  {:>7}  {:>10}  {:>12}",
        "total",
        "",
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

/// Whether the results come from more than one transport, so that names must say which.
fn several_transports(results: &[RunResult]) -> bool {
    results.first().is_some_and(|first| results.iter().any(|r| r.transport != first.transport))
}

/// "scenario fs run N [schedule]", with the transport after the filesystem when `named`.
fn run_name(r: &RunResult, named: bool) -> String {
    let schedule = r.planned.schedule.as_ref().map_or("unscheduled".to_string(), |s| s.to_string());
    let transport = if named { format!(" {}", r.transport) } else { String::new() };
    format!("{} {}{transport} run {} [{schedule}]", r.planned.scenario, r.planned.fs, r.run)
}

/// TAP version 13: one point per run; skips as `# SKIP`, findings as YAML-ish diagnostics.
pub fn tap(results: &[RunResult]) -> String {
    let named = several_transports(results);
    let run_name = |r| run_name(r, named);
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
                    let _ = writeln!(s, "    - {}", yaml_quote(&f.to_string()));
                }
                s.push_str("  ...\n");
            }
        }
    }
    s
}

/// A YAML double-quoted scalar: findings may quote guest console text, control characters included,
/// and TAP consumers parse the diagnostics block as YAML.
fn yaml_quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{:04x}", u32::from(c));
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
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

/// JUnit XML: one testsuite per scenario and filesystem (and transport, when more than one ran), one
/// testcase per run.
pub fn junit(results: &[RunResult]) -> String {
    let named = several_transports(results);
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let failures = results.iter().filter(|r| r.failed()).count();
    let _ =
        writeln!(s, "<testsuites name=\"daxvmm test\" tests=\"{}\" failures=\"{failures}\">", results.len());
    for row in rows(results) {
        let mine: Vec<&RunResult> = results.iter().filter(|r| of_row(&row, r)).collect();
        let transport = if named { format!(".{}", row.transport) } else { String::new() };
        let class = format!("{}.{}{transport}", xml_escape(&row.scenario), xml_escape(&row.fs));
        let _ = writeln!(
            s,
            "  <testsuite name=\"{class}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
            mine.len(),
            row.violations,
            row.skipped
        );
        for r in mine {
            let _ = write!(
                s,
                "    <testcase classname=\"{class}\" name=\"{}\">",
                xml_escape(&run_name(r, named))
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
            transport: Transport::Nfit,
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
        assert!(t.lines().next().unwrap().contains("  fs    transport  tried"), "{t}");
        assert!(t.lines().nth(1).unwrap().contains(" ext4  nfit           2 "), "{t}");
        assert!(t.lines().last().unwrap().starts_with("total"));
        assert_eq!(t.lines().last().unwrap().split_whitespace().count(), 7, "{t}");
        assert_eq!(t.lines().count(), 4);
    }

    /// The sample run again on virtio-pmem, numbered after it as `daxvmm test --transport nfit,virtio`
    /// numbers a second boot.
    fn on_both() -> Vec<RunResult> {
        let mut all = sample();
        all.extend(sample().into_iter().map(|r| RunResult {
            run: r.run + 3,
            transport: Transport::Virtio,
            ..r
        }));
        all
    }

    #[test]
    fn two_transports_have_their_own_rows_and_names() {
        let rows = rows(&on_both());
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows.iter().map(|r| (r.fs.as_str(), r.transport)).collect::<Vec<_>>(),
            [
                ("ext4", Transport::Nfit),
                ("xfs", Transport::Nfit),
                ("ext4", Transport::Virtio),
                ("xfs", Transport::Virtio)
            ]
        );
        assert_eq!((rows[2].tried, rows[2].violations), (2, 1));
        let t = table(&rows);
        assert!(t.lines().nth(3).unwrap().contains(" ext4  virtio         2 "), "{t}");
        assert!(t.lines().last().unwrap().starts_with("total"));
        let tap = tap(&on_both());
        assert!(tap.contains("ok 1 - truncate-unpin ext4 nfit run 0 [0.s1 1.s1 0.s2 1.s2]\n"), "{tap}");
        assert!(tap.contains("not ok 5 - truncate-unpin ext4 virtio run 4 [1.s1 0.s1 0.s2 1.s2]\n"), "{tap}");
        let x = junit(&on_both());
        assert!(x.contains(
            "<testsuite name=\"truncate-unpin.ext4.virtio\" tests=\"2\" failures=\"1\" skipped=\"0\">"
        ));
        assert!(
            x.contains(
                "<testcase classname=\"truncate-unpin.xfs.nfit\" name=\"truncate-unpin xfs nfit run 2 "
            ),
            "{x}"
        );
        assert_eq!(x.matches("<testsuite ").count(), 4);
        assert_eq!(x.matches("<testcase ").count(), 6);
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
    fn tap_findings_are_yaml_double_quoted() {
        assert_eq!(yaml_quote("plain: text"), r#""plain: text""#);
        assert_eq!(yaml_quote("a \"b\" c\\d"), r#""a \"b\" c\\d""#);
        assert_eq!(yaml_quote("l1\nl2\tx\u{1b}[0m\r\u{85}é"), r#""l1\nl2\tx\u001b[0m\u000d\u0085é""#);
        let mut results = sample();
        results[1].findings = vec![Finding::new(FindingKind::Crash, "console: \u{1b}[1m\"Oops\"")];
        let t = tap(&results);
        assert!(t.contains("    - \"crash: console: \\u001b[1m\\\"Oops\\\"\"\n"), "{t}");
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
        // One transport: the names are the ones they always were.
        assert!(
            x.contains("<testcase classname=\"truncate-unpin.xfs\" name=\"truncate-unpin xfs run 2 "),
            "{x}"
        );
    }
}
