//! Reading an fstests run from the guest's console: the sections and files that
//! images/rootfs/daxvmm-fstests prints around fstests' `check`, and each test's verdict from check's own
//! lines. The console is the guest's: anything may be in it, and a section may end early (a crash, the
//! timeout); what was not seen is reported as such, never guessed.

use std::collections::BTreeMap;

/// The runner's line prefix.
const TAG: &str = "daxvmm-suite: ";
/// Lines of a results file carry this prefix.
const FILE_LINE: &str = "| ";
/// At most this many files per section are kept (the runner sends result.xml and three per failure).
pub const MAX_FILES: usize = 256;

/// One test's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Ran and passed.
    Pass,
    /// Ran and failed; what check said on its line.
    Fail(String),
    /// Not run; check's reason.
    NotRun(String),
}

/// One test of one section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// fstests' name, e.g. `generic/413`.
    pub name: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Seconds check reported for it.
    pub seconds: Option<u64>,
}

/// One filesystem's run of check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// `ext4` or `xfs` (whatever the runner said; only a safe file name is kept).
    pub fs: String,
    /// The tests check reported, in its order.
    pub tests: Vec<TestResult>,
    /// check's exit status, when the runner reached the end of the section.
    pub rc: Option<i32>,
    /// check printed its summary ("Ran:" / "Not run:" / "Passed all" / "Failed").
    pub summarized: bool,
    /// check's output, as printed.
    pub log: String,
    /// Results files the runner sent: name relative to the section (already checked to be safe).
    pub files: BTreeMap<String, String>,
    /// Files refused: unsafe names or over [`MAX_FILES`].
    pub refused_files: usize,
}

impl Section {
    /// Every test has a verdict and check ended normally.
    pub fn complete(&self) -> bool {
        self.rc.is_some() && self.summarized
    }
}

/// A results file name the host may create under a section directory: relative, no `..`, only
/// `[A-Za-z0-9._/-]`, at most 3 components.
pub fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.split('/').count() <= 3
        && name.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
}

/// A file system name as a directory name.
fn safe_fs(fs: &str) -> Option<String> {
    (safe_name(fs) && !fs.contains('/')).then(|| fs.to_string())
}

/// An fstests test name: `group/NNN` or `group/name`.
fn is_test_name(s: &str) -> bool {
    let mut parts = s.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(g), Some(t), None)
        if !g.is_empty() && !t.is_empty()
        && g.bytes().all(|b| b.is_ascii_alphanumeric())
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

#[derive(Default)]
struct TestLine {
    seconds: Option<u64>,
    not_run: Option<String>,
    failure: Option<String>,
}

/// Parses the whole console.
pub fn parse(console: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    let mut lines_of: BTreeMap<String, TestLine> = BTreeMap::new();
    let mut summary = Summary::default();
    let mut file: Option<(String, String)> = None;
    let mut last_test: Option<String> = None;
    for raw in console.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some((name, body)) = &mut file {
            if let Some(rest) = line.strip_prefix(FILE_LINE).or((line == "|").then_some("")) {
                body.push_str(rest);
                body.push('\n');
                continue;
            }
            let (name, body) = (std::mem::take(name), std::mem::take(body));
            file = None;
            if let Some(s) = sections.last_mut() {
                keep_file(s, name, body);
            }
            if line == format!("{TAG}end-file") {
                continue;
            }
        }
        if let Some(cmd) = line.strip_prefix(TAG) {
            if let Some(fs) = cmd.strip_prefix("section ") {
                finish(sections.last_mut(), &mut lines_of, &mut summary);
                sections.push(Section {
                    fs: safe_fs(fs.trim()).unwrap_or_else(|| "unnamed".into()),
                    ..Default::default()
                });
            } else if let Some(name) = cmd.strip_prefix("file ") {
                file = Some((name.trim().to_string(), String::new()));
            } else if let Some(rest) = cmd.strip_prefix("done ") {
                if let Some(s) = sections.last_mut() {
                    s.rc = rest.split_once("rc=").and_then(|(_, n)| n.trim().parse().ok());
                }
            }
            continue;
        }
        let Some(s) = sections.last_mut() else { continue };
        if s.rc.is_some() {
            continue;
        }
        s.log.push_str(line);
        s.log.push('\n');
        summary.read(line, &mut s.summarized);
        // A kernel message can split a test's line; its time or its reason for not running then comes
        // alone on the next one.
        let not_run_alone = line.trim_start().strip_prefix("[not run]").map(|r| r.trim().to_string());
        match (seconds_alone(line), not_run_alone, &last_test) {
            (Some(secs), _, Some(name)) => lines_of.entry(name.clone()).or_default().seconds = Some(secs),
            (_, Some(why), Some(name)) => lines_of.entry(name.clone()).or_default().not_run = Some(why),
            _ => last_test = read_test_line(line, &mut lines_of).or(last_test.take()),
        }
    }
    if let Some((name, body)) = file {
        if let Some(s) = sections.last_mut() {
            keep_file(s, name, body);
        }
    }
    finish(sections.last_mut(), &mut lines_of, &mut summary);
    sections
}

