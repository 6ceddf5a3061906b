//! The daxvmm command line from arbitrary bytes, which reaches every user-facing value parser of the
//! `daxvmm` crate through its public `Cli::try_parse_command`: sizes (`--mem`, `--pmem-size`, `units.rs`),
//! durations (`--timeout`, `--hold-bound`), the `--pmem` spec (`pmem/spec.rs`), `--fault-schedule` and
//! the rest, for `run`, `test` and `repro`. Parsing must never panic, valid UTF-8 or not; and what parses
//! must survive a round trip: the size daxvmm prints for a refused `--mem` parses back to the same size,
//! a `--pmem` spec written back in canonical form parses to the same spec, a timeout printed in
//! milliseconds parses to the same duration.
//!
//! Input: a mode byte, then pieces separated by NUL. Mode 0: each piece is one option value (its first
//! byte picks the option, the rest, lossily decoded, is the value). Mode 1: the pieces are the raw
//! argument vector (any bytes). Mode 2: the same, lossily decoded to UTF-8.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use daxvmm::cli::run::{CliError, RunArgs};
use daxvmm::cli::{Cli, Command};
use libfuzzer_sys::fuzz_target;

/// (subcommand, option) pairs whose values go through daxvmm's own parsers or clap's range checks.
const OPTIONS: &[(&str, &str)] = &[
    ("run", "--pmem"),
    ("run", "--mem"),
    ("run", "--timeout"),
    ("run", "--timeout-after-init"),
    ("run", "--fault-schedule"),
    ("run", "--cpus"),
    ("run", "--repeat"),
    ("run", "--xsave"),
    ("run", "--log-level"),
    ("run", "--cmdline"),
    ("test", "--mem"),
    ("test", "--pmem-size"),
    ("test", "--timeout"),
    ("test", "--hold-bound"),
    ("test", "--scenario"),
    ("test", "--fs"),
    ("test", "--seed"),
    ("test", "--samples"),
    ("test", "--max-enumerate"),
    ("test", "--cpus"),
    ("test", "--runs"),
    ("test", "--mutant"),
    ("test", "--shard"),
    ("repro", "--mem"),
    ("repro", "--timeout"),
    ("repro", "--replays"),
    ("fstests", "--group"),
    ("fstests", "--fs"),
    ("fstests", "--pmem-size"),
    ("fstests", "--mem"),
    ("fstests", "--shard"),
    ("suite-report", "--sections"),
    ("suite-report", "--out"),
    ("ndctl-tests", "--e820-size"),
    ("ndctl-tests", "--timeout"),
];

fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, clap::Error> {
    Cli::try_parse_command(std::iter::once(OsString::from("daxvmm")).chain(args))
}

