//! What `daxvmm fstests` leaves in its `--out` directory: `console.log` (the whole guest console),
//! per filesystem `FS/check.log` (check's output) and the results files the guest sent (fstests' own
//! `result.xml`, and `.out.bad`/`.full`/`.dmesg` of each failed test), `junit.xml` (every filesystem,
//! one testsuite each, merged by any JUnit reader) and `summary.txt` (the table it prints).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::check_output::{Section, Verdict};

/// A results file could not be written.
#[derive(Debug, Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct ReportError {
    path: PathBuf,
    source: std::io::Error,
}

fn write_file(path: &Path, text: &str) -> Result<(), ReportError> {
    let err = |source| ReportError { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, text).map_err(err)
}

/// Counts of one section.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Not run.
    pub not_run: usize,
}

/// The counts of `s`.
pub fn counts(s: &Section) -> Counts {
    let mut c = Counts::default();
    for t in &s.tests {
        match t.verdict {
            Verdict::Pass => c.passed += 1,
            Verdict::Fail(_) => c.failed += 1,
            Verdict::NotRun(_) => c.not_run += 1,
        }
    }
    c
}

/// The table: a line per test, then a line per filesystem.
pub fn table(sections: &[Section], expected: &[String]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{:<6} {:<14} {:<8} {:>6}  note", "fs", "test", "verdict", "time");
    for s in sections {
        for r in &s.tests {
            let (verdict, note) = match &r.verdict {
                Verdict::Pass => ("pass", ""),
                Verdict::Fail(why) => ("FAIL", why.as_str()),
                Verdict::NotRun(why) => ("not run", why.as_str()),
            };
            let time = r.seconds.map(|s| format!("{s}s")).unwrap_or_default();
            let line =
                format!("{:<6} {:<14} {:<8} {:>6}  {}", s.fs, r.name, verdict, time, one_line(note, 70));
            let _ = writeln!(t, "{}", line.trim_end());
        }
    }
    for s in sections {
        let c = counts(s);
        let end = match (s.complete(), s.rc) {
            (true, Some(rc)) => format!("exit status {rc}"),
            _ => "INCOMPLETE: the guest did not finish this filesystem".into(),
        };
        let _ =
            writeln!(t, "{}: {} passed, {} failed, {} not run ({end})", s.fs, c.passed, c.failed, c.not_run);
    }
    for fs in expected.iter().filter(|fs| !sections.iter().any(|s| &s.fs == *fs)) {
        let _ = writeln!(t, "{fs}: NOT REACHED: the guest never started this filesystem");
    }
    t
}

fn one_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    match line.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

/// XML text and attribute escaping; control characters (not allowed in XML 1.0) become spaces.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(c),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: a testsuite per filesystem, classname `fstests.FS`; an incomplete section gets an error
/// test case so that CI does not read it as passed.
pub fn junit(sections: &[Section]) -> String {
    let mut x =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"daxvmm fstests\">\n");
    for s in sections {
        let c = counts(s);
        let errors = usize::from(!s.complete());
        let _ = writeln!(
            x,
            "  <testsuite name=\"fstests.{fs}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"{errors}\">",
            s.tests.len() + errors,
            c.failed,
            c.not_run,
            fs = xml(&s.fs)
        );
        for t in &s.tests {
            let time = t.seconds.map(|s| format!(" time=\"{s}\"")).unwrap_or_default();
            let _ = write!(
                x,
                "    <testcase classname=\"fstests.{}\" name=\"{}\"{time}",
                xml(&s.fs),
                xml(&t.name)
            );
            match &t.verdict {
                Verdict::Pass => x.push_str("/>\n"),
                Verdict::Fail(why) => {
                    let _ = writeln!(x, "><failure message=\"{}\"/></testcase>", xml(&one_line(why, 200)));
                }
                Verdict::NotRun(why) => {
                    let _ = writeln!(x, "><skipped message=\"{}\"/></testcase>", xml(&one_line(why, 200)));
                }
            }
        }
        if errors > 0 {
            let _ = writeln!(
                x,
                "    <testcase classname=\"fstests.{}\" name=\"run\"><error message=\"the guest did not finish this filesystem\"/></testcase>",
                xml(&s.fs)
            );
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// Writes everything into `out`; returns the table.
pub fn write(
    out: &Path,
    sections: &[Section],
    expected: &[String],
    console: &str,
) -> Result<String, ReportError> {
    write_file(&out.join("console.log"), console)?;
    for s in sections {
        let dir = out.join(&s.fs);
        write_file(&dir.join("check.log"), &s.log)?;
        for (name, body) in &s.files {
            write_file(&dir.join(name), body)?;
        }
    }
    write_file(&out.join("junit.xml"), &junit(sections))?;
    let table = table(sections, expected);
    write_file(&out.join("summary.txt"), &table)?;
    Ok(table)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::check_output::{parse, TestResult};
    use super::*;

    fn section() -> Section {
        let mut s = Section { fs: "ext4".into(), rc: Some(1), summarized: true, ..Default::default() };
        let t = |name: &str, verdict, seconds| TestResult { name: name.into(), verdict, seconds };
        s.tests = vec![
            t("generic/428", Verdict::Pass, Some(2)),
            t("generic/462", Verdict::Fail("- output mismatch <see>".into()), None),
            t("generic/413", Verdict::NotRun("needs \"huge\" pages & more".into()), None),
        ];
        s
    }

    #[test]
    fn junit_counts_and_escapes() {
        let x = junit(&[section()]);
        assert!(
            x.contains(
                "<testsuite name=\"fstests.ext4\" tests=\"3\" failures=\"1\" skipped=\"1\" errors=\"0\">"
            ),
            "{x}"
        );
        assert!(x.contains("name=\"generic/428\" time=\"2\"/>"), "{x}");
        assert!(x.contains("<failure message=\"- output mismatch &lt;see&gt;\"/>"), "{x}");
        assert!(x.contains("<skipped message=\"needs &quot;huge&quot; pages &amp; more\"/>"), "{x}");
        assert_eq!(xml("a\u{1}b"), "a b");
    }

    #[test]
    fn an_incomplete_section_is_an_error_not_a_pass() {
        let s = parse("daxvmm-suite: section xfs\ngeneric/428 2s ...\n");
        let x = junit(&s);
        assert!(x.contains("errors=\"1\"") && x.contains("<error message="), "{x}");
        let t = table(&s, &["xfs".into(), "ext4".into()]);
        assert!(t.contains("xfs: 0 passed, 0 failed, 0 not run (INCOMPLETE"), "{t}");
        assert!(t.contains("ext4: NOT REACHED"), "{t}");
    }

    #[test]
    fn the_table_has_a_line_per_test_and_per_filesystem() {
        let t = table(&[section()], &["ext4".into()]);
        assert!(t.contains("ext4   generic/428    pass         2s"), "{t}");
        assert!(t.contains("FAIL") && t.contains("not run"), "{t}");
        assert!(t.contains("ext4: 1 passed, 1 failed, 1 not run (exit status 1)"), "{t}");
    }

    #[test]
    fn write_puts_files_under_their_section() {
        let dir = std::env::temp_dir().join(format!("daxvmm-fstests-report-{}", std::process::id()));
        let mut s = section();
        s.files.insert("generic/462.out.bad".into(), "bad\n".into());
        write(&dir, &[s], &["ext4".into()], "console\n").unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("ext4/generic/462.out.bad")).unwrap(), "bad\n");
        assert!(std::fs::read_to_string(dir.join("junit.xml")).unwrap().contains("fstests.ext4"));
        assert!(dir.join("summary.txt").is_file() && dir.join("console.log").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
