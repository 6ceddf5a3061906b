//! `daxvmm-boot-timer`: times a VMM from spawn to the guest's `daxvmm-guest: init reached` console line
//! (see `daxvmm_guest_tools::timer`). Prints one result line on stdout.

use std::ffi::OsString;
use std::process::ExitCode;

use daxvmm_guest_tools::timer::{parse_timer_args, run, USAGE};

// A command-line tool: the result line goes to stdout, diagnostics to stderr.
#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_timer_args(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: daxvmm-boot-timer: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(t) => {
            println!("{}", t.line());
            if t.marker_after.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: daxvmm-boot-timer: {e}");
            ExitCode::from(1)
        }
    }
}
