//! `daxvmm test` and `daxvmm repro`, booting real guests: the race scenario library under the fault
//! injector passes on the pinned 7.2 kernel (ext4 and xfs, one boot each; some scenarios also on
//! virtio-pmem), including the scenarios held
//! inside the kernel at the fs/dax hold points, exactly where their schedules say; and on the Linux 6.12
//! comparison kernel (its own hooks and C driver) forced schedules show the historical bugs (truncate
//! does not wait for a pinned page whose mapping is gone, eviction and unmount never wait) while the
//! controls pass, held inside its wait. The guest kernel's mutants have their own tests (mutants.rs).

use daxvmm_scenarios::ScenarioId;
use daxvmm_tests::{Case, SharedBatch};

const FILESYSTEMS: [&str; 2] = ["ext4", "xfs"];

fn race(name: &str, out: &str, extra: &[&str]) -> Case {
    let mut args =
        vec!["test", "--kernel", "{kernel}", "--initrd", "{initrd}", "--out", out, "--timeout", "240s"];
    args.extend_from_slice(extra);
    Case::daxvmm(name, args).rerun_nested_on_emulation_faults()
}

fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = FILESYSTEMS
        .iter()
        .map(|fs| race(&format!("race_{fs}"), &format!("{{tmp}}/race-{fs}"), &["--fs", fs]))
        .collect();
    // The reports of the ext4 run, checked where they were written (and the PMD scenario really got
    // a 2 MiB folio: otherwise the guest notes "no PMD mapping" in the TAP output; the signal ended
    // truncate-signal's truncate with EINTR, and io_uring refused to register the pinned page as a fixed
    // buffer, as the guest notes there).
    cases.push(Case::daxvmm("race_reports", ["--version"]).with_setup(
        "d={tmp}/race-ext4; grep -q '^TAP version 13' $d/results.tap && ! grep -q '^not ok' $d/results.tap \
             && grep -q '<testsuites name=\"daxvmm test\" tests=\"[0-9]*\" failures=\"0\">' $d/results.xml \
             && grep -q '@@race done' $d/console.log && ! ls $d/repro 2>/dev/null \
             && ! grep -q 'no PMD mapping' $d/results.tap \
             && grep -A3 ' - truncate-signal ext4 run ' $d/results.tap | grep -q '^# ftruncate returned EINTR' \
             && grep -A6 ' - truncate-iouring-busy ext4 run ' $d/results.tap \
                | grep -q '^# io_uring fixed-buffer registration refused: EOPNOTSUPP'",
    ).needing("race_ext4").without_boot());
    cases.push(race(
        "race_virtio",
        "{tmp}/race-virtio",
        &["--fs", "ext4,xfs", "--transport", "nfit,virtio", "--scenario", VIRTIO_SCENARIOS],
    ));
    // One console per boot, and the TAP names say which transport each run had.
    cases.push(
        Case::daxvmm("race_virtio_files", ["--version"])
            .with_setup(
                "d={tmp}/race-virtio; grep -q '@@race done' $d/console-nfit.log \
                 && grep -q '@@race done' $d/console-virtio.log && [ ! -e $d/console.log ] \
                 && grep -q '^ok .* - truncate-unpin xfs virtio run ' $d/results.tap \
                 && grep -q '^ok .* - truncate-unpin xfs nfit run ' $d/results.tap \
                 && ! grep -q '^not ok' $d/results.tap",
            )
            .needing("race_virtio")
            .without_boot(),
    );
    cases.push(
        Case::daxvmm("race_poison_reports", ["--version"])
            .with_setup(&format!(
                "{} && {}",
                POISON_NOTES.map(|(s, note)| format!("{{ {} ; }}", poison_note(s, note))).join(" && "),
                poison_paths()
            ))
            .needing("race_ext4")
            .needing("race_xfs")
            .without_boot(),
    );
    cases
}

/// What the virtio-pmem run tries: truncate against an unpin in every forcible order, held inside the
/// kernel's wait, and the O_DIRECT scenario, whose raw source stays an NFIT NVDIMM.
const VIRTIO_SCENARIOS: &str = "truncate-unpin,truncate-unpin-sleeping,odirect-truncate";

