//! The harness survives a test host VM that dies in the middle of a batch (QEMU TCG's nested SVM rarely
//! hangs or resets the test host VM): the cases without a result, and the earlier cases whose files
//! they need, run again in a new test host VM (until three of them got no case done), while finished
//! cases keep their results.
//!
//! The test crashes the test host kernel on purpose (sysrq `c`), so it runs only nested; with hardware
//! KVM on this host it skips. No guest boots here: the cases run shell snippets and `daxvmm --version`.

use daxvmm_tests::record::report_skip;
use daxvmm_tests::run::RunError;
use daxvmm_tests::{host, Case, Outcome, SharedBatch, Skip, Where};

/// Crashes the kernel it runs on, but only inside the test host VM: /batch and /case-timeout are the
/// files the test host VM (tests/src/test_host.rs) has at its root, and its /init names itself.
const CRASH_TEST_HOST: &str = "[ -f /batch ] && [ -f /case-timeout ] && grep -q 'test host VM' /init \
     && echo c > /proc/sysrq-trigger";

/// Prints the boot id of the kernel the case runs on.
const BOOT_ID: &str = "echo boot-id $(cat /proc/sys/kernel/random/boot_id)";

fn cases() -> Vec<Case> {
    let case = |name: &str, setup: &str| Case::daxvmm(name, ["--version"]).with_setup(setup).without_boot();
    vec![
        case("writer", &format!("{BOOT_ID} | tee {{tmp}}/boot-id")),
        case("bystander", BOOT_ID),
        case("crasher", &format!("test -s {{tmp}}/boot-id && {CRASH_TEST_HOST}")).needing("writer"),
    ]
}

static BATCH: SharedBatch = SharedBatch::new(cases);

fn boot_id(out: &Outcome) -> &str {
    out.console
        .lines()
        .find_map(|l| l.strip_prefix("boot-id "))
        .unwrap_or_else(|| panic!("no boot id: {out}"))
}

#[test]
fn a_dead_test_host_vm_reruns_the_unfinished_cases_and_what_they_need() {
    match host::detect() {
        Ok(Where::Nested) => {}
        Ok(Where::Direct) => {
            let why =
                "this host runs daxvmm directly on hardware KVM; the test crashes the test host VM's kernel";
            return report_skip("harness_retry", &Skip(why.into()));
        }
        Err(skip) => return report_skip("harness_retry", &skip),
    }
    let Some(writer) = BATCH.outcome("writer") else { return };
    let Some(bystander) = BATCH.outcome("bystander") else { return };
    assert_eq!(writer.exit_code, 0, "{writer}");
    assert_eq!(bystander.exit_code, 0, "{bystander}");
    // The bystander finished in the first test host VM and kept that result; the writer ran again in the
    // second one because the crasher needs its file.
    assert_ne!(boot_id(writer), boot_id(bystander), "the writer did not run again:\n{writer}\n{bystander}");
    let Ok(Err(why)) = BATCH.get().as_ref().map(|b| b.get("crasher")) else {
        panic!("the crasher cannot have a result: its test host VM dies every time")
    };
    assert!(matches!(why, RunError::Stopped { .. }), "{why}");
    assert!(why.to_string().starts_with("the test host VM stopped during this case"), "{why}");
}
