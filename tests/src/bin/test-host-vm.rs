//! Runs commands inside the test host VM (`daxvmm_tests::test_host`): QEMU TCG with nested SVM and the
//! pinned Debian 6.1 kernel with kvm-amd, for hosts whose /dev/kvm cannot boot an ordinary guest.
//!
//! - `test-host-vm batch --batch FILE [...]`: one VM runs FILE's cases (`NAME<TAB>SHELL COMMAND` lines);
//!   the console streams to stdout, or with `--split DIR` each case's output goes to `DIR/NAME` and its
//!   exit status to `DIR/NAME.rc`. `--where direct` runs the cases on this host instead. Exit status 0
//!   when the batch completed (whatever the cases returned), 3 when the VM hung, 1 otherwise.
//! - `test-host-vm daxvmm ARGS...`: one daxvmm command line in a test host VM (scripts/daxvmm-nested.sh);
//!   `--kernel` and `--initrd` name host files, copied in. The guest console streams to stdout, and the
//!   exit status is daxvmm's. When the VM dies before daxvmm finishes, it runs once more in a new one.
#![allow(clippy::print_stdout)]

use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use daxvmm_tests::batch_file::{self, BatchFileError};
use daxvmm_tests::case::{CaseError, NESTED_INITRD, NESTED_KERNEL};
use daxvmm_tests::host::WhereArg;
use daxvmm_tests::run::{run_nested, Echo, Nested, RunError};
use daxvmm_tests::test_host::{self, log, End, Fault, L1Idle, TestHostError};
use daxvmm_tests::{Artifacts, Case, Skip};
use thiserror::Error;

/// Why `test-host-vm` failed; printed as `error: ...`.
#[derive(Debug, Error)]
enum CliError {
    #[error("cannot read the batch file {}: {source}", path.display())]
    ReadBatch { path: PathBuf, source: io::Error },
    #[error("cannot create the --split directory {}: {source}", path.display())]
    SplitDir { path: PathBuf, source: io::Error },
    /// Where the cases could run (`--where auto`), or the test host VM could not start.
    #[error("{0}")]
    Skip(Skip),
    #[error(transparent)]
    TestHost(#[from] TestHostError),
    #[error(transparent)]
    BatchFile(#[from] BatchFileError),
    #[error(transparent)]
    Case(#[from] CaseError),
    #[error("KVM could not be set up in the test host VM: {0}")]
    NoKvm(String),
    #[error("the batch did not complete: {fault} (console: {})", console_log.display())]
    Incomplete { fault: Fault, console_log: PathBuf },
    #[error("{flag} wants a path")]
    NoValue { flag: String },
    #[error("--kernel is required; pass the guest bzImage")]
    NoKernel,
    #[error("daxvmm binary {} does not exist; run scripts/build-all.sh", path.display())]
    NoDaxvmm { path: PathBuf },
    #[error("the test host VM did not finish the run: {0}")]
    Unfinished(RunError),
    #[error("the test host VM did not finish the run")]
    NoResult,
}

#[derive(Parser, Debug)]
#[command(about = "Runs commands inside the test host VM (QEMU TCG with nested SVM and kvm-amd)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs a batch file's cases in one test host VM (or on this host with --where direct).
    Batch(Box<BatchArgs>),
    /// Runs one daxvmm command line in a test host VM, once more in a new one if the VM dies first.
    Daxvmm {
        /// daxvmm's arguments; --kernel and --initrd name host files.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
}

#[derive(Args, Debug)]
struct BatchArgs {
    /// One case per line, NAME<TAB>SHELL COMMAND ('#' lines and blank lines are skipped); the commands
    /// may use /guest/bzImage, /guest/initrd.cpio.lz4 and /bin/daxvmm.
    #[arg(long)]
    batch: PathBuf,
    #[arg(long, default_value = "4G")]
    mem: String,
    #[arg(long, default_value_t = 2)]
    cpus: usize,
    /// Limit on the whole QEMU run, in seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Limit on each case inside the VM, in seconds; a case that outlives it is killed (rc=137).
    #[arg(long, default_value_t = 300)]
    case_timeout: u64,
    /// Kill the VM when its console has been silent this long, in seconds (default: case timeout + 60).
    #[arg(long)]
    stall: Option<u64>,
    /// The static daxvmm (default: $DAXVMM_BIN, else target/x86_64-unknown-linux-musl/release/daxvmm;
    /// left out with a warning when that default does not exist).
    #[arg(long)]
    daxvmm: Option<PathBuf>,
    /// The guest bzImage (default: $DAXVMM_GUEST_KERNEL, else the cached scripts/build-guest-kernel.sh one).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The guest initramfs (default: $DAXVMM_GUEST_INITRD, else scripts/build-initramfs.sh's).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Also pack qemu-system-x86_64 (its libraries and x86 firmware) to compare against.
    #[arg(long)]
    with_qemu: bool,
    /// Also pack this host's perf (and its libraries) as /usr/bin/perf, to profile the test host from a
    /// case, e.g. `perf record -a -g -o /tmp/p.data -- CMD; perf report -i /tmp/p.data --stdio`
    /// (docs/test-host-vm.md).
    #[arg(long)]
    with_perf: bool,
    /// More words for the test host VM kernel's command line (default: $DAXVMM_L1_APPEND).
    #[arg(long)]
    append: Option<String>,
    /// How the test host kernel's idle CPUs wait: poll (idle=poll: fewer emulation faults under QEMU
    /// TCG) or halt (default: $DAXVMM_L1_IDLE, else poll).
    #[arg(long, value_parser = ["poll", "halt"])]
    idle: Option<String>,
    /// Copy FILE (a static binary) into the VM's /bin; repeatable.
    #[arg(long = "add", value_name = "FILE")]
    adds: Vec<PathBuf>,
    /// An experiment, off by default: the static daxvmm-kvm-hold (images/test-host-tools), which keeps
    /// one idle KVM VM open in the VM (also $DAXVMM_KVM_HOLD).
    #[arg(long)]
    kvm_hold: Option<PathBuf>,
    /// Where the cases run.
    #[arg(long = "where", value_enum, default_value = "nested")]
    place: WhereArg,
    /// Write each case's output to DIR/NAME and its exit status to DIR/NAME.rc instead of streaming the
    /// console to stdout.
    #[arg(long, value_name = "DIR")]
    split: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Batch(a) => batch(*a),
        Cmd::Daxvmm { args } => daxvmm(args),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("error: {e}\n").as_bytes());
            ExitCode::FAILURE
        }
    }
}

