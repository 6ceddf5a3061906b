//! Checks that daxvmm refuses bad input: one error line that names the input, exit 1 or 2, no panic.
//! These run daxvmm on this host (no guest is booted), so they run everywhere.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::host::env_file;
use crate::process::run_with_deadline;
use crate::record::report_skip;

/// A file that exists but is not a bzImage.
pub fn not_a_bzimage() -> PathBuf {
    let p = std::env::temp_dir().join(format!("daxvmm-test-not-a-bzImage-{}", std::process::id()));
    if !p.exists() {
        std::fs::write(&p, "this is not a kernel\n").expect("write a temp file");
    }
    p
}

/// The real guest kernel when there is one, so that only the option under test is wrong.
pub fn some_kernel() -> PathBuf {
    env_file("DAXVMM_GUEST_KERNEL").unwrap_or_else(|_| not_a_bzimage())
}

/// Runs daxvmm with `args` and checks the rejection; `mention`: words (any one, case-insensitive) the error
/// line must contain, so that it is this input that was refused.
pub fn assert_rejected(test: &str, args: &[String], mention: &[&str]) {
    let bin = match env_file("DAXVMM_BIN") {
        Ok(b) => b,
        Err(skip) => return report_skip(test, &skip),
    };
    let r = run_with_deadline(Command::new(&bin).args(args), Duration::from_secs(60)).expect("daxvmm runs");
    let show =
        format!("daxvmm {}\nexit {}\nstdout:\n{}\nstderr:\n{}", args.join(" "), r.code, r.stdout, r.stderr);
    assert!(!r.timed_out, "daxvmm did not exit within 60s on bad input: {show}");
    assert!(r.code == 1 || r.code == 2, "bad input must exit 1 or 2: {show}");
    assert!(!r.stdout.contains("panicked") && !r.stderr.contains("panicked"), "daxvmm panicked: {show}");
    let errors: Vec<&str> =
        r.stderr.lines().filter(|l| l.starts_with("error") || l.starts_with("daxvmm: error")).collect();
    let [error_line] = errors[..] else {
        panic!(
            "expected one stderr line starting with 'error' (or 'daxvmm: error'), got {}: {show}",
            errors.len()
        );
    };
    let lower = error_line.to_lowercase();
    assert!(
        mention.iter().any(|m| lower.contains(&m.to_lowercase())),
        "the error line does not name the bad input (one of {mention:?}): {show}"
    );
}

pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
