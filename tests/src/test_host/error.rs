//! [`TestHostError`]: why a test host VM could not start (bad input, packing failed, QEMU missing).

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use thiserror::Error;

/// Why [`super::run`] could not start a test host VM, or a batch or configuration is not valid.
#[derive(Debug, Error)]
pub enum TestHostError {
    /// A batch line has no TAB between the case's name and its command.
    #[error("batch line without a TAB between NAME and COMMAND: {line}; separate them with one TAB")]
    NoTab {
        /// The line.
        line: String,
    },
    /// A case name of the batch has characters other than letters, digits and `_.:-`.
    #[error("case name '{name}' may only use letters, digits and _.:-; rename the case")]
    BadName {
        /// The name.
        name: String,
    },
    /// [`super::Config::mem`] is not a size QEMU takes.
    #[error("--mem wants a size like 4G or 3072M, got '{mem}'")]
    Mem {
        /// What was given.
        mem: String,
    },
    /// `DAXVMM_L1_IDLE` is neither `poll` nor `halt`.
    #[error("DAXVMM_L1_IDLE wants poll or halt, got '{given}'")]
    Idle {
        /// What was given.
        given: String,
    },
    /// [`super::Config::cpus`] is zero.
    #[error("--cpus wants a positive number, got 0")]
    NoCpus,
    /// A file to pack does not exist.
    #[error("{what} {} does not exist; check the path or build it first", path.display())]
    Missing {
        /// Which file (`guest kernel`, `--add`...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// The daxvmm binary needs a dynamic loader, which the test host VM does not have.
    #[error(
        "{} is dynamically linked; the test host VM needs a static build (--target x86_64-unknown-linux-musl)",
        path.display()
    )]
    Dynamic {
        /// The binary.
        path: PathBuf,
    },
    /// `--add` names no file.
    #[error("--add {}: not a file name; pass the path of a static binary", path.display())]
    AddNotFile {
        /// What was given.
        path: PathBuf,
    },
    /// qemu-system-x86_64 is not on the PATH.
    #[error("qemu-system-x86_64 not found; run scripts/setup-host.sh")]
    NoQemu,
    /// `--with-perf` and no perf on PATH.
    #[error("perf not found on PATH; install it (Debian: apt-get install linux-perf) for --with-perf")]
    NoPerf,
    /// A file or directory operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was tried (`create`, `read`, `write`...).
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// A file could not be copied.
    #[error("cannot copy {} to {}: {source}", from.display(), to.display())]
    Copy {
        /// The source.
        from: PathBuf,
        /// The destination.
        to: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// A program could not start.
    #[error("cannot run {program}: {source}; check that it is installed (scripts/setup-host.sh)")]
    Spawn {
        /// The program.
        program: String,
        /// Why it could not start.
        source: io::Error,
    },
    /// A program ran and failed.
    #[error("{command} failed ({status}); see its messages above")]
    Failed {
        /// The command line (or the images/pack.sh snippet), as a shell would take it.
        command: String,
        /// How it exited.
        status: ExitStatus,
    },
    /// images/test-host.pin lacks a key.
    #[error("no {key}= in {}; add it", pin.display())]
    PinKey {
        /// The key.
        key: String,
        /// The pin file.
        pin: PathBuf,
    },
    /// A module the pin file names is not in the kernel package.
    #[error(
        "module {module} is not in {pkg} (looked for .ko, .ko.xz, .ko.zst, .ko.gz); fix MODULES in {}",
        pin.display()
    )]
    NoModule {
        /// The module, as MODULES names it.
        module: String,
        /// The package.
        pkg: String,
        /// The pin file.
        pin: PathBuf,
    },
    /// The kernel package has no vmlinuz for the pinned release.
    #[error("no {} in the package ({source}); fix KERNEL_RELEASE in {}", vmlinuz.display(), pin.display())]
    NoVmlinuz {
        /// Where it was looked for.
        vmlinuz: PathBuf,
        /// The pin file.
        pin: PathBuf,
        /// Why it could not be copied.
        source: io::Error,
    },
}

/// A `map_err` for a failed file operation: `action` on `path`.
pub(super) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> TestHostError + 'a {
    move |source| TestHostError::Io { action, path: path.to_path_buf(), source }
}
