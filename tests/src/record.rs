//! Skips and the guest boot log: every guest boot that ran, every skipped test, every fault of a test host
//! VM and every case run again in a new one is appended to the file named by `DAXVMM_BOOT_LOG` (default
//! `target/daxvmm-guest-boots.log`), which the summary ([`crate::summary`]) reads. Lines ([`Record`]):
//! `<where> <case> <exit code>` for a boot (where = `direct` or `nested`), `SKIP <reason>` for a skipped
//! test, `FAULT <kind> <detail>` for a test host VM fault (kinds: [`crate::test_host::Fault::kind`], and
//! `guest-fault` for a case's emulation fault, [`crate::Case::nested_fault`]), `RERUN <case> <reason>`
//! for a case run again in a new test host VM.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use crate::host::Where;

/// Why a test cannot run here; the test prints it and passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The boot log's path.
pub fn boot_log_path() -> PathBuf {
    match std::env::var_os("DAXVMM_BOOT_LOG") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/daxvmm-guest-boots.log"),
    }
}

/// Records that a guest boot ran.
pub fn record_boot(place: Where, case: &str, exit_code: i32) {
    record(&Record::Boot(place.name().into(), case.into(), exit_code));
}

/// One line of the boot log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A guest boot ran: where (`direct`, `nested`), the case, its exit code.
    Boot(String, String, i32),
    /// A test was skipped, for this reason.
    Skip(String),
    /// A test host VM fault: its kind and what happened.
    Fault(String, String),
    /// A case ran again in a new test host VM: its name and why.
    Rerun(String, String),
}

impl Record {
    /// The line for the log (no newline in it).
    pub fn line(&self) -> String {
        let one = |s: &str| s.replace(['\n', '\r'], " ");
        match self {
            Record::Boot(place, case, rc) => format!("{place} {case} {rc}"),
            Record::Skip(why) => format!("SKIP {}", one(why)),
            Record::Fault(kind, what) => format!("FAULT {kind} {}", one(what)),
            Record::Rerun(case, why) => format!("RERUN {case} {}", one(why)),
        }
    }

    /// Parses a log line; `None` for a line of no known form.
    pub fn parse(line: &str) -> Option<Record> {
        let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
        let two = |r: &str| {
            let (a, b) = r.split_once(' ').unwrap_or((r, ""));
            (a.to_string(), b.to_string())
        };
        match head {
            "" => None,
            "SKIP" => Some(Record::Skip(rest.to_string())),
            "FAULT" => Some(two(rest)).map(|(k, w)| Record::Fault(k, w)),
            "RERUN" => Some(two(rest)).map(|(c, w)| Record::Rerun(c, w)),
            place => {
                let (case, rc) = rest.rsplit_once(' ')?;
                Some(Record::Boot(place.to_string(), case.to_string(), rc.parse().ok()?))
            }
        }
    }
}

/// Appends a record to the boot log.
pub fn record(r: &Record) {
    append(&r.line());
}

/// Prints the loud skip line for `test` and records the skip.
pub fn report_skip(test: &str, skip: &Skip) {
    // Straight to the process's stderr, not eprintln: the test harness captures eprintln of passing tests
    // unless --nocapture, and a skip must be seen either way.
    let _ = std::io::stderr().write_all(format!("SKIP: {test}: {skip}\n").as_bytes());
    record(&Record::Skip(skip.0.clone()));
}

// A boot log that cannot be written must not fail the test that booted; say so on stderr instead.
#[allow(clippy::print_stderr)]
fn append(line: &str) {
    let path = boot_log_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One write_all of a short line per record: appends from parallel tests do not interleave.
    let res = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = res {
        eprintln!("warning: cannot append to the boot log {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_their_lines() {
        let boot = Record::Boot(Where::Nested.name().into(), "one_vcpu".into(), 0);
        assert_eq!(boot.line(), "nested one_vcpu 0");
        assert_eq!(Record::parse("direct panic -3"), Some(Record::Boot("direct".into(), "panic".into(), -3)));
        for r in [
            boot,
            Record::Skip("DAXVMM_BIN not set (run scripts/test.sh)".into()),
            Record::Fault("stall".into(), "its console went silent".into()),
            Record::Rerun("race_xfs".into(), "emulation fault in its output".into()),
        ] {
            assert_eq!(Record::parse(&r.line()), Some(r));
        }
        assert_eq!(Record::Skip("two\nlines".into()).line(), "SKIP two lines");
        assert_eq!(Record::parse(""), None);
        assert_eq!(Record::parse("nested case notanumber"), None);
    }
}
