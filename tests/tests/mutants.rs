//! The guest kernel's deliberate refcounting bugs (the last patch of guest-kernel/patches, 0008): each
//! is off unless `daxvmm test --mutant NAME` selects one at boot. For every mutant of
//! `daxvmm_race::MUTANTS` these tests show, on the built kernel:
//! - its killing scenarios' forced schedules kill it on ext4, every run, and the other
//!   kernel-held scenarios stay clean with it selected (it breaks its own window only);
//! - a repro file of the kill replays to the same violation, with the kernel's events in the recorded
//!   order, 3 times out of 3 in one boot;
//! - for a schedule-dependent mutant, the sequential refcount checks (daxvmm-refcount-test) all pass:
//!   only a forced schedule finds it. The controls are the other way round: the sequential checks catch
//!   `pinned-idle`, and so do the plain (user-space ordered) race scenarios and their repro file; they
//!   catch `interrupted-idle` with their timer-driven EINTR check, as its forced schedule does.

use daxvmm_race::{Mutant, MUTANTS};
use daxvmm_scenarios::ScenarioId;
use daxvmm_tests::{Case, SharedBatch};

/// The kills run on ext4 only, to keep CI within its time: the mutants are in fs/dax.c and mm/, shared by
/// both filesystems, and tests/tests/race.rs runs every held scenario on ext4 and xfs on the same kernel.
const FILESYSTEMS: [&str; 1] = ["ext4"];
/// The scenarios that hold a thread inside the kernel (each with one forced schedule).
fn held() -> Vec<ScenarioId> {
    daxvmm_race::library().into_iter().filter(|e| !e.schedules.is_empty()).map(|e| e.id).collect()
}
/// The control that breaks every order (it is tested on its own below: it fails the held scenarios'
/// hold checks everywhere).
const ANY_ORDER: &str = "pinned-idle";
/// Replays of each kill's repro file.
const REPLAYS: usize = 3;
/// The checks daxvmm-refcount-test runs (its TAP plan).
const CHECKS: usize = 30;

fn race(name: &str, out: &str, mutant: &str, extra: &[&str]) -> Case {
    let mut args = vec![
        "test",
        "--kernel",
        "{kernel}",
        "--initrd",
        "{initrd}",
        "--out",
        out,
        "--timeout",
        "240s",
        "--mutant",
        mutant,
    ];
    args.extend_from_slice(extra);
    Case::daxvmm(name, args).rerun_nested_on_emulation_faults()
}

/// The sequential refcount checks on ext4 with `mutant` selected.
fn sequential(m: &str) -> Case {
    let extra = ["--cpus", "2", "--mem", "512M", "--pmem", "1G"];
    Case::guest(
        &format!("seq_{m}"),
        &extra,
        &format!("quiet daxvmm_mutant={m} -- /tests/refcount.sh ext4"),
        "240s",
    )
    .rerun_nested_on_emulation_faults()
}