/// What the guest notes in the poison scenarios' TAP output when memory failure did its job: the process
/// mapping the page was killed as a machine check in user mode kills it, the physical-address poison
/// was taken, and the kernel's verdict for the page was "Recovered" (a finding would fail the run).
const POISON_NOTES: [(&str, &str); 4] = [
    (
        "truncate-poison-mapped",
        "the process mapping the page died of SIGBUS BUS_MCEERR_AR at the address of the page",
    ),
    ("truncate-poison-mapped", "memory failure: recovery action for dax page: Recovered"),
    ("truncate-poison-busy", "hard_offline_page took the page"),
    ("truncate-poison-busy", "memory failure: recovery action for dax page: Recovered"),
];

/// Which memory-failure path each filesystem's poison takes, as the guest notes it in every poison
/// scenario: xfs (made with the reverse-mapping btree) its notify_failure, which reports the lost data as
/// a filesystem error event; ext4 the generic path, which reports none.
const POISON_PATHS: [(&str, &str); 2] = [
    (
        "xfs",
        "the filesystem reported the lost data (error event, errno 5): its notify_failure handled the poison",
    ),
    ("ext4", "no filesystem error event: the generic memory-failure path handled the poison"),
];

/// A shell check that every poison scenario's run on each filesystem noted its path of [`POISON_PATHS`].
fn poison_paths() -> String {
    let scenarios = ["truncate-poison-mapped", "truncate-poison-busy"];
    let checks = scenarios.iter().flat_map(|s| {
        POISON_PATHS.map(|(fs, note)| {
            format!(
                "{{ grep -A15 ' - {s} {fs} run ' {{tmp}}/race-{fs}/results.tap | grep -qF '# {note}' ; }}"
            )
        })
    });
    checks.collect::<Vec<_>>().join(" && ")
}

/// A shell check that scenario `s`'s run on ext4 and on xfs noted `note`.
fn poison_note(s: &str, note: &str) -> String {
    FILESYSTEMS
        .map(|fs| format!("grep -A15 ' - {s} {fs} run ' {{tmp}}/race-{fs}/results.tap | grep -qF '# {note}'"))
        .join(" && ")
}

/// What the Linux 6.12 run tries: the historical bugs (an unmapped pinned page, eviction and unmount
/// with a pin; a vmsplice reference, which needs no driver) and the controls 6.12 handles (a mapped
/// pinned page, also held inside its break-layouts wait).
const OLD_SCENARIOS: &str = "pin-munmap-truncate,truncate-unpin,truncate-unpin-busy,truncate-unpin-sleeping,\
evict-live-pin,evict-unpin-busy,umount-live-pin,vmsplice-munmap-truncate";

fn old_cases() -> Vec<Case> {
    vec![race("race_612", "{tmp}/race-612", &["--fs", "ext4,xfs", "--scenario", OLD_SCENARIOS])]
}

static BATCH: SharedBatch = SharedBatch::new(cases);
static OLD: SharedBatch = SharedBatch::with_kernel(old_cases, "DAXVMM_GUEST_KERNEL_612");

#[test]
fn every_scenario_passes_on_7_2_on_ext4_and_xfs() {
    for fs in FILESYSTEMS {
        let Some(out) = BATCH.outcome(&format!("race_{fs}")) else { return };
        // Every scenario of the library, in its order.
        for s in ScenarioId::ALL.map(ScenarioId::name) {
            let Some([tried, observed, _, skipped, violations]) = out.race_row(s, fs) else {
                panic!("no table row for {s} on {fs}: {out}")
            };
            assert!(
                tried > 0 && skipped == 0,
                "{s} on {fs}: every run must run ({tried} tried, {skipped} skipped): {out}"
            );
            assert!(observed > 0, "{s} on {fs}: no run took a complete interleaving: {out}");
            assert_eq!(violations, 0, "{s} on {fs} found violations on 7.2: {out}");
            assert_eq!(
                out.stale_windows(s, fs),
                Some(0),
                "{s} on {fs}: a new file got a pinned block: {out}"
            );
        }
        assert!(out.contains("guest boots: 1"), "{out}");
        // Every schedule the library plans is forced: no release leaves an order to timing.
        assert!(!out.contains("unforced: "), "on {fs}: {out}");
        assert_eq!(out.exit_code, 0, "on {fs}: daxvmm test must exit 0 without violations: {out}");
    }
}