fn batch(a: BatchArgs) -> Result<ExitCode, CliError> {
    let text =
        fs::read_to_string(&a.batch).map_err(|source| CliError::ReadBatch { path: a.batch, source })?;
    test_host::check_batch(&text)?;
    let place = a.place.resolve().map_err(CliError::Skip)?;
    if let Some(dir) = &a.split {
        fs::create_dir_all(dir).map_err(|source| CliError::SplitDir { path: dir.clone(), source })?;
    }
    let split = a.split.as_deref();
    let mut on_line = |line: &str, _: Option<(&str, &daxvmm_tests::console::CaseLog)>| {
        if split.is_none() {
            println!("{line}");
        }
    };
    if place == daxvmm_tests::Where::Direct {
        let parser = batch_file::run_here(&text, &mut on_line)?;
        if let Some(dir) = split {
            batch_file::write_split(dir, &parser)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut cfg = test_host::Config::new(
        text,
        a.kernel.map_or_else(batch_file::default_kernel, Ok)?,
        a.initrd.map_or_else(batch_file::default_initrd, Ok)?,
    );
    cfg.mem = a.mem;
    cfg.cpus = a.cpus;
    cfg.timeout = Duration::from_secs(a.timeout);
    cfg.case_timeout = Duration::from_secs(a.case_timeout);
    cfg.stall = Duration::from_secs(a.stall.unwrap_or(a.case_timeout + 60));
    cfg.with_qemu = a.with_qemu;
    cfg.with_perf = a.with_perf;
    if let Some(append) = a.append {
        cfg.append = append;
    }
    if let Some(idle) = a.idle {
        cfg.idle = L1Idle::parse(Some(&idle));
    }
    cfg.adds = a.adds;
    if a.kvm_hold.is_some() {
        cfg.kvm_hold = a.kvm_hold;
    }
    cfg.daxvmm = match a.daxvmm {
        Some(d) => Some(d),
        None => Some(batch_file::default_daxvmm()).filter(|d| d.is_file()).or_else(|| {
            log(&format!(
                "warning: {} does not exist; the test host VM has no /bin/daxvmm (build it with cargo build \
                 --release --target x86_64-unknown-linux-musl -p daxvmm)",
                batch_file::default_daxvmm().display()
            ));
            None
        }),
    };
    let run = test_host::run(&cfg, &mut on_line)?;
    if let Some(dir) = split {
        batch_file::write_split(dir, &run.console)?;
    }
    match run.end {
        End::Done => Ok(ExitCode::SUCCESS),
        End::Fault(Fault::Stall) => Ok(ExitCode::from(3)),
        End::NoKvm(why) => Err(CliError::NoKvm(why)),
        End::Fault(fault) => Err(CliError::Incomplete { fault, console_log: run.console_log }),
    }
}

fn daxvmm(args: Vec<String>) -> Result<ExitCode, CliError> {
    let (mut kernel, mut initrd, mut inner, mut adds) = (None, None, Vec::new(), Vec::new());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            // `daxvmm fstests`'s image: copied into the test host VM's /bin.
            "--rootfs" => {
                let v = PathBuf::from(it.next().ok_or_else(|| CliError::NoValue { flag: a.clone() })?);
                let name = v.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                inner.extend([a, format!("/bin/{name}")]);
                adds.push(v);
            }
            "--kernel" | "--initrd" => {
                let v = it.next().ok_or_else(|| CliError::NoValue { flag: a.clone() })?;
                let (slot, inside) =
                    if a == "--kernel" { (&mut kernel, NESTED_KERNEL) } else { (&mut initrd, NESTED_INITRD) };
                *slot = Some(PathBuf::from(v));
                inner.extend([a, inside.to_string()]);
            }
            _ => inner.push(a),
        }
    }
    let kernel = kernel.ok_or(CliError::NoKernel)?;
    // The test host VM always carries an initramfs file; daxvmm uses it only when asked to.
    let initrd = match initrd {
        Some(i) => i,
        None => kernel.clone(),
    };
    let art = Artifacts { daxvmm: batch_file::default_daxvmm(), kernel, initrd, adds };
    if !art.daxvmm.is_file() {
        return Err(CliError::NoDaxvmm { path: art.daxvmm });
    }
    // daxvmm's own --timeout, with a minute to spare, when it is longer than the default 300 s.
    let case_timeout = daxvmm_timeout(&inner)
        .map_or(Duration::from_secs(300), |t| (t + Duration::from_secs(60)).max(Duration::from_secs(300)));
    let case = Case::daxvmm("daxvmm", inner);
    case.validate()?;
    log("running daxvmm inside the test host VM (QEMU TCG with nested SVM; this host's KVM cannot boot the guest)");
    // The test host VM itself rarely wedges or resets under QEMU TCG's nested SVM; then the run goes once
    // more in a new one.
    let plan = Nested {
        attempts: 2,
        case_timeout,
        stall: Duration::from_secs(360),
        total: Some(case_timeout + Duration::from_secs(600)),
        record: false,
        echo: Echo::CasesToStdout,
        kvm_hold: None,
    };
    let mut outcomes = run_nested(std::slice::from_ref(&case), &art, &plan).map_err(CliError::Skip)?;
    match outcomes.remove("daxvmm") {
        Some(Ok(o)) => Ok(ExitCode::from(o.exit_code.clamp(0, 255) as u8)),
        Some(Err(why)) => Err(CliError::Unfinished(why)),
        None => Err(CliError::NoResult),
    }
}

/// The value of `--timeout` (`N`, `Ns`, `Nm`, `Nh`) among daxvmm's arguments.
fn daxvmm_timeout(args: &[String]) -> Option<Duration> {
    let value = args.iter().position(|a| a == "--timeout").and_then(|i| args.get(i + 1))?;
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let n: u64 = value[..split].parse().ok()?;
    let unit = match &value[split..] {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        _ => return None,
    };
    n.checked_mul(unit).map(Duration::from_secs)
}