fn keep_file(s: &mut Section, name: String, body: String) {
    // The runner names files FS/NAME; keep NAME under the section.
    let rel = name.strip_prefix(&format!("{}/", s.fs)).unwrap_or(&name).to_string();
    if safe_name(&rel) && s.files.len() < MAX_FILES {
        s.files.insert(rel, body);
    } else {
        s.refused_files += 1;
    }
}

/// check's closing lines: `Ran: a b`, `Not run: c`, `Failures: d`, `Passed all N tests`, `Failed N of M
/// tests`.
#[derive(Default)]
struct Summary {
    ran: Vec<String>,
    not_run: Vec<String>,
    failures: Vec<String>,
}

impl Summary {
    fn read(&mut self, line: &str, summarized: &mut bool) {
        let names =
            |rest: &str| rest.split_whitespace().filter(|n| is_test_name(n)).map(String::from).collect();
        if let Some(rest) = line.strip_prefix("Ran:") {
            self.ran = names(rest);
        } else if let Some(rest) = line.strip_prefix("Not run:") {
            self.not_run = names(rest);
        } else if let Some(rest) = line.strip_prefix("Failures:") {
            self.failures = names(rest);
        } else if line.starts_with("Passed all ") || (line.starts_with("Failed ") && line.contains(" tests"))
        {
            *summarized = true;
        } else if line.starts_with("No tests") {
            // check -g with an empty group: a summary of nothing.
            *summarized = true;
        }
    }
}

/// A per-test line: `generic/413 2s ...  3s`, `generic/413       [not run] REASON`,
/// `generic/413 - output mismatch (see ...)`, `generic/413 [failed, exit status 1]- output mismatch`,
/// `generic/413       _check_generic_filesystem: ... inconsistent`.
fn read_test_line(line: &str, lines_of: &mut BTreeMap<String, TestLine>) -> Option<String> {
    let mut words = line.split_whitespace();
    let name = words.next().filter(|w| is_test_name(w))?;
    let rest = line[line.find(name).unwrap_or(0) + name.len()..].trim();
    let entry = lines_of.entry(name.to_string()).or_default();
    if let Some(reason) = rest.strip_prefix("[not run]") {
        entry.not_run = Some(reason.trim().to_string());
        return Some(name.to_string());
    }
    if let Some(secs) = rest.split_whitespace().rev().find_map(|w| w.strip_suffix('s')?.parse::<u64>().ok()) {
        entry.seconds = Some(secs);
    }
    if rest.contains("output mismatch") || rest.contains("[failed") || rest.contains("_check_") {
        entry.failure.get_or_insert_with(|| rest.to_string());
    }
    Some(name.to_string())
}

/// A line that is only a time, like ` 20s`.
fn seconds_alone(line: &str) -> Option<u64> {
    line.trim().strip_suffix('s')?.parse().ok()
}

