//! A whole `daxvmm test` boot with an arbitrary guest, through the race crate's public runner
//! (`daxvmm_race::test` with a fake VMM, as its unit tests drive it): the fake guest sends arbitrary
//! fault-injector traffic (run-begin/run-end and other events, sync reads, raw MMIO) through a real
//! `FaultDevice` whose injector reports to the runner's run observer (`race/src/session.rs`: it arms the
//! planned schedules and runs the oracle, `oracle.rs` and `holds.rs`), and prints an arbitrary console
//! (`@@race` protocol lines, kernel warnings, any text), which the runner parses (`verdict.rs`), judges,
//! reports (table, TAP, JUnit) and writes repro files from. It must never panic; and every repro file it
//! writes must load again with `daxvmm repro` (the round trip: format, then parse).
//!
//! Input: six header bytes (scenario, filesystems, baseline mode, how the guest ends, plan size, seed,
//! the greeting's fields, the pmem contents, the shard and the transports), then operations (see `guest`
//! and `console_op`); with two transports the guest runs the same operations in each boot. Files go to
//! a per-process directory under /dev/shm (or the temporary directory), removed at exit.
#![no_main]

mod scratch;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use daxvmm_devices::fault::{
    sync_offset, Event, EventCode, FaultDevice, FaultInjector, KernelPoint, RunObserver, EVENT_OFFSET,
    THREAD_ANY,
};
use daxvmm_race::{
    library, repro, test, BootOptions, BootOutput, BootSpec, GuestEnd, GuestVm, PmemReader, RaceError,
    ReproOptions, TestOptions, EXIT_VIOLATIONS, MUTANTS,
};
use libfuzzer_sys::fuzz_target;

/// Guest pmem for the oracle: the first MiB reads as `fill`, the rest is out of reach.
#[derive(Debug)]
struct Pmem {
    fill: u8,
}

impl PmemReader for Pmem {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let ok = gpa.checked_add(buf.len() as u64).is_some_and(|end| end <= 1 << 20);
        if ok {
            buf.fill(self.fill);
        }
        ok
    }
}

/// A VMM whose guest runs `ops` against the fault injector and prints `console` (built as the ops run).
struct FuzzVm<'a> {
    ops: &'a [u8],
    /// The plan's scenario names, for `@@race begin` lines.
    scenario: String,
    fs: String,
    end: GuestEnd,
    fill: u8,
    /// The greeting, if the guest says hello.
    hello: Option<String>,
    done: bool,
}

/// Takes one byte (0 when the input has run out).
fn byte(ops: &mut &[u8]) -> u8 {
    let (b, rest) = ops.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
    *ops = rest;
    b
}

/// Takes up to `n` bytes, decoded lossily.
fn text(ops: &mut &[u8], n: usize) -> String {
    let (t, rest) = ops.split_at(n.min(ops.len()));
    *ops = rest;
    String::from_utf8_lossy(t).into_owned()
}

const KINDS: [&str; 7] = ["hello", "begin", "end", "finding", "note", "skip", "done"];
const KERNEL_LINES: [&str; 6] = [
    "[   12.5] WARNING: CPU: 1 PID: 80 at fs/dax.c:380 dax_disassociate_entry+0x9c/0xb0",
    "[    3.1] BUG: KASAN: use-after-free in dax_",
    "INFO: task truncate:81 blocked for more than 120 seconds.",
    "Kernel panic - not syncing: ",
    "[",
    "]",
];