fn held_names() -> String {
    held().iter().map(|id| id.name()).collect::<Vec<_>>().join(",")
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for m in forced_killed() {
        let n = m.name;
        let killer = m.killers[0].name();
        cases.push(race(
            &format!("kill_{n}"),
            &format!("{{tmp}}/kill-{n}"),
            n,
            // A generous bound: in the nested test host a filesystem busy after the previous run's
            // hang can take over 2 s to reach its busy scan, and a bound that ends the hold first lets the
            // unpin go too early. Each hang still ends at the watchdog's 3 s.
            &["--fs", &FILESYSTEMS.join(","), "--scenario", &held_names(), "--hold-bound", "10s"],
        ));
        cases.push(
            Case::daxvmm(&format!("replay_{n}"), ["repro", "--replays", &REPLAYS.to_string(), &format!("{{tmp}}/{n}.repro")])
                .with_setup(&format!("f=$(ls {{tmp}}/kill-{n}/repro/{killer}-ext4-*.repro | head -n1) && cp \"$f\" {{tmp}}/{n}.repro"))
                .needing(&format!("kill_{n}"))
                .rerun_nested_on_emulation_faults(),
        );
        cases.push(sequential(n));
    }
    // The control of every order. One boot per scenario: a kernel that reuses blocks still pinned can crash later runs.
    // race_broken's "truncate, new files, then the pin's write" order waits for the truncator's new files,
    // which can take over the default 2 s bound in the nested test host: hence 10 s.
    let c = ANY_ORDER;
    cases.push(race(
        "race_broken",
        "{tmp}/race-broken",
        c,
        &["--fs", "ext4", "--scenario", "truncate-unpin", "--hold-bound", "10s"],
    ));
    cases.push(race(
        "race_broken_munmap",
        "{tmp}/race-broken-munmap",
        c,
        &["--fs", "ext4", "--scenario", "pin-munmap-truncate"],
    ));
    cases.push(race(
        "race_broken_held",
        "{tmp}/race-broken-held",
        c,
        &["--fs", "ext4", "--scenario", "truncate-unpin-sleeping"],
    ));
    cases.push(
        Case::daxvmm("replay_broken", ["repro", "{tmp}/replay.repro"])
            .with_setup("f=$(ls {tmp}/race-broken/repro/truncate-unpin-*.repro | head -n1) && cp \"$f\" {tmp}/replay.repro")
            .needing("race_broken"),
    );
    cases.push(sequential(c));
    cases
}

static BATCH: SharedBatch = SharedBatch::new(cases);

fn schedule_dependent() -> impl Iterator<Item = &'static Mutant> {
    MUTANTS.iter().filter(|m| m.schedule_dependent)
}

/// Every mutant a forced schedule kills in its own scenarios only: all but the control of every order.
fn forced_killed() -> impl Iterator<Item = &'static Mutant> {
    MUTANTS.iter().filter(|m| m.name != ANY_ORDER)
}

#[test]
fn each_mutant_is_killed_by_its_forced_schedules_only() {
    for m in forced_killed() {
        let Some(out) = BATCH.outcome(&format!("kill_{}", m.name)) else { return };
        assert!(out.contains(&format!("mutant {} selected", m.name)), "{}: {out}", m.name);
        assert_eq!(out.exit_code, 10, "{}: violations must make daxvmm test exit 10: {out}", m.name);
        for fs in FILESYSTEMS {
            for id in held() {
                let Some([tried, _, _, skipped, violations]) = out.race_row(id.name(), fs) else {
                    panic!("{}: no row for {id} on {fs}: {out}", m.name)
                };
                assert_eq!(skipped, 0, "{}: {id} on {fs}: {out}", m.name);
                let want = if m.killers.contains(&id) { tried } else { 0 };
                assert_eq!(violations, want, "{}: {id} on {fs} ({tried} runs): {out}", m.name);
                // A lost wake-up only delays truncate, so no new file can get a pinned block. A skipped
                // rescan frees one under its pin; whether a new file then gets it is the allocator's
                // choice (some runs, not all).
                let opened = out.stale_windows(id.name(), fs).unwrap_or(usize::MAX);
                let most = if m.hangs() { 0 } else { want };
                assert!(opened <= most, "{}: {id} on {fs}: {opened} stale-write windows: {out}", m.name);
            }
        }
        assert!(out.contains(m.shows), "{}: the kill must show as '{}': {out}", m.name, m.shows);
    }
}

#[test]
fn each_kill_replays_every_time() {
    for m in forced_killed() {
        let Some(out) = BATCH.outcome(&format!("replay_{}", m.name)) else { return };
        assert!(out.contains(&format!("with mutant {}", m.name)), "the replay must select the mutant: {out}");
        // The same violation with the kernel's own events (holds, wait, free) in the recorded order.
        assert!(out.contains("recorded kernel events: "), "{out}");
        let line = format!("with the same kernel event order, came back in {REPLAYS} of {REPLAYS} replays");
        assert!(out.contains(&line), "{}: {out}", m.name);
        assert_eq!(out.exit_code, 0, "{out}");
    }
}

