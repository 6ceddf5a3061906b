//! The command line, one parser for every command: `daxvmm run` (also what `daxvmm` with no subcommand
//! does, so `daxvmm --kernel ...` boots a guest), `daxvmm test` and `daxvmm repro`. Each command's
//! options are in its module: `run` (one guest run, with the checks that need no KVM), `race` (the race
//! runner's options).

pub mod race;
pub mod run;
pub mod suites;

use clap::{Parser, Subcommand};

use self::race::{ReproArgs, TestArgs};
use self::run::RunArgs;
use self::suites::{FstestsArgs, NdctlArgs, SuiteReportArgs};

const RACE_HELP: &str = "\
Examples:
  daxvmm test --kernel bzImage --initrd initrd.cpio.lz4
  daxvmm test --scenario truncate-unpin --fs xfs --out /tmp/race
  daxvmm test --list
  daxvmm repro daxvmm-results/repro/truncate-unpin-ext4-run3.repro

The guest needs the initramfs of scripts/build-initramfs.sh (it runs daxvmm-race) and, for the scenarios
that pin through the driver, a kernel with guest-kernel/patches (scripts/build-guest-kernel.sh).
docs/fault-injection.md describes the device, the schedules and the oracle.";

const FSTESTS_HELP: &str = "\
Examples:
  daxvmm fstests --kernel bzImage --rootfs rootfs.img -g dax
  daxvmm fstests --fs xfs generic/413 generic/462 --out /tmp/fst

The image comes from scripts/build-guest-rootfs.sh (Debian with fstests built in /var/lib/xfstests).
The guest boots it from a raw NVDIMM (share=off: the file is never written) and gets two more, turned
into fsdax namespaces for TEST_DEV and SCRATCH_DEV; check runs once per filesystem with
MOUNT_OPTIONS=\"-o dax=always\". check's own lines show the progress; --out gets the results.";

const NDCTL_HELP: &str = "\
Examples:
  daxvmm ndctl-tests --kernel bzImage --rootfs rootfs.img
  daxvmm ndctl-tests mmap.sh --out /tmp/ndctl

The image (scripts/build-guest-rootfs.sh) has ndctl built from Debian's source package with the programs
and scripts of its test/ directory. The scripts run unmodified; they find their device on the \"e820\"
nvdimm bus, so the guest gets a --pmem ...,type=e820 range (--e820-size, at least 2G).";

/// daxvmm's command line.
#[derive(Debug, Parser)]
#[command(
    name = "daxvmm",
    version,
    about = "Boot a Linux guest under KVM with an emulated ACPI NFIT NVDIMM, for testing fs-dax page refcounting",
    after_help = "\
Examples:
  daxvmm --kernel bzImage --initrd initrd.cpio.lz4
  daxvmm --kernel bzImage --initrd initrd.cpio.lz4 --cpus 2 --mem 1G --cmdline '-- cat /proc/cpuinfo'
  daxvmm --kernel bzImage --initrd initrd.cpio.lz4 --timeout 2m --cmdline 'quiet'
  daxvmm --kernel bzImage --initrd initrd.cpio.lz4 --pmem 16G --pmem 1G,file=/var/tmp/pmem1.img

Race testing: `daxvmm test --help` (run the scenario library under the fault injector) and
`daxvmm repro --help` (replay a repro file).

Exit codes: 0 guest powered off, 1 daxvmm error, 2 usage error, 3 guest kernel panic (pvpanic),
4 --timeout expired, 5 guest reset/reboot, 6 guest reported a non-zero exit status,
128+N stopped by signal N (file-backed pmem is flushed first).
See docs/guest-interface.md for the ports and the initramfs contract.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// The subcommand, if one was given.
    #[command(subcommand)]
    subcommand: Option<Command>,
    /// Without a subcommand: the options of `daxvmm run`.
    #[command(flatten)]
    run: Option<RunArgs>,
}

/// What daxvmm was asked to do.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Boot a guest (what `daxvmm` does without a subcommand: `daxvmm --kernel ...` is
    /// `daxvmm run --kernel ...`).
    Run(RunArgs),
    /// Run race scenarios, each under every schedule (or seeded samples), and report violations.
    /// Exit codes: 0 no violation, 10 violations (repro files written), 1 error, 2 usage.
    #[command(after_help = RACE_HELP)]
    Test(TestArgs),
    /// Replay a repro file. Exit codes: 0 the same violation came back, 11 it did not, 1 error.
    #[command(after_help = RACE_HELP)]
    Repro(ReproArgs),
    /// Run fstests (e.g. -g dax) with -o dax on ext4 and xfs in the suite image. Exit codes: 0 nothing
    /// failed, 10 a test failed, 1 the guest did not finish (or an error), 2 usage.
    #[command(after_help = FSTESTS_HELP)]
    Fstests(FstestsArgs),
    /// Run ndctl's own test scripts (default dax-ext4.sh dax-xfs.sh mmap.sh) in the suite image, on a
    /// legacy e820 pmem range. Exit codes as fstests.
    #[command(name = "ndctl-tests", after_help = NDCTL_HELP)]
    NdctlTests(NdctlArgs),
    /// Write the results of fstests or ndctl's tests from the console log of the suite image booted by
    /// another VMM (QEMU, in scripts/compare-qemu.sh): the same table, junit.xml and summary.txt as
    /// `daxvmm fstests`. Exit codes as fstests.
    #[command(name = "suite-report")]
    SuiteReport(SuiteReportArgs),
}

