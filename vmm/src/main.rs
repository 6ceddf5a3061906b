//! daxvmm: boots a Linux guest under KVM for fs-dax refcount testing. This file owns only the process:
//! parsing the command line, logging, and turning the run's outcome into the documented exit code.

mod acpi_setup;
mod boot;
mod cli;
mod console;
mod exit;
mod footprint;
mod kvm_host;
mod machine;
mod main_loop;
mod memory;
mod pmem;
mod procfs;
mod race;
mod signals;
mod units;
mod vcpu;
mod vm;

use std::time::Instant;

use clap::Parser;

use crate::boot::cpuid::XsavePolicy;
use crate::cli::Cli;
use crate::vm::{Outcome, VmConfig};

/// Exit codes (docs/guest-interface.md).
const EXIT_ERROR: u8 = 1;
const EXIT_PANIC: u8 = 3;
const EXIT_TIMEOUT: u8 = 4;
const EXIT_RESET: u8 = 5;
const EXIT_GUEST_FAILED: u8 = 6;

fn main() {
    let started = Instant::now();
    // In every thread from the start: a termination signal waits for a run's main loop to read it.
    signals::block();
    let args: Vec<String> = std::env::args().collect();
    if matches!(args.get(1).map(String::as_str), Some("test" | "repro")) {
        let code = race::main(args);
        console::release_held_logs();
        std::process::exit(i32::from(code));
    }
    let cli = Cli::parse();
    init_logging(cli.log_level);
    let code = match run(&cli, started) {
        Ok(outcome) => exit_code(outcome),
        Err(e) => {
            console::restore_terminal();
            // One line, whatever the chain: users grep for it.
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            log::error!("{}", chain.join(": "));
            EXIT_ERROR
        }
    };
    console::restore_terminal();
    console::release_held_logs();
    std::process::exit(i32::from(code))
}

/// daxvmm's log: "daxvmm: " lines on stderr, kept out of the middle of guest console lines.
fn init_logging(level: log::LevelFilter) {
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("RUST_LOG")
        .format(|buf, rec| {
            use std::io::Write;
            writeln!(buf, "daxvmm: {}{}", level_prefix(rec.level()), rec.args())
        })
        .target(env_logger::Target::Pipe(Box::new(console::LogWriter)))
        .init();
}

fn level_prefix(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error: ",
        log::Level::Warn => "warning: ",
        _ => "",
    }
}

fn run(cli: &Cli, started: Instant) -> anyhow::Result<Outcome> {
    cli.validate(cli::host_ram())?;
    let cfg = VmConfig {
        kernel: cli.kernel.clone(),
        initrd: cli.initrd.clone(),
        cmdline: cli.kernel_cmdline(),
        mem: cli.mem,
        cpus: cli.cpus,
        timeout: cli.timeout,
        xsave: xsave_policy(cli.xsave),
        pmem: cli.pmem.clone(),
        fault_schedule: cli.fault_schedule.clone(),
        race: None,
    };
    check_config(&cfg)?;
    if cli.repeat == 1 {
        return Ok(vm::run(&cfg, started)?);
    }
    let mut tracker = footprint::Tracker::default();
    let mut outcome = Outcome::PowerOff;
    for run in 1..=cli.repeat {
        let run_started = if run == 1 { started } else { Instant::now() };
        outcome = vm::run(&cfg, run_started)?;
        log::info!("repeat: run {run} of {} ended: {}", cli.repeat, outcome_text(outcome));
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

fn outcome_text(outcome: Outcome) -> String {
    match outcome {
        Outcome::PowerOff => "powered off".into(),
        Outcome::GuestFailed(s) => format!("powered off, guest exit status {s}"),
        Outcome::Panic(_) => "guest kernel panic".into(),
        Outcome::Reset => "reset".into(),
        Outcome::Timeout => "timeout".into(),
        Outcome::Signal(sig) => format!("signal {sig}"),
    }
}

/// Checks of a run that need no KVM: the kernel image, and pmem placement (overlaps, alignment, too
/// many), so these errors come before KVM or any file is touched.
fn check_config(cfg: &VmConfig) -> anyhow::Result<()> {
    boot::loader::check_bzimage(&cfg.kernel)?;
    pmem::place(cfg.mem, &cfg.pmem, pmem::host_phys_bits())?;
    Ok(())
}

fn xsave_policy(arg: cli::XsaveArg) -> XsavePolicy {
    match arg {
        cli::XsaveArg::On => XsavePolicy::On,
        cli::XsaveArg::Off => XsavePolicy::Off,
        cli::XsaveArg::Auto if boot::cpuid::host_is_virtual() => {
            log::info!("running nested (host CPUID has the hypervisor bit): guest XSAVE off (--xsave on to override)");
            XsavePolicy::Off
        }
        cli::XsaveArg::Auto => XsavePolicy::On,
    }
}

fn exit_code(outcome: Outcome) -> u8 {
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
