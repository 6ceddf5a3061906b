//! Skips and the guest boot log: every guest boot that ran and every skipped test is appended to the file
//! named by `DAXVMM_BOOT_LOG` (default `target/daxvmm-guest-boots.log`), which scripts/test.sh summarizes
//! as "N guest boots ran (nested|direct), M skipped". Lines: `<where> <case> <exit code>` for a boot
//! (where = `direct` or `nested`), `SKIP <reason>` for a skipped test.

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

/// The boot-log line of a guest boot that ran.
pub fn boot_line(place: Where, case: &str, exit_code: i32) -> String {
    format!("{} {case} {exit_code}", place.name())
}

/// Records that a guest boot ran.
pub fn record_boot(place: Where, case: &str, exit_code: i32) {
    append(&boot_line(place, case, exit_code));
}

/// Prints the loud skip line for `test` and records the skip.
pub fn report_skip(test: &str, skip: &Skip) {
    // Straight to the process's stderr, not eprintln: the test harness captures eprintln of passing tests
    // unless --nocapture, and a skip must be seen either way.
    let _ = std::io::stderr().write_all(format!("SKIP: {test}: {skip}\n").as_bytes());
    append(&format!("SKIP {}", skip.0.replace('\n', " ")));
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
    fn boot_lines_name_where_case_and_code() {
        assert_eq!(boot_line(Where::Nested, "one_vcpu", 0), "nested one_vcpu 0");
        assert_eq!(boot_line(Where::Direct, "panic", 3), "direct panic 3");
    }
}
