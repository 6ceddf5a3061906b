//! The closing lines of scripts/test.sh: `guest boots: ...`, `test host VM faults: ..., reruns: ...` and
//! `summary: P passed, F failed, S skipped` (`daxvmm_tests::summary`), from the cargo test output it was
//! given and the boot log. Exit status 1 when a test failed or `--failed` says a step did.
//!
//! usage: test-summary --results FILE [--boot-log FILE] [--failed]
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use daxvmm_tests::record::boot_log_path;
use daxvmm_tests::summary;

#[derive(Parser, Debug)]
#[command(about = "Prints the closing lines of a test run")]
struct Cli {
    /// The output of the cargo test runs (their `test result:` lines are added up); repeatable.
    #[arg(long)]
    results: Vec<PathBuf>,
    /// The boot log (default: $DAXVMM_BOOT_LOG, else target/daxvmm-guest-boots.log).
    #[arg(long)]
    boot_log: Option<PathBuf>,
    /// Another step of the run failed (lint, a build): exit 1 whatever the tests did.
    #[arg(long)]
    failed: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let read = |p: &PathBuf| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let cargo: String = cli.results.iter().map(read).collect::<Vec<_>>().join("\n");
    let log = read(&cli.boot_log.unwrap_or_else(boot_log_path));
    println!();
    for l in summary::lines(&cargo, &log) {
        println!("{l}");
    }
    if cli.failed || summary::totals(&cargo).failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