#[test]
fn truncate_waits_for_the_unpin_under_forced_orders() {
    for fs in FILESYSTEMS {
        let Some(out) = BATCH.outcome(&format!("race_{fs}")) else { return };
        let [tried, observed, blocked, ..] = out.race_row("truncate-unpin", fs).expect("truncate-unpin row");
        // The 6 forcible schedules of 10 tried (the other 4 put the wait-begin event after the
        // unpinner's release, which no hold can force); the order "truncate returns, then unpin"
        // cannot happen on 7.2, so the host held the unpinner to the bound while truncate waited.
        assert_eq!(tried, 6, "{out}");
        assert!(observed >= 2, "forced schedules should give at least 2 distinct interleavings: {out}");
        assert!(blocked >= 1, "the truncate-before-unpin order must block on 7.2: {out}");
        // The order where the unpin comes while truncate waits was forced and clean.
        assert!(
            out.contains(&format!("truncate-unpin on {fs} [0.s1 0.e7 1.s1 1.s2 0.s2] observed [0.s1 0.e7 1.s1 1.s2 0.s2]: host checks clean")),
            "{out}"
        );
    }
}

/// The scenarios held inside the kernel ran their one forced schedule as scheduled: the kernel-point
/// events came in that order, on the pinned page, with the page freed inside the unpinner's window (else
/// the host reports a "hold" finding and the line does not say "host checks clean").
#[test]
fn kernel_holds_are_where_the_schedule_says() {
    let held = [
        (ScenarioId::TruncateUnpinSleeping, "0.s1 0.kbusy 1.s1 1.s2 0.ksleep 0.kwoken 0.kbroken 0.s2"),
        (ScenarioId::TruncateUnpinBusy, "0.s1 1.s1 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2"),
        (
            ScenarioId::TruncateUnpinWakeup,
            "0.s1 0.kbusy 0.ksleep 1.s1 1.kfree 1.s2 0.kwoken 0.kbroken 0.kdisassociate 0.s2",
        ),
        (ScenarioId::EvictUnpinBusy, "0.s1 1.s1 1.s2 0.kfinal-busy 0.kfinal-woken 0.kfinal-broken 0.s2"),
        (
            ScenarioId::EvictUnpinSleeping,
            "0.s1 0.kfinal-busy 1.s1 1.s2 0.kfinal-sleep 0.kfinal-woken 0.kfinal-broken 0.s2",
        ),
        (ScenarioId::PunchUnpinBusy, "0.s1 1.s1 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2"),
        (ScenarioId::PunchUnpinSleeping, "0.s1 0.kbusy 1.s1 1.s2 0.ksleep 0.kwoken 0.kbroken 0.s2"),
        (ScenarioId::TruncateTwoPages, "0.s1 1.s1 1.s2 0.kbusy 0.kwoken 2.s1 2.s2 0.ksleep 0.s2"),
        (
            ScenarioId::EvictTwoPages,
            "0.s1 1.s1 1.s2 0.kfinal-busy 0.kfinal-woken 2.s1 2.s2 0.kfinal-sleep 0.s2",
        ),
        (
            ScenarioId::TruncateLatePin,
            "0.s1 0.kbusy 0.ksleep 2.s1 2.kpte-insert 2.kgup 2.s2 1.s1 1.s2 0.kwoken 2.s3 2.s4 0.kbusy 0.s2",
        ),
        (ScenarioId::TruncateSignal, "0.s1 0.ksleep 2.s1 2.s2 0.s2 1.s1 1.s2"),
        (
            ScenarioId::PunchPmdSubpage,
            "1.s1 1.kpmd-insert 1.kgup 1.s2 0.s1 1.s3 1.s4 0.kbusy 0.kwoken 0.kbroken 0.s2",
        ),
        (ScenarioId::TruncateVmspliceBusy, "0.s1 1.s1 1.kfree 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2"),
        (ScenarioId::PunchVmspliceBusy, "0.s1 1.s1 1.kfree 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2"),
        (ScenarioId::TruncateUnpinHeld, "0.s1 1.s1 1.kunpin 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2"),
        (ScenarioId::TruncateIouringBusy, "0.s1 2.s1 2.s2 1.s1 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2"),
        (ScenarioId::PunchIouringBusy, "0.s1 2.s1 2.s2 1.s1 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2"),
        (ScenarioId::TruncateOdirectBusy, "1.s1 1.kgup 0.s1 1.kunpin 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2"),
        (ScenarioId::PunchOdirectBusy, "1.s1 1.kgup 0.s1 1.kunpin 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2"),
        (
            ScenarioId::PunchLateFault,
            "0.s1 0.kbusy 0.ksleep 2.s1 2.kpte-insert 2.s2 1.s1 1.s2 0.kwoken 0.kbroken 0.s2",
        ),
        (
            ScenarioId::TruncateForkCow,
            "0.s1 0.kbusy 0.ksleep 2.s1 2.kpte-insert 2.s2 1.s1 1.s2 0.kwoken 0.kbroken 0.s2",
        ),
        (
            ScenarioId::TruncateMremapPmd,
            "0.s1 0.kbusy 0.ksleep 2.s1 2.kpmd-insert 2.s2 1.s1 1.s2 0.kwoken 0.kbroken 0.s2",
        ),
        (
            ScenarioId::TruncateUnpinStraddle,
            "0.s1 1.s1 0.kbusy 1.kunpin 0.ksleep 1.s2 0.kwoken 0.kbroken 0.s2",
        ),
        (ScenarioId::TruncatePoisonMapped, "2.s1 2.s2 0.s1 1.s1 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2"),
        (ScenarioId::TruncatePoisonBusy, "0.s1 2.s1 2.s2 1.s1 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2"),
    ];
    for fs in FILESYSTEMS {
        let Some(out) = BATCH.outcome(&format!("race_{fs}")) else { return };
        for (id, schedule) in held {
            let line = format!("{id} on {fs} [{schedule}] observed [{schedule}]: host checks clean");
            assert!(out.contains(&line), "expected the line '{line}': {out}");
            let [tried, observed, blocked, skipped, violations] = out.race_row(id.name(), fs).expect("row");
            assert_eq!(
                (tried, observed, blocked, skipped, violations),
                (1, 1, 0, 0, 0),
                "{id} on {fs}: {out}"
            );
        }
    }
}

