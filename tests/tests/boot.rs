//! Guest boots under daxvmm against docs/guest-interface.md: vCPU bring-up, and each way a guest run ends
//! (power-off, panic, --timeout, a non-zero guest exit status), as one batch (one test host VM boot when
//! nested). Then daxvmm's handling of bad input, which needs no guest and runs on the host.

use std::time::Duration;

use daxvmm_tests::reject::{args, assert_rejected, not_a_bzimage, some_kernel};
use daxvmm_tests::{Case, SharedBatch};

const INIT_REACHED: &str = "daxvmm-guest: init reached";

fn guest(name: &str, cpus: u32, cmdline: &str, timeout: &str) -> Case {
    Case::guest(name, &["--cpus", &cpus.to_string()], cmdline, timeout)
}

fn cases() -> Vec<Case> {
    vec![
        guest("one_vcpu", 1, "-- cat /sys/devices/system/cpu/online", "120s"),
        guest("two_vcpus", 2, "-- cat /sys/devices/system/cpu/online", "120s"),
        guest("panic", 1, "-- echo c > /proc/sysrq-trigger", "120s"),
        guest("timeout", 1, "-- sleep 1000", "20s"),
        guest("guest_status", 1, "-- exit 7", "120s"),
        guest(
            "fault_device",
            1,
            "-- cat /sys/bus/acpi/devices/DAXF0001:00/path /sys/bus/acpi/devices/DAXF0001:00/status",
            "120s",
        ),
        // No command: /init starts a shell on the console, which reads what is typed on daxvmm's stdin.
        guest("interactive", 1, "quiet", "120s").with_input(15, "echo typed-$((6*7)); exit\n"),
    ]
}

static BATCH: SharedBatch = SharedBatch::new(cases);

#[test]
fn one_vcpu() {
    let Some(out) = BATCH.outcome("one_vcpu") else { return };
    assert_eq!(out.exit_code, 0, "expected a clean power-off: {out}");
    assert!(out.contains(INIT_REACHED), "the guest never reached /init: {out}");
    assert!(out.has_line("0"), "expected /sys/devices/system/cpu/online to be '0': {out}");
}

#[test]
fn two_vcpus() {
    let Some(out) = BATCH.outcome("two_vcpus") else { return };
    assert_eq!(out.exit_code, 0, "expected a clean power-off: {out}");
    assert!(out.contains(INIT_REACHED), "the guest never reached /init: {out}");
    assert!(out.has_line("0-1"), "expected both vCPUs online ('0-1'): {out}");
}

/// The fault injector is described in ACPI where the guest driver will look for it (docs/fault-injection.md).
#[test]
fn fault_device() {
    let Some(out) = BATCH.outcome("fault_device") else { return };
    assert_eq!(out.exit_code, 0, "{out}");
    assert!(out.has_line("\\_SB_.DXFI"), "ACPI device DAXF0001 must be \\_SB_.DXFI: {out}");
    assert!(out.has_line("15"), "_STA must say present, enabled, shown, functioning (15): {out}");
}

#[test]
fn panic() {
    let Some(out) = BATCH.outcome("panic") else { return };
    // /init first, so that this is the sysrq crash and not an early boot panic.
    assert!(out.contains(INIT_REACHED), "the guest never reached /init: {out}");
    assert_eq!(out.exit_code, 3, "a guest kernel panic (pvpanic) must exit 3: {out}");
}

#[test]
fn timeout() {
    let Some(out) = BATCH.outcome("timeout") else { return };
    assert!(out.contains(INIT_REACHED), "the guest never reached /init: {out}");
    assert_eq!(out.exit_code, 4, "an expired --timeout must exit 4: {out}");
    assert!(out.wall >= Duration::from_secs(19), "stopped before --timeout 20s: {out}");
    assert!(out.wall < Duration::from_secs(200), "not stopped promptly at --timeout 20s: {out}");
}

#[test]
fn guest_status() {
    let Some(out) = BATCH.outcome("guest_status") else { return };
    assert!(out.contains("daxvmm-guest: command exited rc=7"), "the guest command did not run: {out}");
    assert_eq!(out.exit_code, 6, "a non-zero status on port 0x6F1 must exit 6: {out}");
}

#[test]
fn interactive_console_input() {
    let Some(out) = BATCH.outcome("interactive") else { return };
    assert!(out.has_line("typed-42"), "the shell did not run what was typed on stdin: {out}");
    assert_eq!(out.exit_code, 0, "leaving the shell must power the guest off: {out}");
}

// ---- Bad input: daxvmm must refuse it with an error line, exit 1 or 2, and never panic. ----

#[test]
fn bad_input_missing_kernel() {
    let missing = "/nonexistent/daxvmm-test/bzImage";
    assert_rejected(
        "bad_input_missing_kernel",
        &args(&["--kernel", missing, "--timeout", "10s"]),
        &[missing],
    );
}

#[test]
fn bad_input_not_a_bzimage() {
    let k = not_a_bzimage();
    let k = k.to_string_lossy();
    assert_rejected(
        "bad_input_not_a_bzimage",
        &args(&["--kernel", &k, "--timeout", "10s"]),
        &[&k, "bzimage"],
    );
}

fn bad_option(test: &str, option: &str, value: &str, mention: &[&str]) {
    let k = some_kernel();
    assert_rejected(
        test,
        &args(&["--kernel", &k.to_string_lossy(), option, value, "--timeout", "10s"]),
        mention,
    );
}

#[test]
fn bad_input_mem_zero() {
    bad_option("bad_input_mem_zero", "--mem", "0", &["mem"]);
}

#[test]
fn bad_input_mem_too_big() {
    bad_option("bad_input_mem_too_big", "--mem", "100T", &["mem"]);
}

#[test]
fn bad_input_mem_bad_unit() {
    bad_option("bad_input_mem_bad_unit", "--mem", "12Q", &["mem", "12Q"]);
}

#[test]
fn bad_input_cpus_zero() {
    bad_option("bad_input_cpus_zero", "--cpus", "0", &["cpus"]);
}