/// Turns check's summary and per-test lines into the section's verdicts.
fn finish(section: Option<&mut Section>, lines_of: &mut BTreeMap<String, TestLine>, summary: &mut Summary) {
    let lines = std::mem::take(lines_of);
    let sum = std::mem::take(summary);
    let Some(s) = section else { return };
    if !s.tests.is_empty() {
        return;
    }
    let reason = |n: &str| lines.get(n);
    // Newer checks list the tests they did not run under "Ran:" too.
    for name in sum.ran.iter().filter(|n| !sum.not_run.contains(n)) {
        let l = reason(name);
        let verdict = if sum.failures.contains(name) {
            Verdict::Fail(l.and_then(|l| l.failure.clone()).unwrap_or_else(|| "failed".into()))
        } else {
            Verdict::Pass
        };
        s.tests.push(TestResult { name: name.clone(), verdict, seconds: l.and_then(|l| l.seconds) });
    }
    for name in &sum.not_run {
        let why = reason(name).and_then(|l| l.not_run.clone()).unwrap_or_else(|| "not run".into());
        s.tests.push(TestResult { name: name.clone(), verdict: Verdict::NotRun(why), seconds: None });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const RUN: &str = "\
[    3.1] some kernel line
daxvmm-suite: section ext4
FSTYP         -- ext4
generic/413       [not run] Kernel does not report huge page size
generic/428 3s ...  2s
generic/437        5s
generic/462 - output mismatch (see /var/lib/xfstests/results//generic/462.out.bad)
    --- tests/generic/462.out\t2026
    +++ /var/lib/xfstests/results//generic/462.out.bad
Ran: generic/428 generic/437 generic/462
Not run: generic/413
Failures: generic/462
Failed 1 of 3 tests
daxvmm-suite: file ext4/result.xml
| <testsuite>
|
| </testsuite>
daxvmm-suite: end-file
daxvmm-suite: file ext4/generic/462.out.bad
| QA output created by 462
daxvmm-suite: end-file
daxvmm-suite: file ext4/../../etc/passwd
| root::0:0
daxvmm-suite: end-file
daxvmm-suite: done ext4 rc=1
daxvmm-suite: section xfs
generic/428 2s ...
";

    #[test]
    fn verdicts_come_from_checks_summary_and_lines() {
        let s = parse(RUN);
        assert_eq!(s.len(), 2);
        let ext4 = &s[0];
        assert_eq!(ext4.fs, "ext4");
        assert!(ext4.complete());
        assert_eq!(ext4.rc, Some(1));
        let v: Vec<(&str, &Verdict, Option<u64>)> =
            ext4.tests.iter().map(|t| (t.name.as_str(), &t.verdict, t.seconds)).collect();
        assert_eq!(v[0], ("generic/428", &Verdict::Pass, Some(2)));
        assert_eq!(v[1], ("generic/437", &Verdict::Pass, Some(5)));
        assert!(matches!(v[2], ("generic/462", Verdict::Fail(why), None) if why.contains("output mismatch")));
        assert_eq!(v[3].1, &Verdict::NotRun("Kernel does not report huge page size".into()));
        assert_eq!(v.len(), 4);
    }

    #[test]
    fn files_are_kept_under_safe_names_only() {
        let s = parse(RUN);
        let ext4 = &s[0];
        assert_eq!(ext4.files["result.xml"], "<testsuite>\n\n</testsuite>\n");
        assert_eq!(ext4.files["generic/462.out.bad"], "QA output created by 462\n");
        assert_eq!(ext4.files.len(), 2);
        assert_eq!(ext4.refused_files, 1, "../../etc/passwd");
        assert!(ext4.log.contains("Failed 1 of 3 tests") && !ext4.log.contains("QA output"));
    }

    #[test]
    fn a_section_cut_short_is_incomplete_and_guesses_nothing() {
        let s = parse(RUN);
        let xfs = &s[1];
        assert!(!xfs.complete());
        assert!(xfs.tests.is_empty(), "{:?}", xfs.tests);
        assert!(parse("no runner output at all\n").is_empty());
    }

    #[test]
    fn a_time_split_off_by_a_kernel_message_still_counts() {
        let s = parse(
            "daxvmm-suite: section xfs\ngeneric/413        [  203.1] run fstests generic/413 at 2026\n 20s\n\
             Ran: generic/413\nPassed all 1 tests\ndaxvmm-suite: done xfs rc=0\n",
        );
        assert_eq!(s[0].tests[0].seconds, Some(20));
        assert_eq!(s[0].tests[0].verdict, Verdict::Pass);
    }

    #[test]
    fn a_test_not_run_is_listed_once_even_when_ran_names_it_and_a_kernel_line_splits_it() {
        let s = parse(
            "daxvmm-suite: section ext4\next4/030            2s\n\
             ext4/047           [   20.7] EXT4-fs (pmem2): Cannot use DAX on a filesystem\n\
             [not run] Kernel doesn't support the ext4 feature(s): inline_data\n\
             generic/470        [not run] This test requires a valid $LOGWRITES_DEV\n\
             Ran: ext4/030 ext4/047 generic/470\nNot run: ext4/047 generic/470\nPassed all 3 tests\n\
             daxvmm-suite: done ext4 rc=0\n",
        );
        let v: Vec<(&str, &Verdict)> = s[0].tests.iter().map(|t| (t.name.as_str(), &t.verdict)).collect();
        assert_eq!(
            v,
            [
                ("ext4/030", &Verdict::Pass),
                (
                    "ext4/047",
                    &Verdict::NotRun("Kernel doesn't support the ext4 feature(s): inline_data".into())
                ),
                ("generic/470", &Verdict::NotRun("This test requires a valid $LOGWRITES_DEV".into())),
            ]
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in ["", "/etc/x", "a/../b", "a//b", "a b", "a/b/c/d", "é", "..", "a/.", &"x".repeat(201)] {
            assert!(!safe_name(bad), "{bad:?}");
        }
        for good in ["result.xml", "generic/462.out.bad", "xfs/550.full"] {
            assert!(safe_name(good), "{good}");
        }
        let s = parse(
            "daxvmm-suite: section ../x\nRan: generic/1\nPassed all 1 tests\ndaxvmm-suite: done ../x rc=0\n",
        );
        assert_eq!(s[0].fs, "unnamed");
        assert!(s[0].complete());
    }

    #[test]
    fn a_file_without_its_end_marker_is_still_bounded_by_the_next_runner_line() {
        let s = parse(
            "daxvmm-suite: section ext4\ndaxvmm-suite: file ext4/result.xml\n| a\ndaxvmm-suite: done ext4 rc=0\n",
        );
        assert_eq!(s[0].files["result.xml"], "a\n");
        assert_eq!(s[0].rc, Some(0));
        assert!(!s[0].summarized);
    }
}