#[test]
fn results_are_written_as_tap_junit_and_console_log() {
    let Some(out) = BATCH.outcome("race_reports") else { return };
    assert_eq!(out.exit_code, 0, "{out}");
}

/// The race engine on both transports in one command (`--transport nfit,virtio`, a guest boot each):
/// the same scenarios pass on virtio-pmem as on the NFIT, held where their schedules say, with the
/// oracle reading the same backing; each boot has its console file and the TAP names their transport.
#[test]
fn scenarios_run_on_virtio_pmem() {
    let Some(out) = BATCH.outcome("race_virtio") else { return };
    assert!(out.contains("filesystems on virtio-pmem") && out.contains("guest boots: 2"), "{out}");
    for fs in FILESYSTEMS {
        for s in VIRTIO_SCENARIOS.split(',') {
            for t in ["nfit", "virtio"] {
                let Some([tried, observed, _, skipped, violations]) = out.race_row_on(s, fs, t) else {
                    panic!("no table row for {s} on {fs} ({t}): {out}")
                };
                assert!(tried > 0 && observed > 0 && skipped == 0 && violations == 0, "{s} on {fs}: {out}");
            }
        }
        let held = "0.s1 0.kbusy 1.s1 1.s2 0.ksleep 0.kwoken 0.kbroken 0.s2";
        let line = format!("truncate-unpin-sleeping on {fs} [{held}] observed [{held}]: host checks clean");
        assert!(out.contains(&line), "expected the line '{line}': {out}");
    }
    assert_eq!(out.exit_code, 0, "{out}");
    let files = BATCH.outcome("race_virtio_files").expect("same batch");
    assert_eq!(
        files.exit_code, 0,
        "console-nfit.log, console-virtio.log and transport names in TAP: {files}"
    );
}

/// Memory failure on a pinned fs-dax page, on ext4 and xfs: the guest's notes (see [`POISON_NOTES`]).
#[test]
fn poison_kills_the_mapping_process_and_leaves_the_pin() {
    let Some(out) = BATCH.outcome("race_poison_reports") else { return };
    assert_eq!(out.exit_code, 0, "{out}");
}

