//! `daxvmm-guest`: the guest-side end of daxvmm's debug ports (docs/guest-interface.md).
//! `marker CODE` writes a boot progress code to port 0x6F0; `status N` writes the exit status to 0x6F1;
//! `flood PORT [BYTE]` writes to any port until killed (a hostile guest for daxvmm's tests).
//! Exit codes: 0 written, 1 the write failed (not root, no port I/O in the kernel), 2 usage error.

use std::process::ExitCode;

use daxvmm_guest_tools::cli::{parse_args, Command, USAGE};
use daxvmm_guest_tools::port::write_port;

// A command-line tool: its diagnostics go to stderr.
#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match parse_args(&args) {
        Ok(cmd) => cmd,
        Err(e) => {
            eprintln!("error: daxvmm-guest: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some((port, value)) = cmd.port_write() else {
        debug_assert_eq!(cmd, Command::Help);
        eprintln!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    if let Command::Flood(..) = cmd {
        // Returns only on failure: the flood goes on until the guest is stopped.
        let e = daxvmm_guest_tools::port::flood_port(port, value);
        eprintln!("error: daxvmm-guest: {e}");
        return ExitCode::from(1);
    }
    match write_port(port, value) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: daxvmm-guest: {e}");
            ExitCode::from(1)
        }
    }
}