impl FuzzVm<'_> {
    fn guest(&self, dev: &FaultDevice) -> String {
        let mut console = self.hello.clone().unwrap_or_default();
        let mut ops = self.ops;
        let event = |code: EventCode, thread: u8, pfn: u64, detail: u16, vcpu: u8| {
            if let Some(ev) = Event::with_pfn(code, thread, pfn, detail) {
                dev.mmio_write(Some(vcpu), EVENT_OFFSET, &ev.encode().to_le_bytes());
            }
        };
        while let Some((&op, rest)) = ops.split_first() {
            ops = rest;
            match op % 8 {
                0 => {
                    let run = u64::from(byte(&mut ops) % 8);
                    event(EventCode::RunBegin, THREAD_ANY, run, 0, 0);
                    console.push_str(&format!(
                        "@@race begin run={run} scenario={} fs={}\n",
                        self.scenario, self.fs
                    ));
                }
                1 => {
                    let run = u64::from(byte(&mut ops) % 8);
                    event(EventCode::RunEnd, THREAD_ANY, run, 0, 0);
                    console.push_str(&format!("@@race end run={run}\n"));
                }
                2 => {
                    let code = EventCode::ALL[usize::from(byte(&mut ops)) % EventCode::ALL.len()];
                    let t = byte(&mut ops);
                    let thread = if t & 0x80 != 0 { THREAD_ANY } else { t % 4 };
                    let p = byte(&mut ops);
                    let pfn = if p & 0x80 != 0 { 0x10_0000 + u64::from(p) } else { u64::from(p % 16) };
                    let d = byte(&mut ops);
                    let detail = if code == EventCode::KernelPoint {
                        KernelPoint::ALL[usize::from(d) % KernelPoint::ALL.len()].id()
                    } else {
                        u16::from(d) | u16::from(byte(&mut ops) & 0xf) << 8
                    };
                    event(code, thread, pfn, detail, t & 7);
                }
                3 => {
                    let thread = byte(&mut ops) % 4;
                    let p = byte(&mut ops);
                    let point = if p & 0x80 != 0 {
                        KernelPoint::ALL[usize::from(p) % KernelPoint::ALL.len()].sync_id()
                    } else {
                        u16::from(p % 5)
                    };
                    if let Some(offset) = sync_offset(thread, point) {
                        let mut buf = [0u8; 8];
                        dev.mmio_read(Some(thread), offset, &mut buf);
                    }
                }
                4 => {
                    let offset = u64::from(u16::from_le_bytes([byte(&mut ops), byte(&mut ops)]));
                    let s = byte(&mut ops);
                    let mut value = [0u8; 8];
                    value.iter_mut().for_each(|b| *b = byte(&mut ops));
                    let size = usize::from(s % 8) + 1;
                    if s & 0x80 != 0 {
                        dev.mmio_write(Some(0), offset, &value[..size]);
                    } else {
                        dev.mmio_read(Some(0), offset, &mut value[..size]);
                    }
                }
                5 => {
                    let kind = KINDS[usize::from(byte(&mut ops)) % KINDS.len()];
                    let run = byte(&mut ops) % 8;
                    let n = usize::from(byte(&mut ops) % 32);
                    let t = text(&mut ops, n);
                    console.push_str(&format!("@@race {kind} run={run} {t}\n"));
                }
                6 => {
                    let line = KERNEL_LINES[usize::from(byte(&mut ops)) % KERNEL_LINES.len()];
                    let n = usize::from(byte(&mut ops) % 16);
                    let t = text(&mut ops, n);
                    console.push_str(&format!("{line}{t}\n"));
                }
                _ => {
                    let n = usize::from(byte(&mut ops) % 64);
                    console.push_str(&text(&mut ops, n));
                }
            }
        }
        if self.done {
            console.push_str("\n@@race done run=8 runs=8\n");
        }
        console
    }
}

impl GuestVm for FuzzVm<'_> {
    type Pmem = Pmem;

    fn kernel_cmdline(&self, kernel_args: &str, command: &str) -> String {
        format!("console=ttyS0 {kernel_args} -- {command}")
    }

    fn check_file(&self, _what: &'static str, _path: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn pmem(&self) -> Arc<Pmem> {
        Arc::new(Pmem { fill: self.fill })
    }

    fn boot(
        &self,
        _spec: &BootSpec,
        _pmem: Arc<Pmem>,
        observer: Arc<dyn RunObserver>,
    ) -> anyhow::Result<BootOutput> {
        // A 1 ms hold bound and no hold slice: a held sync read returns at once, and times out soon.
        let injector = Arc::new(FaultInjector::new(256, Duration::from_millis(1)));
        injector.set_observer(observer);
        let dev = FaultDevice::new(injector.clone(), Duration::ZERO);
        let console = self.guest(&dev);
        injector.disarm();
        Ok(BootOutput { end: self.end, console })
    }
}

/// A guest for replaying: it never starts, which is enough to know the repro file loaded.
struct Silent;

impl GuestVm for Silent {
    type Pmem = Pmem;

    fn kernel_cmdline(&self, kernel_args: &str, command: &str) -> String {
        format!("{kernel_args} -- {command}")
    }

    fn check_file(&self, _what: &'static str, _path: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn pmem(&self) -> Arc<Pmem> {
        Arc::new(Pmem { fill: 0 })
    }

