//! `daxvmm test` and `daxvmm repro` end to end against a fake VMM: command lines, reports, errors.

use std::collections::BTreeMap;

use super::*;
use crate::oracle::{Finding, FindingKind};

/// A VMM whose guest prints `console` (`virtio_console` instead, when given, on virtio-pmem) and ends
/// with `end`, and records the command lines and transports it got.
#[derive(Debug)]
struct FakeVm {
    console: String,
    end: GuestEnd,
    cmdlines: std::sync::Mutex<Vec<String>>,
    transports: std::sync::Mutex<Vec<Transport>>,
    virtio_console: Option<String>,
}

#[derive(Debug)]
struct NoPmem;

impl crate::guest::PmemReader for NoPmem {
    fn read(&self, _gpa: u64, _buf: &mut [u8]) -> bool {
        false
    }
}

impl GuestVm for FakeVm {
    type Pmem = NoPmem;

    fn kernel_cmdline(&self, kernel_args: &str, command: &str) -> String {
        format!("console=ttyS0{}{kernel_args} -- {command}", if kernel_args.is_empty() { "" } else { " " })
    }

    fn check_file(&self, _what: &'static str, _path: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn pmem(&self) -> Arc<NoPmem> {
        Arc::new(NoPmem)
    }

    fn boot(
        &self,
        spec: &BootSpec,
        _pmem: Arc<NoPmem>,
        _observer: Arc<dyn daxvmm_devices::fault::RunObserver>,
    ) -> anyhow::Result<crate::guest::BootOutput> {
        self.cmdlines.lock().unwrap().push(spec.cmdline.clone());
        self.transports.lock().unwrap().push(spec.transport);
        let console = match (&self.virtio_console, spec.transport) {
            (Some(c), Transport::Virtio) => c.clone(),
            _ => self.console.clone(),
        };
        Ok(crate::guest::BootOutput { end: self.end, console })
    }
}

fn options(out: &Path) -> TestOptions {
    TestOptions {
        boot: BootOptions {
            kernel: Some("/k".into()),
            initrd: Some("/i".into()),
            out: out.to_path_buf(),
            mem: 768 << 20,
            pmem_size: 1 << 30,
            timeout: Duration::from_secs(60),
            verbose: false,
        },
        scenario: vec!["evict-live-pin".into()],
        fs: vec!["ext4".into()],
        seed: 1,
        samples: 12,
        max_enumerate: 24,
        cpus: None,
        hold_bound: Duration::from_secs(2),
        sleeps: false,
        runs: 20,
        list: false,
        mutant: None,
        shard: None,
        transports: Transports::default(),
    }
}

/// The console of a guest that ran `n` runs of evict-live-pin on ext4, each clean.
fn clean_runs(n: u64) -> String {
    let mut console =
        String::from("@@race hello run=0 kernel=7.2.12 config-sha256=abc driver=yes fault=yes cpus=2\n");
    for run in 0..n {
        console.push_str(&format!(
            "@@race begin run={run} scenario=evict-live-pin fs=ext4\n@@race end run={run}\n"
        ));
    }
    console.push_str(&format!("@@race done run={n} runs={n}\n"));
    console
}