impl Cli {
    /// The command of this process's arguments; on a usage error, or for `--help`/`--version`, prints
    /// and exits as clap does (2 for errors, 0 otherwise).
    pub fn parse_command() -> Command {
        Self::try_parse_command(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// The command of `args` (the first is the program name): the subcommand, or `run` with the
    /// top-level options.
    pub fn try_parse_command<I, T>(args: I) -> Result<Command, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Self::try_parse_from(args)?;
        match (cli.subcommand, cli.run) {
            (Some(command), _) => Ok(command),
            (None, Some(run)) => Ok(Command::Run(run)),
            // The parser requires --kernel without a subcommand, so only a parser that lost that rule
            // gets here: the same usage error.
            (None, None) => Err(<Self as clap::CommandFactory>::command()
                .error(clap::error::ErrorKind::MissingRequiredArgument, "--kernel <PATH> is required")),
        }
    }
}

impl Command {
    /// The level daxvmm's own log starts at: `--log-level` for a run, info for the race commands
    /// (RUST_LOG overrides both).
    pub fn log_level(&self) -> log::LevelFilter {
        match self {
            Self::Run(run) => run.log_level,
            Self::Test(_)
            | Self::Repro(_)
            | Self::Fstests(_)
            | Self::NdctlTests(_)
            | Self::SuiteReport(_) => log::LevelFilter::Info,
        }
    }

    /// `--seccomp`.
    pub fn seccomp(&self) -> crate::seccomp::SeccompMode {
        match self {
            Self::Run(run) => run.seccomp,
            Self::Test(test) => test.boot.seccomp,
            Self::Repro(repro) => repro.boot.seccomp,
            Self::Fstests(f) => f.boot.seccomp,
            Self::NdctlTests(n) => n.boot.seccomp,
            Self::SuiteReport(_) => crate::seccomp::SeccompMode::On,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_command(std::iter::once("daxvmm").chain(args.iter().copied()))
    }

    #[test]
    fn no_subcommand_is_run() {
        let Command::Run(top) = parse(&["--kernel", "/k", "--cpus", "2"]).unwrap() else { panic!() };
        let Command::Run(sub) = parse(&["run", "--kernel", "/k", "--cpus", "2"]).unwrap() else { panic!() };
        assert_eq!((top.kernel, top.cpus), (sub.kernel, sub.cpus));
        assert_eq!(parse(&["--kernel", "/k"]).unwrap().log_level(), log::LevelFilter::Info);
    }

    #[test]
    fn race_subcommands() {
        let Command::Test(t) = parse(&["test", "--scenario", "a,b", "--fs", "xfs"]).unwrap() else {
            panic!()
        };
        assert_eq!((t.scenario.len(), t.fs.as_slice(), t.samples), (2, &["xfs".to_string()][..], 12));
        assert_eq!(t.options().transports, daxvmm_race::Transports::default(), "nfit by default");
        let Command::Test(t) = parse(&["test", "--transport", "nfit,virtio"]).unwrap() else { panic!() };
        let both = [daxvmm_race::Transport::Nfit, daxvmm_race::Transport::Virtio];
        assert_eq!(t.options().transports.as_slice(), both);
        let Command::Test(t) = parse(&["test", "--transport", "virtio"]).unwrap() else { panic!() };
        assert_eq!(t.options().transports.as_slice(), [daxvmm_race::Transport::Virtio]);
        for bad in ["", "pci", "nfit,nfit", "nfit,"] {
            let e = parse(&["test", "--transport", bad]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad}: {e}");
            assert!(
                e.to_string().contains("give nfit, virtio or both comma-separated (nfit,virtio)"),
                "{bad}: {e}"
            );
        }
        let Command::Repro(r) = parse(&["repro", "x.repro", "--verbose"]).unwrap() else { panic!() };
        assert_eq!((r.file.to_str(), r.boot.verbose), (Some("x.repro"), true));
        assert_eq!(parse(&["repro", "x.repro"]).unwrap().log_level(), log::LevelFilter::Info);
    }

    #[test]
    fn usage_errors_and_help() {
        for args in [
            &[][..],
            &["--mem", "1G"],
            &["--kernel", "/k", "test"],
            &["test", "--kernel"],
            &["repro"],
            &["--kernel", "/k", "--timeout", "0"],
            &["--kernel", "/k", "--fault-schedule", "9.s9999 200.s1"],
            &["test", "--mem", "1"],
            &["test", "--mem", "65M"],
            &["test", "--timeout", "0s"],
            &["test", "--hold-bound", "0"],
            &["repro", "x.repro", "--mem", "1"],
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.use_stderr(), "{args:?}: {e}");
        }
        for args in [&["--help"][..], &["test", "--help"], &["repro", "--help"], &["--version"]] {
            let e = parse(args).unwrap_err();
            assert!(matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion), "{args:?}");
            assert!(!e.use_stderr());
        }
        let help = parse(&["--help"]).unwrap_err().to_string();
        for word in ["--kernel", "--pmem", "--fault-schedule", "test", "repro", "Exit codes"] {
            assert!(help.contains(word), "daxvmm --help lacks {word}: {help}");
        }
        let help = parse(&["test", "--help"]).unwrap_err().to_string();
        for word in ["--scenario", "--hold-bound", "--sleeps", "Exit codes", "docs/fault-injection.md"] {
            assert!(help.contains(word), "daxvmm test --help lacks {word}: {help}");
        }
    }
}