    fn boot(
        &self,
        _spec: &BootSpec,
        _pmem: Arc<Pmem>,
        _obs: Arc<dyn RunObserver>,
    ) -> anyhow::Result<BootOutput> {
        Ok(BootOutput { end: GuestEnd::PowerOff, console: String::new() })
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let h: [u8; 6] = std::array::from_fn(|_| byte(&mut input));
    let lib = library();
    let entry = &lib[usize::from(h[0]) % lib.len()];
    let fs: Vec<String> = match h[1] & 3 {
        0 => vec!["ext4".into()],
        1 => vec!["xfs".into()],
        _ => vec!["ext4".into(), "xfs".into()],
    };
    let end = match (h[1] >> 3) & 7 {
        1 => GuestEnd::GuestFailed(h[3] | 1),
        2 => GuestEnd::Panic(1),
        3 => GuestEnd::Reset,
        4 => GuestEnd::Timeout,
        5 => GuestEnd::Signal(15),
        _ => GuestEnd::PowerOff,
    };
    let mutant = (h[4] & 0x40 != 0).then(|| MUTANTS[usize::from(h[3]) % MUTANTS.len()].name);
    let hello = (h[1] & 0x40 == 0).then(|| {
        let build = ["", " build-id=feed", " build-id=0a1B", " build-id=xyz"][usize::from(h[4] >> 2 & 3)];
        let says = match h[4] >> 4 & 3 {
            0 => String::new(),
            1 => " mutant=none".into(),
            2 => format!(" mutant={}", mutant.unwrap_or(MUTANTS[0].name)),
            _ => " mutant=bogus".into(),
        };
        format!(
            "@@race hello run=0 kernel=7.2.12 config-sha256=abc driver={} fault={} cpus=2{build}{says}\n",
            if h[4] & 1 != 0 { "yes" } else { "no" },
            if h[4] & 2 == 0 { "yes" } else { "no" },
        )
    });
    let vm = FuzzVm {
        ops: input,
        scenario: entry.scenario.name().to_string(),
        fs: fs[0].clone(),
        end,
        fill: h[5],
        hello,
        done: h[1] & 0x80 != 0,
    };
    let dir = scratch::dir("race-session");
    let _ = std::fs::remove_dir_all(dir.join("repro"));
    let boot = BootOptions {
        kernel: Some("/k".into()),
        initrd: Some("/i".into()),
        out: dir.clone(),
        mem: 768 << 20,
        pmem_size: 1 << 30,
        timeout: Duration::from_secs(60),
        verbose: false,
    };
    let opts = TestOptions {
        boot: boot.clone(),
        scenario: vec![entry.scenario.name().to_string()],
        fs,
        seed: u64::from(h[3]),
        samples: 1 + usize::from(h[2] & 3),
        max_enumerate: usize::from(h[2] >> 2 & 7),
        cpus: (h[2] & 0x80 != 0).then_some(h[3] % 8 + 1),
        hold_bound: Duration::from_millis(1),
        sleeps: h[1] & 4 != 0,
        runs: 1 + usize::from(h[2] >> 5 & 3),
        list: false,
        mutant: mutant.map(String::from),
        // Sometimes part 1 or 2 of 2, so repro files of sharded runs (whole-plan run numbers) are
        // replayed too.
        shard: match h[5] >> 6 {
            1 => "1/2".parse().ok(),
            2 => "2/2".parse().ok(),
            _ => None,
        },
        // Either transport or both in either order (two boots, merged), so repro files carry either and
        // run numbers go past one plan.
        transports: ["nfit", "virtio", "nfit,virtio", "virtio,nfit"][usize::from(h[5] & 3)]
            .parse()
            .unwrap_or_default(),
    };
    if !matches!(test(&vm, &opts), Ok(EXIT_VIOLATIONS)) {
        return;
    }
    // Every repro file daxvmm test wrote must load, and name a scenario and schedule that fit.
    let Ok(files) = std::fs::read_dir(dir.join("repro")) else { return };
    for f in files.flatten() {
        let file = f.path();
        let again = ReproOptions { file: file.clone(), boot: boot.clone(), replays: 1, any_kernel: true };
        match repro(&Silent, &again) {
            Err(
                e @ (RaceError::Repro(_) | RaceError::ReproScenario(_) | RaceError::ReproSchedule { .. }),
            ) => {
                panic!(
                    "daxvmm test wrote a repro file daxvmm repro refuses: {e}\n--- {}:\n{}",
                    file.display(),
                    std::fs::read_to_string(&file).unwrap_or_default()
                )
            }
            _ => {}
        }
    }
});
