//! fs-dax page refcounting on the pinned 7.2 guest kernel, checked from inside the guest through the
//! dax_refcount driver (guest-kernel/patches) by daxvmm-refcount-test, on ext4 and xfs mounted with
//! `-o dax`. Each invariant of docs/dax-refcount.md is its own test here, asserted on both
//! filesystems. That these checks can fail is shown in mutants.rs (the `pinned-idle` mutant fails the
//! truncate check).

use daxvmm_tests::{Case, SharedBatch};

/// The checks daxvmm-refcount-test runs (its TAP plan).
const CHECKS: usize = 30;
const FILESYSTEMS: [&str; 2] = ["ext4", "xfs"];

fn case(name: &str, fs: &str) -> Case {
    // Debug logging: daxvmm's count of the fault injector events the guest driver sent.
    let extra = ["--cpus", "2", "--mem", "512M", "--pmem", "1G", "--log-level", "debug"];
    Case::guest(name, &extra, &format!("quiet -- /tests/refcount.sh {fs}"), "240s")
}

/// In a refcount run the driver reports a folio free (event 9) before the first break-layout wait begins
/// (7) and ends (8); event 14 (a user marker) it never sends.
const SCHEDULE_IN_ORDER: &str = "0.e9 0.e7 0.e8";
const SCHEDULE_UNMET: &str = "0.e14";

fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = FILESYSTEMS.iter().map(|fs| case(&format!("refcount_{fs}"), fs)).collect();
    let cmd = "quiet -- /tests/refcount.sh ext4";
    let extra = ["--cpus", "2", "--pmem", "1G", "--fault-schedule", SCHEDULE_IN_ORDER];
    cases.push(Case::guest("schedule_in_order", &extra, cmd, "240s"));
    cases.push(Case::guest("schedule_unmet", &["--fault-schedule", SCHEDULE_UNMET], "quiet -- true", "120s"));
    cases
}

static BATCH: SharedBatch = SharedBatch::new(cases);

/// Asserts, on ext4 and on xfs, that each named check ran and passed.
fn assert_passed(checks: &[&str]) {
    for fs in FILESYSTEMS {
        let Some(out) = BATCH.outcome(&format!("refcount_{fs}")) else { return };
        for what in checks {
            match out.tap_result(what) {
                Some(true) => {}
                Some(false) => panic!("on {fs}, the check `{what}` failed: {out}"),
                None => panic!("on {fs}, the check `{what}` did not run: {out}"),
            }
        }
    }
}

#[test]
fn every_check_ran_and_the_guest_reported_success() {
    for fs in FILESYSTEMS {
        let Some(out) = BATCH.outcome(&format!("refcount_{fs}")) else { return };
        assert!(out.has_line(&format!("1..{CHECKS}")), "on {fs}: expected a plan of {CHECKS} checks: {out}");
        let results =
            out.console.lines().filter(|l| l.starts_with("ok ") || l.starts_with("not ok ")).count();
        assert_eq!(results, CHECKS, "on {fs}: every planned check must report: {out}");
        assert_eq!(out.exit_code, 0, "on {fs}: the guest's exit status must be 0: {out}");
    }
}

#[test]
fn a_pinned_page_is_an_fsdax_page_with_pin_bias_and_mapping_reference() {
    assert_passed(&[
        "pinned page of a 4 KiB-mapped DAX file is an fs-dax page",
        "mapped and pinned: ref_count = 1 (mapping) + 1024 (pin bias), mapcount 1",
        "WRITE_THROUGH_PIN data is visible through the mapping",
    ]);
}

#[test]
fn idle_refcount_is_zero_after_unpin_and_munmap() {
    assert_passed(&[
        "pinned after munmap: ref_count = 1024 (pin bias only), mapcount 0",
        "idle after unpin and munmap: ref_count 0, mapcount 0",
        "folio_free hook reported the freed pfn",
    ]);
}

#[test]
fn longterm_pin_of_fsdax_fails_with_eopnotsupp() {
    assert_passed(&[
        "FOLL_LONGTERM pin of a DAX page fails with EOPNOTSUPP",
        "FOLL_LONGTERM pin of anonymous memory succeeds (control)",
    ]);
}

