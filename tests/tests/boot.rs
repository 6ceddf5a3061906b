//! Guest boots under daxvmm against docs/guest-interface.md: vCPU bring-up, each way a guest run ends
//! (power-off, panic, --timeout, a non-zero guest exit status) and the uncompressed vmlinux boot, as one
//! batch (one test host VM boot when nested). Then daxvmm's handling of bad input, which needs no guest
//! and runs on the host.

use std::time::Duration;

use daxvmm_tests::host::{detect, env_file};
use daxvmm_tests::record::{report_skip, Skip};
use daxvmm_tests::reject::{args, assert_rejected, not_a_bzimage, some_kernel};
use daxvmm_tests::run::{added_path, run_batch_adding, Batch, CASE_TIMEOUT};
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

/// The same kernel as the bzImage, uncompressed: scripts/build-guest-kernel.sh keeps it beside the bzImage.
fn vmlinux() -> Result<std::path::PathBuf, Skip> {
    let v = env_file("DAXVMM_GUEST_KERNEL")?.with_file_name("vmlinux");
    match v.is_file() {
        true => Ok(v),
        false => Err(Skip(format!("no vmlinux beside the guest bzImage ({} is missing)", v.display()))),
    }
}

/// The guest's checks on a vmlinux boot: both vCPUs, the ACPI device (the RSDP from the zero page),
/// and /init's marker in the kernel log.
const VMLINUX_GUEST: &str = "-- cat /sys/devices/system/cpu/online /sys/bus/acpi/devices/DAXF0001:00/path; \
                             dmesg | grep -q '] daxvmm-guest: init reached' && echo kmsg-marker";

fn run() -> Result<Batch, Skip> {
    let mut cases = cases();
    let mut adds = Vec::new();
    // Without a vmlinux the other cases still run; the vmlinux test then skips, saying why.
    if let Ok(v) = vmlinux() {
        let at = added_path(detect()?, &v);
        cases.push(Case::daxvmm(
            "vmlinux",
            ["--kernel", &at, "--initrd", "{initrd}", "--cpus", "2", "--log-level", "debug"]
                .into_iter()
                .chain(["--cmdline", VMLINUX_GUEST, "--timeout", "120s"]),
        ));
        adds.push(v);
    }
    run_batch_adding(&cases, "DAXVMM_GUEST_KERNEL", adds, CASE_TIMEOUT)
}

static BATCH: SharedBatch = SharedBatch::running(run);

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

/// daxvmm boots the uncompressed kernel at its ELF entry point, with the same zero page as a bzImage.
#[test]
fn vmlinux_boot() {
    if let Err(skip) = vmlinux() {
        return report_skip("vmlinux_boot", &skip);
    }
    let Some(out) = BATCH.outcome_for("vmlinux_boot", "vmlinux") else { return };
    assert_eq!(out.exit_code, 0, "expected a clean power-off: {out}");
    assert!(out.contains("vmlinux loaded, entry at 0x"), "daxvmm did not load it as a vmlinux: {out}");
    assert!(out.has_line("0-1"), "expected both vCPUs online ('0-1'): {out}");
    assert!(out.has_line("\\_SB_.DXFI"), "the guest did not find the ACPI tables: {out}");
    assert!(out.has_line("kmsg-marker"), "/init's marker is not in the kernel log: {out}");
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