#[test]
fn a_clean_boot_without_kvm_passes_and_writes_the_reports() {
    let out = std::env::temp_dir().join(format!("daxvmm-race-runner-{}", std::process::id()));
    let vm = FakeVm {
        console: clean_runs(6),
        end: GuestEnd::PowerOff,
        cmdlines: Default::default(),
        transports: Default::default(),
        virtio_console: None,
    };
    assert_eq!(test(&vm, &options(&out)).unwrap(), 0);
    assert_eq!(
        vm.cmdlines.lock().unwrap().as_slice(),
        ["console=ttyS0 loglevel=5 -- daxvmm-race --plan ext4:evict-live-pin:6 --raw /dev/pmem1"]
    );
    for f in ["results.tap", "results.xml", "console.log"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // A guest that never says hello is an error, not a pass.
    let silent = FakeVm {
        console: String::new(),
        end: GuestEnd::Reset,
        cmdlines: Default::default(),
        transports: Default::default(),
        virtio_console: None,
    };
    let e = test(&silent, &options(&out)).unwrap_err();
    assert!(e.to_string().contains("daxvmm-race never started (the guest: reset)"), "{e}");
    // A driver that did not bind the fault injector forced nothing: an error, not a pass.
    let unbound = FakeVm {
        console: vm.console.replace("fault=yes", "fault=no"),
        end: GuestEnd::PowerOff,
        cmdlines: Default::default(),
        transports: Default::default(),
        virtio_console: None,
    };
    let e = test(&unbound, &options(&out)).unwrap_err();
    assert!(matches!(e, RaceError::NotForced { .. }), "{e}");
    // A mutant goes on the kernel's side of the command line, and the guest must confirm it.
    let mutant = TestOptions { mutant: Some("lost-wake".into()), ..options(&out) };
    let e = test(&vm, &mutant).unwrap_err();
    assert!(matches!(e, RaceError::MutantMissing { .. }), "{e}");
    assert!(e.to_string().contains("did not select mutant lost-wake (it reports: none)"), "{e}");
    assert_eq!(
        vm.cmdlines.lock().unwrap().last().unwrap(),
        "console=ttyS0 loglevel=5 daxvmm_mutant=lost-wake -- daxvmm-race --plan ext4:evict-live-pin:6 --raw /dev/pmem1"
    );
    let selected = FakeVm {
        console: vm.console.replace("cpus=2", "cpus=2 mutant=lost-wake"),
        end: GuestEnd::PowerOff,
        cmdlines: Default::default(),
        transports: Default::default(),
        virtio_console: None,
    };
    assert_eq!(test(&selected, &mutant).unwrap(), 0);
    let bogus = TestOptions { mutant: Some("no-such".into()), ..options(&out) };
    assert!(matches!(test(&vm, &bogus), Err(RaceError::UnknownMutant { .. })));
    let unknown = TestOptions { scenario: vec!["nope".into()], ..options(&out) };
    assert!(matches!(test(&vm, &unknown), Err(RaceError::UnknownScenario { .. })));
    let too_many = TestOptions { shard: Some("7/7".parse().unwrap()), ..options(&out) };
    let e = test(&vm, &too_many).unwrap_err();
    assert!(e.to_string().contains("shard 7/7 of a plan of 6 runs has none"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_replay_refuses_another_kernel_and_compares_the_kernel_event_order() {
    let out = std::env::temp_dir().join(format!("daxvmm-race-repro-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let rep = Repro {
        kernel: "/k".into(),
        initrd: "/i".into(),
        kernel_release: "7.2.12".into(),
        config_sha256: "abc".into(),
        mutant: None,
        build_id: "feed".into(),
        kernel_events: vec!["free@+0".into()],
        plan_position: None,
        scenario: "truncate-unpin".into(),
        fs: "ext4".into(),
        transport: Transport::Nfit,
        seed: None,
        schedule: "0.s1 0.e7 0.s2 1.s1 1.s2".parse().unwrap(),
        cpus: 2,
        bound_ms: 2000,
        findings: vec![Finding::new(FindingKind::Guest, "x")],
    };
    let file = out.join("r.repro");
    std::fs::write(&file, rep.render(&[], "")).unwrap();
    let console = |build: &str| {
        format!(
            "@@race hello run=0 kernel=7.2.12 config-sha256=abc driver=yes fault=yes cpus=2 build-id={build}\n\
             @@race begin run=0 scenario=truncate-unpin fs=ext4\n@@race finding run=0 x\n@@race end run=0\n\
             @@race done run=1 runs=1\n"
        )
    };
    let vm = |build: &str| FakeVm {
        console: console(build),
        end: GuestEnd::PowerOff,
        cmdlines: Default::default(),
        transports: Default::default(),
        virtio_console: None,
    };
    let opts =
        |any_kernel| ReproOptions { file: file.clone(), boot: options(&out).boot, replays: 1, any_kernel };
    let e = repro(&vm("beef"), &opts(false)).unwrap_err();
    assert!(matches!(e, RaceError::OtherKernel { .. }), "{e}");
    assert!(e.to_string().contains("build id beef now"), "{e}");
    // Told to, it compares; the fake guest sends no events, so the recorded free is missing.
    assert_eq!(repro(&vm("beef"), &opts(true)).unwrap(), EXIT_NOT_REPRODUCED);
    assert_eq!(repro(&vm("feed"), &opts(false)).unwrap(), EXIT_NOT_REPRODUCED);
    // Without recorded kernel events, the same violation is enough.
    let no_events = Repro { kernel_events: vec![], ..rep };
    std::fs::write(&file, no_events.render(&[], "")).unwrap();
    assert_eq!(repro(&vm("feed"), &opts(false)).unwrap(), 0);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_crash_report_shows_the_guest_console_tail() {
    let plan =
        vec![PlannedRun { scenario: "truncate-unpin".into(), fs: "ext4".into(), schedule: None, seed: None }];
    let text = "@@race hello run=0 kernel=7.2.12 config-sha256=abc driver=yes fault=yes cpus=2\n\
                @@race begin run=0 scenario=truncate-unpin fs=ext4\nlast words\n";
    let guest = verdict::parse_console(text);
    let results = verdict::combine(&plan, Transport::Nfit, &BTreeMap::new(), &guest, Some("the guest reset"));
    let boot = BootResult {
        results,
        guest,
        span: None,
        tail: vec!["last words".into()],
        transport: Transport::Nfit,
        elapsed: Duration::from_secs(1),
    };
    let s = merge::summary(&[boot], 1.0);
    assert!(s.contains("crash: the guest reset during this run"), "{s}");
    assert!(s.contains("the guest console's last lines:\n  | last words\n"), "{s}");
    assert!(s.contains("1 with violations"), "{s}");
}

#[test]
fn a_shard_runs_its_part_of_the_plan_and_names_runs_by_their_place_in_the_whole() {
    let out = std::env::temp_dir().join(format!("daxvmm-race-shard-{}", std::process::id()));
    // The whole plan is the 6 schedules of evict-live-pin on ext4; shard 2/2 gets plan runs 1, 3, 5.
    let vm = FakeVm {
        console: clean_runs(3),
        end: GuestEnd::PowerOff,
        cmdlines: Default::default(),
        transports: Default::default(),
        virtio_console: None,
    };
    let second = TestOptions { shard: Some("2/2".parse().unwrap()), ..options(&out) };
    assert_eq!(test(&vm, &second).unwrap(), 0);
    assert_eq!(
        vm.cmdlines.lock().unwrap().as_slice(),
        ["console=ttyS0 loglevel=5 -- daxvmm-race --plan ext4:evict-live-pin:3 --raw /dev/pmem1"]
    );
    let junit = std::fs::read_to_string(out.join("results.xml")).unwrap();
    let runs: Vec<&str> = junit.match_indices(" run ").map(|(i, _)| &junit[i + 5..i + 6]).collect();
    assert_eq!(runs, ["1", "3", "5"], "{junit}");
    // The schedules are the whole plan's odd-numbered ones, in order.
    let entry = find_scenario("evict-live-pin").unwrap();
    let all =
        plan::build(&[entry], &["ext4".to_string()], Choice::Forced { limit: 24, samples: 12, seed: 1 });
    for (k, r) in all.iter().enumerate().filter(|(k, _)| k % 2 == 1) {
        let name = format!("run {k} [{}]", r.schedule.as_ref().unwrap());
        assert!(junit.contains(&name), "{name} in {junit}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// A fake VMM whose guest prints `console`, and `virtio_console` when booted on virtio-pmem.
fn fake(console: String, end: GuestEnd, virtio_console: Option<String>) -> FakeVm {
    FakeVm { console, end, cmdlines: Default::default(), transports: Default::default(), virtio_console }
}

/// The console of a guest that ran `n` runs of evict-live-pin on ext4, run `bad` with a guest finding.
fn runs_with_finding(n: u64, bad: u64) -> String {
    clean_runs(n).replace(
        &format!("@@race end run={bad}\n"),
        &format!("@@race finding run={bad} lost the pin\n@@race end run={bad}\n"),
    )
}

/// A fresh results directory named after `what`.
fn fresh_out(what: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("daxvmm-race-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    out
}

/// The run numbers of the TAP points, in order.
fn tap_runs(tap: &str) -> Vec<u64> {
    tap.lines().filter_map(|l| l.split(" run ").nth(1)?.split(' ').next()?.parse().ok()).collect()
}

#[test]
fn two_transports_boot_twice_and_merge_their_results() {
    let out = fresh_out("transports");
    let vm = fake(runs_with_finding(6, 2), GuestEnd::PowerOff, Some(runs_with_finding(6, 1)));
    let both = TestOptions { transports: "nfit,virtio".parse().unwrap(), ..options(&out) };
    let (code, s) = test_session(&vm, &both).unwrap();
    assert_eq!(code, EXIT_VIOLATIONS, "{s}");
    // One boot per transport, in the order given, each running the whole plan.
    assert_eq!(vm.transports.lock().unwrap().as_slice(), [Transport::Nfit, Transport::Virtio]);
    assert_eq!(
        vm.cmdlines.lock().unwrap().as_slice(),
        [
            "console=ttyS0 loglevel=5 -- daxvmm-race --plan ext4:evict-live-pin:6 --raw /dev/pmem1",
            "console=ttyS0 loglevel=5 -- daxvmm-race --plan ext4:evict-live-pin:6 --dev virtio --raw nfit"
        ]
    );
    // The second boot's runs are numbered after the whole plan of the first.
    let tap = std::fs::read_to_string(out.join("results.tap")).unwrap();
    assert!(tap.starts_with("TAP version 13\n1..12\n"), "{tap}");
    assert_eq!(tap_runs(&tap), (0..12).collect::<Vec<u64>>(), "{tap}");
    assert!(tap.contains("\nok 1 - evict-live-pin ext4 nfit run 0 ["), "{tap}");
    assert!(tap.contains("\nnot ok 3 - evict-live-pin ext4 nfit run 2 ["), "{tap}");
    assert!(tap.contains("\nnot ok 8 - evict-live-pin ext4 virtio run 7 ["), "{tap}");
    assert_eq!(tap.matches("not ok").count(), 2, "{tap}");
    let junit = std::fs::read_to_string(out.join("results.xml")).unwrap();
    assert!(
        junit.contains("<testsuite name=\"evict-live-pin.ext4.nfit\" tests=\"6\" failures=\"1\""),
        "{junit}"
    );
    assert!(junit.contains(
        "<testcase classname=\"evict-live-pin.ext4.virtio\" name=\"evict-live-pin ext4 virtio run 11 ["
    ));
    // A console file per boot, none overwriting the other.
    assert!(std::fs::read_to_string(out.join("console-nfit.log")).unwrap().contains("finding run=2"));
    assert!(std::fs::read_to_string(out.join("console-virtio.log")).unwrap().contains("finding run=1"));
    assert!(!out.join("console.log").exists());
    // Each repro file records the transport of its own run, and its place in its boot's plan.
    let nfit = std::fs::read_to_string(out.join("repro/evict-live-pin-ext4-run2.repro")).unwrap();
    assert!(nfit.contains("transport: nfit\n") && nfit.contains("plan-position: run 2 of 6\n"), "{nfit}");
    let virtio = std::fs::read_to_string(out.join("repro/evict-live-pin-ext4-run7.repro")).unwrap();
    assert!(
        virtio.contains("transport: virtio\n") && virtio.contains("plan-position: run 1 of 6\n"),
        "{virtio}"
    );
    assert_eq!(std::fs::read_dir(out.join("repro")).unwrap().count(), 2);
    // The summary: a guest kernel line per boot, a row per transport, the violations named with theirs.
    assert!(
        s.contains("guest kernel 7.2.12 (config sha256 abc), driver bound, filesystems on an NFIT NVDIMM\n"),
        "{s}"
    );
    assert!(
        s.contains("guest kernel 7.2.12 (config sha256 abc), driver bound, filesystems on virtio-pmem\n"),
        "{s}"
    );
    assert!(s.contains("\nevict-live-pin  ext4  nfit           6 "), "{s}");
    assert!(s.contains("\nevict-live-pin  ext4  virtio         6 "), "{s}");
    assert!(s.contains("VIOLATION run 2 evict-live-pin on ext4 (nfit):\n"), "{s}");
    assert!(s.contains("VIOLATION run 7 evict-live-pin on ext4 (virtio):\n"), "{s}");
    assert!(s.contains("12 runs in "), "{s}");
    assert!(s.contains("2 with violations, 0 skipped; guest boots: 2\n"), "{s}");
    let written = format!(
        "results: {}/results.tap, results.xml, console-nfit.log, console-virtio.log\n",
        out.display()
    );
    assert!(s.contains(&written), "{s}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn shards_of_two_transports_still_merge() {
    // Shard 2/2 of plan runs 0..6 on each transport: 1, 3, 5 on nfit, 7, 9, 11 on virtio.
    let out = fresh_out("transport-shard");
    let vm = fake(clean_runs(3), GuestEnd::PowerOff, None);
    let second = TestOptions {
        shard: Some("2/2".parse().unwrap()),
        transports: "nfit,virtio".parse().unwrap(),
        ..options(&out)
    };
    let (code, s) = test_session(&vm, &second).unwrap();
    assert_eq!(code, 0, "{s}");
    let tap = std::fs::read_to_string(out.join("results.tap")).unwrap();
    assert_eq!(tap_runs(&tap), [1, 3, 5, 7, 9, 11], "{tap}");
    let first = fresh_out("transport-shard-1");
    let one = TestOptions { shard: Some("1/2".parse().unwrap()), ..second.clone() };
    let one = TestOptions { boot: BootOptions { out: first.clone(), ..one.boot.clone() }, ..one };
    test_session(&vm, &one).unwrap();
    let tap = std::fs::read_to_string(first.join("results.tap")).unwrap();
    assert_eq!(tap_runs(&tap), [0, 2, 4, 6, 8, 10], "{tap}");
    assert!(s.contains("run k of the whole plan of 6 runs on transport t (from 0) is run k + t*6"), "{s}");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&first);
}

#[test]
fn a_failed_boot_on_one_transport_fails_the_session() {
    let out = fresh_out("transport-fail");
    // The virtio guest never starts: its error, naming its own console file, ends the session.
    let vm = fake(clean_runs(6), GuestEnd::Reset, Some(String::new()));
    let both = TestOptions { transports: "nfit,virtio".parse().unwrap(), ..options(&out) };
    let e = test_session(&vm, &both).unwrap_err();
    assert!(matches!(e, RaceError::NeverStarted { .. }), "{e}");
    assert!(e.to_string().contains("console-virtio.log"), "{e}");
    assert!(out.join("console-nfit.log").is_file());
    // Virtio first: the session stops at its boot.
    let vm = fake(clean_runs(6), GuestEnd::Reset, Some(String::new()));
    let first = TestOptions { transports: "virtio,nfit".parse().unwrap(), ..options(&out) };
    assert!(matches!(test_session(&vm, &first), Err(RaceError::NeverStarted { .. })));
    assert_eq!(vm.transports.lock().unwrap().as_slice(), [Transport::Virtio]);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn one_transport_keeps_console_log_and_its_run_numbers() {
    for (transport, on) in [(Transport::Nfit, ""), (Transport::Virtio, ", filesystems on virtio-pmem")] {
        let out = fresh_out(&format!("transport-one-{transport}"));
        let vm = fake(runs_with_finding(6, 4), GuestEnd::PowerOff, None);
        let one = TestOptions { transports: Transports::one(transport), ..options(&out) };
        let (code, s) = test_session(&vm, &one).unwrap();
        assert_eq!(code, EXIT_VIOLATIONS, "{s}");
        assert_eq!(vm.transports.lock().unwrap().as_slice(), [transport]);
        let tap = std::fs::read_to_string(out.join("results.tap")).unwrap();
        assert_eq!(tap_runs(&tap), (0..6).collect::<Vec<u64>>(), "{tap}");
        // The names are the ones a one-transport session always had.
        assert!(tap.contains("\nnot ok 5 - evict-live-pin ext4 run 4 ["), "{tap}");
        let junit = std::fs::read_to_string(out.join("results.xml")).unwrap();
        assert!(
            junit.contains("<testcase classname=\"evict-live-pin.ext4\" name=\"evict-live-pin ext4 run 0 [")
        );
        assert!(out.join("console.log").is_file());
        assert!(!out.join(format!("console-{transport}.log")).exists());
        let rep = std::fs::read_to_string(out.join("repro/evict-live-pin-ext4-run4.repro")).unwrap();
        assert!(rep.contains(&format!("transport: {transport}\n")), "{rep}");
        assert!(s.contains(&format!("guest kernel 7.2.12 (config sha256 abc), driver bound{on}\n")), "{s}");
        assert!(s.contains(&format!("\nevict-live-pin  ext4  {transport:<9}      6 ")), "{s}");
        assert!(s.contains(&format!("VIOLATION run 4 evict-live-pin on ext4 ({transport}):\n")), "{s}");
        assert!(s.contains("; guest boots: 1\n") && s.contains(" with the boot, "), "{s}");
        assert!(
            s.contains(&format!("results: {}/results.tap, results.xml, console.log\n", out.display())),
            "{s}"
        );
        assert!(!s.contains("transports"), "{s}");
        let _ = std::fs::remove_dir_all(&out);
    }
}
