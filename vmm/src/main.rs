//! The daxvmm binary: parses the command line, starts the log, runs the command with the library and
//! exits with its code (docs/guest-interface.md; `daxvmm --help`).

use std::time::Instant;

use daxvmm::cli::{Cli, Command};
use daxvmm::{console, kernel_tree, logging, privileges, race, run, seccomp, signals, suites};

mod allocator;

fn main() {
    let started = Instant::now();
    // In every thread from the start: a termination signal waits for a run's main loop to read it.
    signals::block();
    let mut command = Cli::parse_command();
    logging::init(command.log_level());
    let result = lock_down(command.seccomp())
        .and_then(|()| Ok(kernel_tree::resolve(&mut command)?))
        .and_then(|()| match &command {
            Command::Run(args) => run::run(args, started).map(run::exit_code),
            Command::Test(args) => race::test(args),
            Command::Repro(args) => race::repro(args),
            Command::Fstests(args) => suites::fstests(args),
            Command::NdctlTests(args) => suites::ndctl_tests(args),
            Command::SuiteReport(args) => suites::suite_report(args),
        });
    let code = result.unwrap_or_else(|e| {
        console::restore_terminal();
        // One line, whatever the chain: users grep for it.
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        log::error!("{}", chain.join(": "));
        run::EXIT_ERROR
    });
    console::restore_terminal();
    console::release_held_logs();
    std::process::exit(i32::from(code))
}

/// Before any other thread exists, so that every thread inherits both: the capabilities daxvmm keeps
/// (none, or file access for root) and the main thread's seccomp filter.
fn lock_down(mode: seccomp::SeccompMode) -> anyhow::Result<()> {
    let kept = privileges::drop_at_start()?;
    if kept.effective != 0 {
        log::debug!("capabilities kept for opening files: {:#x}", kept.effective);
    }
    seccomp::install_main(mode)?;
    Ok(())
}
