//! `daxvmm run`: the guest run (or `--repeat` runs) the command line asks for, and the exit code its
//! outcome means (docs/guest-interface.md).

use std::time::Instant;

use crate::cli::run::{host_ram, RunArgs};
use crate::footprint;
use crate::vm::{self, Outcome, VmConfig};

/// daxvmm could not start or run the guest.
pub const EXIT_ERROR: u8 = 1;
const EXIT_PANIC: u8 = 3;
const EXIT_TIMEOUT: u8 = 4;
const EXIT_RESET: u8 = 5;
const EXIT_GUEST_FAILED: u8 = 6;

/// Boots the guest of `args` (`--repeat` times, checking after each run that it left nothing behind);
/// the last run's outcome. `started`: when the process started, for the boot-time log.
pub fn run(args: &RunArgs, started: Instant) -> anyhow::Result<Outcome> {
    args.validate(host_ram())?;
    let cfg = VmConfig {
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        cmdline: args.kernel_cmdline(),
        mem: args.mem,
        cpus: args.cpus,
        timeout: args.timeout,
        timeout_after_init: args.timeout_after_init,
        xsave: args.xsave.policy(),
        pmem: args.pmem.clone(),
        disks: args.disk.clone(),
        fault_schedule: args.fault_schedule.clone(),
        seccomp: args.seccomp,
        last_run: args.repeat == 1,
        race: None,
        console: None,
    };
    cfg.check()?;
    if args.repeat == 1 {
        return Ok(vm::run(&cfg, started)?);
    }
    let mut tracker = footprint::Tracker::default();
    let mut outcome = Outcome::PowerOff;
    for run in 1..=args.repeat {
        let run_started = if run == 1 { started } else { Instant::now() };
        outcome = vm::run(&cfg, run_started)?;
        log::info!("repeat: run {run} of {} ended: {outcome}", args.repeat);
        if let Some(now) = footprint::measure() {
            log::debug!("repeat: after run {run}: {now}");
            tracker.after_run(now)?;
        }
        if matches!(outcome, Outcome::Signal(_)) {
            break;
        }
    }
    log::info!("{}", tracker.summary());
    Ok(outcome)
}

/// The exit code of a run that ended with `outcome`, after logging how it ended.
pub fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::PowerOff => {
            log::info!("guest powered off");
            0
        }
        Outcome::GuestFailed(s) => {
            log::info!("guest powered off after reporting exit status {s}");
            EXIT_GUEST_FAILED
        }
        Outcome::Panic(v) => {
            log::error!("guest kernel panicked (pvpanic {v:#x})");
            EXIT_PANIC
        }
        Outcome::Reset => {
            log::info!("guest reset");
            EXIT_RESET
        }
        Outcome::Signal(sig) => {
            log::info!("stopped by signal {sig}");
            128u8.saturating_add(sig)
        }
        Outcome::Timeout => {
            log::error!("timeout: the guest was still running; stopped it");
            EXIT_TIMEOUT
        }
    }
}
