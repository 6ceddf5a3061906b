//! `daxvmm test` and `daxvmm repro` end to end against a fake VMM: command lines, reports, errors.

use std::collections::BTreeMap;

use super::*;
use crate::oracle::Finding;

/// A VMM whose guest prints `console` and ends with `end`, and records the command lines it got.
#[derive(Debug)]
struct FakeVm {
    console: String,
    end: GuestEnd,
    cmdlines: std::sync::Mutex<Vec<String>>,
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
        Ok(crate::guest::BootOutput { end: self.end, console: self.console.clone() })
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
        transport: Transport::Nfit,
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
    let vm = FakeVm { console: clean_runs(6), end: GuestEnd::PowerOff, cmdlines: Default::default() };
    assert_eq!(test(&vm, &options(&out)).unwrap(), 0);
    assert_eq!(
        vm.cmdlines.lock().unwrap().as_slice(),
        ["console=ttyS0 loglevel=5 -- daxvmm-race --plan ext4:evict-live-pin:6 --raw /dev/pmem1"]
    );
    for f in ["results.tap", "results.xml", "console.log"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // A guest that never says hello is an error, not a pass.
    let silent = FakeVm { console: String::new(), end: GuestEnd::Reset, cmdlines: Default::default() };
    let e = test(&silent, &options(&out)).unwrap_err();
    assert!(e.to_string().contains("daxvmm-race never started (the guest: reset)"), "{e}");
    // A driver that did not bind the fault injector forced nothing: an error, not a pass.
    let unbound = FakeVm {
        console: vm.console.replace("fault=yes", "fault=no"),
        end: GuestEnd::PowerOff,
        cmdlines: Default::default(),
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
    let results = verdict::combine(&plan, &BTreeMap::new(), &guest, Some("the guest reset"));
    let boot = BootResult {
        results,
        guest,
        span: None,
        tail: vec!["last words".into()],
        transport: Transport::Nfit,
    };
    let s = summary(&boot, 1.0, 1.0);
    assert!(s.contains("crash: the guest reset during this run"), "{s}");
    assert!(s.contains("the guest console's last lines:\n  | last words\n"), "{s}");
    assert!(s.contains("1 with violations"), "{s}");
}

#[test]
fn a_shard_runs_its_part_of_the_plan_and_names_runs_by_their_place_in_the_whole() {
    let out = std::env::temp_dir().join(format!("daxvmm-race-shard-{}", std::process::id()));
    // The whole plan is the 6 schedules of evict-live-pin on ext4; shard 2/2 gets plan runs 1, 3, 5.
    let vm = FakeVm { console: clean_runs(3), end: GuestEnd::PowerOff, cmdlines: Default::default() };
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