/// `daxvmm --kernel /k ARG`, which must parse as a run.
fn run_with(arg: String) -> RunArgs {
    match parse(["--kernel".into(), "/k".into(), arg.clone().into()]) {
        Ok(Command::Run(r)) => r,
        other => {
            panic!("`daxvmm --kernel /k {arg}` (written back by the fuzz target) does not parse: {other:?}")
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn check_run(run: &RunArgs) {
    let _ = run.kernel_cmdline();
    // With no host RAM every size is refused, and the refusal prints the size as daxvmm formats it.
    match run.validate(0) {
        Err(CliError::Mem { given, .. }) => {
            let again = run_with(format!("--mem={given}"));
            assert_eq!(again.mem, run.mem, "--mem {} printed as {given}", run.mem);
        }
        other => panic!("validate(host RAM 0) accepted --mem {}: {other:?}", run.mem),
    }
    for spec in &run.pmem {
        let backing = match format!("{:?}", spec.backing).as_str() {
            "Auto" => "auto",
            "Hugetlb2M" => "hugetlb-2m",
            "Hugetlb1G" => "hugetlb-1g",
            "Thp" => "thp",
            "Anon" => "anon",
            other => panic!("a backing this target does not know: {other}"),
        };
        let mut text = format!(
            "{},backing={backing},share={},prefault={},resize={},type={}",
            spec.size,
            on_off(spec.share),
            on_off(spec.prefault),
            on_off(spec.resize),
            match format!("{:?}", spec.kind).as_str() {
                "Nfit" => "nfit",
                "E820" => "e820",
                "Virtio" => "virtio",
                other => panic!("a pmem type this target does not know: {other}"),
            }
        );
        if let Some(addr) = spec.addr {
            text.push_str(&format!(",addr={addr:#x}"));
        }
        if let Some(file) = &spec.file {
            // A path with a comma cannot be written in the spec syntax at all.
            let Some(f) = file.to_str().filter(|f| !f.contains(',')) else { continue };
            text.push_str(&format!(",file={f}"));
        }
        let again = run_with(format!("--pmem={text}"));
        assert_eq!(again.pmem.len(), 1);
        assert_eq!(&again.pmem[0], spec, "--pmem written back as {text}");
    }
    for d in [run.timeout, run.timeout_after_init].into_iter().flatten() {
        let again = run_with(format!("--timeout={}ms", d.as_millis()));
        assert_eq!(again.timeout, Some(d), "a timeout of {d:?}");
        if d.subsec_millis() == 0 {
            assert_eq!(run_with(format!("--timeout={}s", d.as_secs())).timeout, Some(d));
        }
    }
}

fn check(cmd: Result<Command, clap::Error>) {
    match cmd {
        Ok(Command::Run(run)) => check_run(&run),
        Ok(Command::Test(t)) => {
            let o = t.options();
            assert!(o.hold_bound > Duration::ZERO && o.boot.timeout > Duration::ZERO, "a zero duration");
        }
        Ok(Command::Repro(r)) => {
            let _ = r.options();
        }
        // What reaches the guest's command line must be words its shell takes literally.
        Ok(Command::Fstests(f)) => {
            assert!(f.boot.timeout > Duration::ZERO, "a zero duration");
            // The shard goes on the guest's command line too: digits and one slash.
            if let Some(shard) = f.shard {
                let text = shard.to_string();
                assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'/'), "shard {text:?}");
            }
            for w in f.check_args() {
                assert!(
                    w.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-/".contains(&b)),
                    "check word {w:?}"
                );
            }
        }
        Ok(Command::SuiteReport(r)) => {
            assert!(!r.sections.is_empty(), "no section expected");
        }
        Ok(Command::NdctlTests(n)) => {
            assert!(n.boot.timeout > Duration::ZERO, "a zero duration");
            for t in &n.tests {
                assert!(
                    t.ends_with(".sh") && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)),
                    "{t:?}"
                );
            }
        }
        // Usage errors are fine; rendering them must not panic either.
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let pieces = rest.split(|&b| b == 0);
    match mode % 3 {
        0 => {
            for piece in pieces {
                let Some((&which, value)) = piece.split_first() else { continue };
                let (sub, opt) = OPTIONS[usize::from(which) % OPTIONS.len()];
                let arg = OsString::from(format!("{opt}={}", String::from_utf8_lossy(value)));
                let args: Vec<OsString> = match sub {
                    "run" => vec!["--kernel".into(), "/k".into(), arg],
                    "test" => vec!["test".into(), arg],
                    "fstests" | "ndctl-tests" => {
                        vec![sub.into(), "--kernel".into(), "/k".into(), "--rootfs".into(), "/r".into(), arg]
                    }
                    "suite-report" => vec![sub.into(), "console.log".into(), arg],
                    _ => vec!["repro".into(), "x.repro".into(), arg],
                };
                check(parse(args));
            }
        }
        1 => check(parse(pieces.map(|p| OsString::from_vec(p.to_vec())).collect::<Vec<_>>())),
        _ => check(parse(
            pieces.map(|p| OsString::from(String::from_utf8_lossy(p).into_owned())).collect::<Vec<_>>(),
        )),
    }
});
