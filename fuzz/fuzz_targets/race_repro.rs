//! Repro files from arbitrary bytes, through `daxvmm repro` as the race crate exposes it
//! (`daxvmm_race::repro` with a fake VMM, as its own unit tests drive it): the file is read and parsed
//! (`race/src/repro.rs`), its scenario and schedule checked, and, when it is good, the replay runs
//! against a fake guest whose console shows one violation per replay and the comparison is made. It must
//! never panic, whatever the file holds; a bad file is an error, never a crash.
//!
//! Input: a mode byte (bit 0: the rest is the whole file; else the rest, as lines, goes between the
//! header line and a valid file's fields, so its lines override them; bit 1: --any-kernel; bits 2-7:
//! which scenario the valid fields name), then the text (decoded lossily to UTF-8). Files go to a
//! per-process directory under /dev/shm (or the temporary directory), removed at exit.
#![no_main]

mod scratch;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use daxvmm_devices::fault::RunObserver;
use daxvmm_race::{
    library, repro, BootOptions, BootOutput, BootSpec, GuestEnd, GuestVm, PmemReader, ReproOptions, MUTANTS,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug)]
struct NoPmem;

impl PmemReader for NoPmem {
    fn read(&self, _gpa: u64, _buf: &mut [u8]) -> bool {
        false
    }
}

/// A VMM whose guest prints `console` and powers off.
struct FakeVm {
    console: String,
}

impl GuestVm for FakeVm {
    type Pmem = NoPmem;

    fn kernel_cmdline(&self, kernel_args: &str, command: &str) -> String {
        format!("console=ttyS0 {kernel_args} -- {command}")
    }

    fn check_file(&self, _what: &'static str, _path: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn pmem(&self) -> Arc<NoPmem> {
        Arc::new(NoPmem)
    }

    fn boot(
        &self,
        _spec: &BootSpec,
        _pmem: Arc<NoPmem>,
        _obs: Arc<dyn RunObserver>,
    ) -> anyhow::Result<BootOutput> {
        Ok(BootOutput { end: GuestEnd::PowerOff, console: self.console.clone() })
    }
}

/// The console of a guest that replays `replays` runs, each with a guest finding.
fn console(replays: usize) -> String {
    let mut c = String::from(
        "@@race hello run=0 kernel=7.2.12 config-sha256=abc driver=yes fault=yes cpus=2 build-id=feed\n",
    );
    for run in 0..replays {
        c.push_str(&format!(
            "@@race begin run={run} scenario=x fs=ext4\n@@race finding run={run} x\n@@race end run={run}\n"
        ));
    }
    c.push_str(&format!("@@race done run={replays} runs={replays}\n"));
    c
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let fuzz = String::from_utf8_lossy(rest);
    let text = if mode & 1 == 1 {
        fuzz.into_owned()
    } else {
        let lib = library();
        let entry = &lib[usize::from(mode >> 2) % lib.len()];
        let mutant = MUTANTS.get(usize::from(mode >> 2) % (MUTANTS.len() + 1)).map_or("none", |m| m.name);
        format!(
            "format: daxvmm-repro 1\n{fuzz}\nkernel: /k\ninitrd: /i\nkernel-release: 7.2.12\n\
             kernel-config-sha256: abc\nmutant: {mutant}\nkernel-build-id: feed\nscenario: {}\nfs: ext4\n\
             seed: 1\nschedule: {}\ncpus: 2\nhold-bound-ms: 2000\nplan-position: run 0 of 1\n\
             kernel-events: none\nfinding: guest: x\n== fault log\n",
            entry.scenario.name(),
            entry.scenario.sample(u64::from(mode)),
        )
    };
    let dir = scratch::dir("race-repro");
    let file = dir.join("fuzz.repro");
    if std::fs::write(&file, text.as_bytes()).is_err() {
        return;
    }
    let replays = 1 + usize::from(mode >> 6);
    let opts = ReproOptions {
        file,
        boot: BootOptions {
            kernel: None,
            initrd: None,
            out: dir.clone(),
            mem: 768 << 20,
            pmem_size: 1 << 30,
            timeout: Duration::from_secs(60),
            verbose: false,
        },
        replays,
        any_kernel: mode & 2 != 0,
    };
    let _ = repro(&FakeVm { console: console(replays) }, &opts);
});
