//! One daxvmm process running many guests back to back (`--repeat`): every run must stop and join its
//! vCPU threads before guest memory is unmapped, so a run leaves no thread, mapping or memory behind,
//! whether the guest powered off, ran into --timeout with its vCPUs spinning in guest code and halted, or
//! was stopped in the middle of booting. daxvmm checks its own footprint after each run (exit 1 on a
//! leak); these tests check that it did, and that each run really ended the way the case says.

use daxvmm_tests::{Case, SharedBatch, NO_VCPU_EXIT};

const INIT_REACHED: &str = "daxvmm-guest: init reached";

fn repeat(name: &str, runs: u32, cmdline: &str, timeout: &str, extra: &[&str]) -> Case {
    let runs = runs.to_string();
    let args: Vec<&str> =
        ["--cpus", "2", "--repeat", &runs].into_iter().chain(extra.iter().copied()).collect();
    // A guest whose vCPUs no longer exit at all is the emulation stopping it (NO_VCPU_EXIT); these
    // runs never keep a guest silent for a minute.
    Case::guest(name, &args, cmdline, timeout).rerun_nested_on(NO_VCPU_EXIT)
}

fn cases() -> Vec<Case> {
    vec![
        // Stopped while booting: vCPU 0 runs the kernel, vCPU 1 may not even be started yet.
        repeat("repeat_mid_boot", 50, "-- sleep 1000", "2s", &[]),
        // At the timeout one vCPU spins in a user-space loop, the other is halted in the idle loop. The
        // stop counts from the guest's init, not from the start: a boot in the nested test host VM can
        // take anywhere from 5 s to over 15 s.
        repeat("repeat_spin_and_halt", 5, "-- while :; do :; done", "240s", &["--timeout-after-init", "3s"]),
        repeat("repeat_power_off", 3, "-- true", "120s", &[]),
    ]
}

// 58 KVM VMs created and destroyed in a row: the test host VM holds one open beside them (see
// SharedBatch::holding_kvm).
static BATCH: SharedBatch = SharedBatch::holding_kvm(cases);

fn ended(out: &daxvmm_tests::Outcome, runs: u32, how: &str) -> usize {
    (1..=runs).filter(|n| out.contains(&format!("repeat: run {n} of {runs} ended: {how}"))).count()
}

fn assert_no_leak(out: &daxvmm_tests::Outcome, runs: u32) {
    assert!(!out.contains("behind, against"), "a run left something behind: {out}");
    assert!(!out.contains("did not stop"), "a vCPU did not stop: {out}");
    assert!(out.contains(&format!("repeat: {runs} runs in one process; after the first:")), "{out}");
}

#[test]
fn repeat_mid_boot() {
    let Some(out) = BATCH.outcome("repeat_mid_boot") else { return };
    assert_eq!(out.exit_code, 4, "the last run must end by --timeout: {out}");
    assert_eq!(ended(out, 50, "timeout"), 50, "every run must end by its timeout: {out}");
    assert_no_leak(out, 50);
}

#[test]
fn repeat_spin_and_halt() {
    let Some(out) = BATCH.outcome("repeat_spin_and_halt") else { return };
    assert_eq!(out.exit_code, 4, "the last run must end by --timeout: {out}");
    assert_eq!(out.console.matches(INIT_REACHED).count(), 5, "each guest must reach its spin loop: {out}");
    assert_eq!(ended(out, 5, "timeout"), 5, "{out}");
    assert_no_leak(out, 5);
}

#[test]
fn repeat_power_off() {
    let Some(out) = BATCH.outcome("repeat_power_off") else { return };
    assert_eq!(out.exit_code, 0, "{out}");
    assert_eq!(ended(out, 3, "powered off"), 3, "{out}");
    assert_no_leak(out, 3);
}