#[test]
fn truncate_blocks_until_unpin() {
    assert_passed(&[
        "ftruncate over a pinned page (pinner munmapped first) blocks until the unpin",
        "hooks saw break-layout wait begin and end for the pinned pfn",
    ]);
}

#[test]
fn truncate_returns_eintr_when_a_signal_interrupts_the_wait() {
    assert_passed(&[
        "ftruncate over a pinned page returns EINTR on a signal without SA_RESTART",
        "hooks counted the interrupted wait; ftruncate succeeds after the unpin",
    ]);
}

#[test]
fn punch_hole_blocks_until_unpin() {
    assert_passed(&["fallocate(PUNCH_HOLE) over a pinned page blocks until the unpin"]);
}

#[test]
fn eviction_waits_for_a_pinned_page() {
    assert_passed(&[
        "unlink of a closed file with a pinned page waits in eviction (dax_break_layout_final) until the unpin",
        "hooks saw the eviction wait begin and end, not interrupted",
    ]);
}

#[test]
fn pmd_mapping_is_one_order9_folio_with_a_ref_and_mapcount_per_mapping() {
    assert_passed(&[
        "2 MiB file mapped at a 2 MiB boundary is one order-9 fs-dax folio",
        "one mapping + one pinned page: ref_count 2, mapcount 1",
        "a second mapping (MAP_SYNC) adds +1 ref and +1 mapcount",
        "range pin of all 512 pages: +512 refs, contiguous pfns in the same folio",
        "after unpin and munmap of both mappings the folio is idle (ref_count 0, mapcount 0)",
    ]);
}

#[test]
fn handles_are_per_file_and_closing_releases_pins() {
    assert_passed(&[
        "a forgotten handle is gone (ENOENT)",
        "handles are per open file (another file's handle is ENOENT)",
        "closing a file releases its pins",
    ]);
}

#[test]
fn bad_ioctl_input_gets_errors_and_fuzzing_never_oopses() {
    assert_passed(&[
        "bad addresses give EFAULT",
        "bad lengths, alignment, flags and reserved fields give EINVAL",
        "unknown handles give ENOENT",
        "bad index/offset give EINVAL; read-only pin write EPERM; released handle write ESTALE",
        "unknown ioctl numbers give ENOTTY",
        "random ioctl numbers and arguments return without crashing",
    ]);
}

/// The driver bound to the VMM's fault injector (ACPI DAXF0001) and its hook events reached daxvmm.
#[test]
fn hook_events_reach_the_vmm() {
    for fs in FILESYSTEMS {
        let Some(out) = BATCH.outcome(&format!("refcount_{fs}")) else { return };
        assert!(
            out.has_line("dax_refcount: fault injector at 0xfeb00000, protocol v1"),
            "on {fs}: the driver must bind to the fault injector: {out}"
        );
        let events = out.console.lines().find_map(|l| {
            l.split_once("fault injector: ")?.1.split_once(" events")?.0.trim().parse::<u64>().ok()
        });
        assert!(events.is_some_and(|n| n > 0), "on {fs}: daxvmm must have counted hook events: {out}");
        assert!(out.contains("protocol errors {}"), "on {fs}: the driver must speak the protocol: {out}");
    }
}

/// The host sees the guest's hook events in order: an armed schedule of them completes, and one whose
/// event never comes is reported incomplete.
#[test]
fn fault_schedules_of_hook_events() {
    let (Some(ok), Some(unmet)) = (BATCH.outcome("schedule_in_order"), BATCH.outcome("schedule_unmet"))
    else {
        return;
    };
    assert_eq!(ok.exit_code, 0, "{ok}");
    assert!(ok.contains("fault schedule: complete, all 3 steps in order"), "{ok}");
    assert_eq!(unmet.exit_code, 0, "{unmet}");
    assert!(unmet.contains("fault schedule: incomplete, 0 of 1 steps in order"), "{unmet}");
}

#[test]
fn kernel_log_is_clean_afterwards() {
    assert_passed(&["kernel log has no WARN/BUG/Oops/KASAN/hung-task line"]);
}