/// On 6.12 (its variant's hooks and C driver), the schedules where thread 0's operation starts before
/// the unpin are forced to let it return first, and each of them is a violation: 6.12's busy scan skips
/// a file nobody maps, and eviction and unmount never wait. The three that unpin first are clean.
#[test]
fn linux_6_12_forced_schedules_show_the_historical_bugs() {
    let Some(out) = OLD.outcome("race_612") else { return };
    assert_eq!(out.exit_code, 10, "{out}");
    assert!(out.contains("guest kernel 6.12") && out.contains("driver bound"), "{out}");
    let returned = "VIOLATION ordering: truncate or eviction returned";
    for fs in FILESYSTEMS {
        let forced = [
            (
                "pin-munmap-truncate",
                ["0.s1 0.e7 0.s2 1.s1 1.s2", "0.s1 0.e7 1.s1 0.s2 1.s2", "0.s1 0.e7 1.s1 1.s2 0.s2"],
            ),
            ("evict-live-pin", ["0.s1 0.s2 1.s1 1.s2", "0.s1 1.s1 0.s2 1.s2", "0.s1 1.s1 1.s2 0.s2"]),
            ("umount-live-pin", ["0.s1 0.s2 1.s1 1.s2", "0.s1 1.s1 0.s2 1.s2", "0.s1 1.s1 1.s2 0.s2"]),
        ];
        for (s, schedules) in forced {
            for schedule in schedules {
                let line =
                    out.console.lines().find(|l| l.contains(&format!(" {s} on {fs} [{schedule}] observed ")));
                assert!(
                    line.is_some_and(|l| l.contains(returned)),
                    "{s} on {fs} [{schedule}]: {line:?}: {out}"
                );
            }
            let [tried, _, _, skipped, violations] = out.race_row(s, fs).expect("row");
            assert_eq!((tried, skipped, violations), (6, 0, 3), "{s} on {fs}: {out}");
        }
        // The busy scan never found the unmapped page: the wait-begin event the schedule names never came.
        assert!(
            out.contains("deviation: 0.e7 skipped: its thread went on without sending that event"),
            "{out}"
        );
        // Eviction held where 7.2 waits: 6.12 never gets there.
        let [_, _, _, _, violations] = out.race_row("evict-unpin-busy", fs).expect("row");
        assert_eq!(violations, 1, "{out}");
        let [tried, _, _, _, violations] =
            out.race_row("vmsplice-munmap-truncate", fs).expect("vmsplice row");
        assert!(tried > 0 && violations > 0, "{out}");
    }
    assert!(
        out.contains("deviation: 0.kfinal-busy skipped: its thread went on without arriving there"),
        "{out}"
    );
    assert!(
        out.contains("guest: truncate returned while a vmsplice reference to the page was still held"),
        "{out}"
    );
    assert!(out.contains("dax_disassociate_entry"), "the 6.12 WARN must be reported: {out}");
}

/// The controls: 6.12 waits for a pinned page that is still mapped, under every forced order, and its
/// break-layouts wait is held exactly where the schedules say (the hooks' kernel-point events).
#[test]
fn linux_6_12_passes_the_controls_held_inside_its_wait() {
    let Some(out) = OLD.outcome("race_612") else { return };
    for fs in FILESYSTEMS {
        let [tried, _, blocked, skipped, violations] = out.race_row("truncate-unpin", fs).expect("row");
        assert_eq!((tried, skipped, violations), (6, 0, 0), "{out}");
        assert!(blocked >= 1, "truncate-before-unpin must block on a mapped page: {out}");
        let held = [
            ("truncate-unpin", "0.s1 0.e7 1.s1 1.s2 0.s2"),
            ("truncate-unpin-busy", "0.s1 1.s1 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2"),
            ("truncate-unpin-sleeping", "0.s1 0.kbusy 1.s1 1.s2 0.ksleep 0.kwoken 0.kbroken 0.s2"),
        ];
        for (s, schedule) in held {
            let line = format!("{s} on {fs} [{schedule}] observed [{schedule}]: host checks clean");
            assert!(out.contains(&line), "expected the line '{line}': {out}");
        }
    }
}