#[test]
fn the_sequential_checks_miss_every_schedule_dependent_mutant() {
    for m in schedule_dependent() {
        let Some(out) = BATCH.outcome(&format!("seq_{}", m.name)) else { return };
        assert!(out.has_line(&format!("1..{CHECKS}")), "{}: the checks must have run: {out}", m.name);
        let failed = out.console.lines().filter(|l| l.trim_start().starts_with("not ok ")).count();
        assert_eq!(
            failed, 0,
            "{}: a sequential check caught it, so it is not schedule-dependent: {out}",
            m.name
        );
        assert_eq!(out.exit_code, 0, "{out}");
    }
}

/// The controls: with pinned folios reported idle, the sequential truncate check fails; with an
/// interrupted wait taken for idle, their EINTR check does.
#[test]
fn the_sequential_checks_catch_the_controls() {
    for (m, check) in
        [(ANY_ORDER, "blocks until the unpin"), ("interrupted-idle", "returns EINTR on a signal")]
    {
        let Some(out) = BATCH.outcome(&format!("seq_{m}")) else { return };
        assert!(out.has_line(&format!("1..{CHECKS}")), "{m}: the test program must have run: {out}");
        assert_eq!(out.tap_result(check), Some(false), "{m}: {out}");
        assert_ne!(out.exit_code, 0, "{m}: the failed checks must reach daxvmm's exit code: {out}");
    }
}

#[test]
fn the_control_is_caught_by_ordering_and_data_checks() {
    for (case, s) in [("race_broken", "truncate-unpin"), ("race_broken_munmap", "pin-munmap-truncate")] {
        let Some(out) = BATCH.outcome(case) else { return };
        assert_eq!(out.exit_code, 10, "violations must make daxvmm test exit 10: {out}");
        let [_, _, _, _, violations] = out.race_row(s, "ext4").expect("row");
        assert!(violations > 0, "{s}: the control must be caught: {out}");
        assert!(out.contains("ordering: truncate or eviction returned"), "{s}: {out}");
        assert!(out.contains("repro file: "), "{out}");
    }
    let Some(out) = BATCH.outcome("race_broken") else { return };
    assert!(out.contains("data: block pfn"), "the stale pin's write must be found in a reused block: {out}");
    assert!(out.stale_windows("truncate-unpin", "ext4").is_some_and(|n| n > 0), "{out}");
    assert!(out.contains("stale-write window open: a new file got block 0x"), "{out}");
}

/// With the control, truncate never finds the pinned page busy, so it never reaches the hold points
/// its forced schedule names: the kernel's own events show the holds were not where the schedule says.
/// (Truncate is held at `broken` instead, so the unpin comes first and no ordering violation shows: the
/// schedule the run was meant to force did not happen, and that is what fails it.)
#[test]
fn a_hold_the_kernel_never_reached_is_a_finding() {
    let Some(out) = BATCH.outcome("race_broken_held") else { return };
    assert_eq!(out.exit_code, 10, "{out}");
    let [_, observed, _, _, violations] = out.race_row("truncate-unpin-sleeping", "ext4").expect("row");
    assert_eq!((observed, violations), (0, 1), "{out}");
    for point in ["busy", "sleep", "woken"] {
        let finding = format!("hold: thread 0 never reached kernel point {point} where the schedule says");
        assert!(out.contains(&finding), "{finding}: {out}");
    }
}

#[test]
fn a_repro_file_replays_to_the_same_violation() {
    let Some(out) = BATCH.outcome("replay_broken") else { return };
    assert!(out.contains("recorded:\n  ordering:"), "{out}");
    let line =
        "reproduced: the same violation (ordering), with the same kernel event order, came back in 1 of 1";
    assert!(out.contains(line), "{out}");
    assert_eq!(out.exit_code, 0, "{out}");
}
