//! The benchmarks (scripts/bench-boot.sh, bench-pmem.sh, bench-blk.sh and bench-race.sh run them): each measures daxvmm
//! and its baseline on one host in one run, directly on a hardware-KVM host or inside ONE test host VM
//! elsewhere, and prints the figures with their ratios (`daxvmm_tests::bench`).
//!
//! - `bench boot`: boot time of daxvmm against QEMU, medians and their ratio.
//! - `bench pmem`: memcpy bandwidth of a DAX file in a daxvmm guest and a QEMU guest, against the host's,
//!   on an NFIT NVDIMM and on virtio-pmem (`daxvmm_tests::bench_pmem`).
//! - `bench blk`: O_DIRECT sequential and random I/O on a virtio-blk disk, daxvmm against QEMU
//!   (`daxvmm_tests::bench_blk`).
//! - `bench race`: per mutant of the guest kernel, killed by forced schedules, by sleep-driven runs, by
//!   the sequential refcount checks.
//! - `bench suites`: fstests and ndctl's tests under daxvmm and under QEMU, verdicts and wall times.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use daxvmm_tests::batch_file::{self, target_dir, BatchFileError};
use daxvmm_tests::bench::{self, Paths};
use daxvmm_tests::bench_blk::{self, BlkOpts};
use daxvmm_tests::bench_boot::{self, BootOpts, BootReport};
use daxvmm_tests::bench_pmem::{self, PmemOpts, PmemReport};
use daxvmm_tests::bench_race;
use daxvmm_tests::bench_suites::{self, Side, SuitePaths, SuitesOpts};
use daxvmm_tests::console::CaseLog;
use daxvmm_tests::host::WhereArg;
use daxvmm_tests::test_host::{self, root, End, Fault, TestHostError};
use daxvmm_tests::{host, Artifacts, Skip, Where};
use thiserror::Error;

/// Why a benchmark failed; printed as `error: ...`.
#[derive(Debug, Error)]
enum BenchError {
    /// The artifacts are missing, or the batch could not run on this host.
    #[error(transparent)]
    BatchFile(#[from] BatchFileError),
    /// Where the benchmark could run (`--where auto`).
    #[error("{0}")]
    Where(Skip),
    #[error("qemu-system-x86_64 not found; run scripts/setup-host.sh")]
    NoQemu,
    #[error("cannot run cargo: {0}; install the Rust toolchain (rustup) or set CARGO")]
    Cargo(#[source] io::Error),
    #[error("cargo build of {bin} failed ({status}); see its messages above")]
    Build { bin: String, status: ExitStatus },
    #[error(transparent)]
    TestHost(#[from] TestHostError),
    #[error("KVM could not be set up in the test host VM: {0}")]
    NoKvm(String),
    #[error("the test host VM did not finish the benchmark: {fault} (console: {})", console_log.display())]
    Unfinished { fault: Fault, console_log: PathBuf },
    #[error("cannot create {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("a VMM never reached the guest's /init; see the output above")]
    NoInit,
    #[error("a measurement is missing; see the output above")]
    NoMeasurement,
    #[error("a {0} printed no results; see its output above")]
    NoResults(&'static str),
    #[error("cannot read the suite image {}: {source} (scripts/build-guest-rootfs.sh builds it)", path.display())]
    Rootfs { path: PathBuf, source: io::Error },
    #[error("daxvmm's and QEMU's verdicts differ on {0} tests (the rows marked NO)")]
    Differ(usize),
}

/// A `--mem` that is not a size like 512M or 1G (clap prints it after the option's name).
#[derive(Debug, Error)]
#[error("wants a size like 512M or 1G, got '{0}'")]
struct MemSizeError(String);

#[derive(Parser, Debug)]
#[command(about = "daxvmm's benchmarks: daxvmm against a baseline measured on the same host in the same run")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Boot time of daxvmm against QEMU (scripts/bench-boot.sh).
    ///
    /// Boot-time benchmark: daxvmm against QEMU (-enable-kvm -cpu host), same guest kernel, initramfs,
    /// memory and vCPUs, the guest booted with `quiet` and running `dmesg`. Each boot is timed by
    /// daxvmm-boot-timer (images/guest-tools) from the VMM's process start to the console line
    /// `daxvmm-guest: init reached`. Sides, alternating run by run: daxvmm with the bzImage, daxvmm with
    /// the same kernel's vmlinux (no decompression; when one is found), QEMU, and daxvmm with
    /// `--mem 8G --pmem 16G` (set-up cost against size). One QEMU and one daxvmm boot come first as a
    /// warm-up, shown but not in the medians (a fresh test host VM's first guest boots much faster than
    /// the later ones, whichever VMM boots it). All on one host in one run: directly on a hardware-KVM
    /// host, or inside ONE test host VM elsewhere. Prints each side's median, runs and how many are within
    /// 10% of it, the ratios to QEMU, and a phase table from daxvmm's own log and the guest's kernel log
    /// timestamps (VMM start to kernel entry, decompression and early boot, initramfs unpacking, /init).
    /// Times inside the test host VM are software-emulated: compare only ratios.
    Boot(BootArgs),
    /// pmem bandwidth of daxvmm and QEMU guests against the host (scripts/bench-pmem.sh).
    ///
    /// pmem bandwidth benchmark: sequential memcpy write and read bandwidth through a shared mapping of a
    /// file on ext4 -o dax in a guest, under daxvmm (--pmem) and under QEMU (-device nvdimm), then on
    /// virtio-pmem under daxvmm (--pmem ...,type=virtio, virtio-mmio) and under QEMU (-device
    /// virtio-pmem-pci), all backed by 2 MiB hugetlb memory, beside the host's own memcpy bandwidth on
    /// hugetlb memory measured by the same program (daxvmm-dax-check). All five run on one host in one
    /// run: directly on a hardware-KVM host, or inside ONE test host VM elsewhere (then the numbers are
    /// emulated; only the ratios carry over). Goals (issue tracker): guest/host >= 0.9, daxvmm >= QEMU
    /// on each transport, daxvmm's virtio-pmem within 5% of its NFIT. Runs --rounds rounds of the five,
    /// every other one in reverse order, and prints medians and every round's ratios.
    Pmem(PmemArgs),
    /// virtio-blk I/O of daxvmm against QEMU (scripts/bench-blk.sh).
    ///
    /// Block benchmark: in a guest, `daxvmm-dax-check blk /dev/vda MIB RAND_OPS` does O_DIRECT I/O on
    /// the raw disk with 4 KiB-aligned buffers: sequential 1 MiB writes over MIB MiB (the first into
    /// the sparse image, so the host allocates every block; then the same again, the rewrite), reads
    /// over them, then RAND_OPS random 4 KiB writes and reads over the same span (seeded, so both sides
    /// get the same offsets); no flush is timed. daxvmm gets the image as `--disk IMG` (virtio-mmio); QEMU as
    /// `-drive file=IMG,if=none,id=d0,format=raw -device virtio-blk-pci,drive=d0` in its default cache
    /// mode (writeback: through the host page cache, as daxvmm's preadv/pwritev into guest memory). Same kernel,
    /// initramfs, memory (512M) and vCPUs (1); each case makes a fresh sparse image (truncate) and
    /// removes it after. Both run on one host in one run (one test host VM when nested: the numbers are
    /// emulated, only the ratios carry over). Runs --rounds rounds of both, the side that goes first
    /// alternating, and prints per metric each side's median, the median of the rounds' daxvmm/qemu
    /// ratios (goal >= 1) and every round's ratio.
    Blk(BlkArgs),
    /// Mutant kills: forced schedules against sleeps and sequential checks (scripts/bench-race.sh).
    ///
    /// Race benchmark: for every deliberate bug of the guest kernel (daxvmm test --list shows the
    /// scenarios; guest-kernel/patches/0008 the bugs), on ext4, in one host run (one test host VM
    /// when nested): `daxvmm test --mutant M` over the mutant's killing scenarios with their forced
    /// schedules; the same scenarios driven by random sleeps instead (`--sleeps --runs N`: no schedule,
    /// no kernel hold points, each guest thread sleeps 0-2 ms before each sync point, as a sleep-based
    /// race test would); and the
    /// sequential refcount checks (daxvmm-refcount-test) with the mutant selected. --kernel must be
    /// daxvmm's guest kernel, which has the mutants (scripts/bench-race.sh passes it).
    ///
    /// Prints a row per mutant: killed or not by each mode (runs with a violation of runs, seconds of
    /// runs with the boot excluded) and how many sequential checks failed; then, over the
    /// schedule-dependent mutants, how many each mode killed.
    Race(RaceArgs),
    /// fstests and ndctl's tests under daxvmm and under QEMU, side by side (scripts/compare-qemu.sh).
    ///
    /// Boots the suite image (scripts/build-guest-rootfs.sh) with the same guest kernel and the same
    /// runner command line under daxvmm (`daxvmm fstests`, `daxvmm ndctl-tests`) and under QEMU
    /// (`-machine pc,nvdimm=on`, the image and fstests' devices as `-device nvdimm`, ndctl's e820 range
    /// with `memmap=`), one after the other on one host in one run (one test host VM when nested).
    /// QEMU's console is read by `daxvmm suite-report`, so both verdicts come from the same parser.
    /// Prints a row per test (verdict and check's time on each side, whether they agree) and each
    /// suite's wall time with the ratio daxvmm/qemu; exits 1 when a verdict differs or a side did not
    /// finish.
    Suites(SuitesArgs),
}

/// Where the benchmark runs and what it boots.
#[derive(Args, Debug)]
struct Common {
    /// Where both sides run.
    #[arg(long = "where", value_name = "WHERE", value_enum, default_value = "auto")]
    place: WhereArg,
    /// The static daxvmm (default: $DAXVMM_BIN, else target/x86_64-unknown-linux-musl/release/daxvmm).
    #[arg(long, value_name = "PATH")]
    daxvmm: Option<PathBuf>,
    /// The guest bzImage (default: $DAXVMM_GUEST_KERNEL, else the cached scripts/build-guest-kernel.sh one).
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// The guest initramfs (default: $DAXVMM_GUEST_INITRD, else scripts/build-initramfs.sh's).
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// boot, pmem and blk: inside a test host VM, MiB of zeros written into a tmpfs file and removed
    /// before each measured VMM case, untimed; 0 writes nothing. A guest booted into memory an earlier guest used runs about
    /// half as fast there (an effect of the test host VM, docs/boot-time.md), which favours whichever side runs
    /// first; this takes it out for both. Ignored on a host with hardware KVM.
    #[arg(long, value_name = "MIB", default_value_t = bench::LAUNDER_MIB)]
    launder_mib: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Machine {
    Pc,
    Microvm,
}

#[derive(Args, Debug)]
struct BootArgs {
    /// Boots of each VMM.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Guest memory, like 512M or 1G.
    #[arg(long, default_value = "512M", value_parser = parse_mem)]
    mem: String,
    /// Guest vCPUs, 1 to 8.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    cpus: u8,
    /// QEMU's machine type.
    #[arg(long, value_enum, default_value = "pc")]
    qemu_machine: Machine,
    /// The same kernel as an uncompressed vmlinux, for the `daxvmm vmlinux` side (default:
    /// $DAXVMM_GUEST_VMLINUX, else `vmlinux` beside the bzImage; the side is left out when there is none).
    #[arg(long, value_name = "PATH")]
    vmlinux: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct PmemArgs {
    /// The file's size in MiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    mib: u64,
    /// memcpy passes each way.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    passes: u64,
    /// Rounds of the five cases, every other one in reverse order; the table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct BlkArgs {
    /// The image's size and the span measured, in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    mib: u64,
    /// Random 4 KiB requests each way.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    rand_ops: u64,
    /// Rounds of one case per side, the side that goes first alternating; the table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct RaceArgs {
    /// Sleep-driven runs of the baseline, per mutant (the default gives it more seconds of runs than the
    /// forced schedules take here).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    baseline_runs: u32,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct SuitesArgs {
    /// The suite image (default: $DAXVMM_ROOTFS).
    #[arg(long, value_name = "PATH", env = "DAXVMM_ROOTFS")]
    rootfs: PathBuf,
    /// fstests' group (default dax when no TEST is named).
    #[arg(short = 'g', long, value_name = "GROUP")]
    group: Option<String>,
    /// fstests' tests to run instead of (or with -g, beside) the group.
    #[arg(value_name = "TEST")]
    tests: Vec<String>,
    /// Filesystems for fstests, comma-separated.
    #[arg(long, value_name = "FS", value_delimiter = ',', default_value = "ext4,xfs")]
    fs: Vec<String>,
    /// ndctl's test scripts, comma-separated ("" for none).
    #[arg(
        long,
        value_name = "TESTS",
        value_delimiter = ',',
        default_value = "dax-ext4.sh,dax-xfs.sh,mmap.sh"
    )]
    ndctl: Vec<String>,
    #[command(flatten)]
    common: Common,
}

fn parse_mem(s: &str) -> Result<String, MemSizeError> {
    let ok = s.len() > 1 && s.ends_with(['M', 'G']) && s[..s.len() - 1].bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(s.to_string())
    } else {
        Err(MemSizeError(s.to_string()))
    }
}

fn log(msg: &str) {
    eprintln!("bench: {msg}");
}

fn main() -> ExitCode {
    let res = match Cli::parse().cmd {
        Cmd::Boot(a) => boot(a),
        Cmd::Pmem(a) => pmem(a),
        Cmd::Blk(a) => blk(a),
        Cmd::Race(a) => race(a),
        Cmd::Suites(a) => suites(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where the benchmark runs, and its artifacts.
fn setup(c: Common) -> Result<(Where, Artifacts), BenchError> {
    let art = batch_file::artifacts(c.daxvmm, c.kernel, c.initrd)?;
    let place = c.place.resolve().map_err(BenchError::Where)?;
    Ok((place, art))
}

fn need_qemu() -> Result<(), BenchError> {
    match host::HostProbe::here().qemu {
        Some(_) => Ok(()),
        None => Err(BenchError::NoQemu),
    }
}

/// Builds one of the static guest tools (images/guest-tools); its path.
fn build_guest_tool(bin: &str) -> Result<PathBuf, BenchError> {
    const MUSL: &str = "x86_64-unknown-linux-musl";
    log(&format!("building {bin} (release, {MUSL})"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root())
        .args(["build", "--quiet", "--release", "--target", MUSL, "-p", "daxvmm-guest-tools", "--bin", bin])
        .status()
        .map_err(BenchError::Cargo)?;
    if !status.success() {
        return Err(BenchError::Build { bin: bin.into(), status });
    }
    Ok(target_dir().join(MUSL).join("release").join(bin))
}

/// The paths the batch's commands use where they run, with `launder_mib` MiB of memory written over
/// before each VMM case when nested (see [`bench::launder`]; 0 for none).
fn paths(place: Where, art: &Artifacts, tool: Option<&Path>, launder_mib: u32) -> Paths {
    let name = tool.and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match place {
        Where::Nested => {
            let before_vmm = if launder_mib == 0 { String::new() } else { bench::launder(launder_mib) };
            Paths { before_vmm, ..Paths::nested(&name) }
        }
        Where::Direct => {
            let s = |p: &Path| p.display().to_string();
            Paths {
                daxvmm: s(&art.daxvmm),
                kernel: s(&art.kernel),
                initrd: s(&art.initrd),
                tool: tool.map(s).unwrap_or_default(),
                before_vmm: String::new(),
            }
        }
    }
}

/// How a benchmark's batch runs in the test host VM.
#[derive(Clone)]
struct Vm {
    mem: String,
    timeout: u64,
    case_timeout: u64,
    with_qemu: bool,
    adds: Vec<PathBuf>,
}

/// Runs the batch here or in one test host VM; every case's output by name. An error when the test host
/// VM did not finish the batch.
fn run(place: Where, art: &Artifacts, batch: String, vm: Vm) -> Result<Outputs, BenchError> {
    let (out, fault) = run_once(place, art, batch, vm)?;
    match fault {
        None => Ok(out),
        Some((fault, console_log)) => Err(BenchError::Unfinished { fault, console_log }),
    }
}

/// Test host VMs one batch may take: after a fault, the cases it did not finish run again in a new one.
const ATTEMPTS: usize = 3;

/// As [`run`], for a batch whose cases stand alone (no ratio between two of them): when the test host
/// VM dies, the cases it did not finish (the one it died in too) run again in a new one, up to
/// [`ATTEMPTS`] VMs. Returns the outputs and each fault, which the caller must print.
fn run_rerunning(
    place: Where,
    art: &Artifacts,
    batch: &str,
    vm: &Vm,
) -> Result<(Outputs, Vec<String>), BenchError> {
    let (mut out, mut faults, mut pending) = (BTreeMap::new(), Vec::new(), batch.to_string());
    for attempt in 1..=ATTEMPTS {
        let (done, fault) = run_once(place, art, pending, vm.clone())?;
        out.extend(done);
        let Some((fault, console_log)) = fault else { return Ok((out, faults)) };
        pending = unfinished(batch, &out);
        if attempt == ATTEMPTS || pending.is_empty() {
            return Err(BenchError::Unfinished { fault, console_log });
        }
        let text = format!("{fault} (console: {})", console_log.display());
        log(&format!(
            "test host VM fault {}: {text}; running the {} unfinished cases again in a new test host VM",
            faults.len() + 1,
            pending.lines().count()
        ));
        faults.push(text);
    }
    Ok((out, faults))
}

/// Every finished case's output by name.
type Outputs = BTreeMap<String, CaseLog>;

/// The lines of `batch` (`NAME<TAB>COMMAND`) whose case has no output in `done`.
fn unfinished(batch: &str, done: &Outputs) -> String {
    batch
        .lines()
        .filter(|l| l.split('\t').next().is_some_and(|name| !done.contains_key(name)))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// One test host VM (or here): the finished cases' outputs, and the fault that ended the VM early (with
/// its console log).
fn run_once(
    place: Where,
    art: &Artifacts,
    batch: String,
    vm: Vm,
) -> Result<(Outputs, Option<(Fault, PathBuf)>), BenchError> {
    let mut on_line = |_: &str, ended: Option<(&str, &CaseLog)>| {
        if let Some((name, c)) = ended {
            log(&format!("case {name} exited {} after {:.1}s", c.exit_code, c.wall.as_secs_f64()));
        }
    };
    if place == Where::Direct {
        return Ok((batch_file::run_here(&batch, &mut on_line)?.finished, None));
    }
    let mut cfg = test_host::Config::new(batch, art.kernel.clone(), art.initrd.clone());
    cfg.daxvmm = Some(art.daxvmm.clone());
    cfg.mem = vm.mem;
    cfg.timeout = Duration::from_secs(vm.timeout);
    cfg.case_timeout = Duration::from_secs(vm.case_timeout);
    cfg.stall = Duration::from_secs(vm.case_timeout + 60);
    cfg.with_qemu = vm.with_qemu;
    cfg.adds = vm.adds;
    let run = test_host::run(&cfg, &mut on_line)?;
    match run.end {
        End::Done => Ok((run.console.finished, None)),
        End::NoKvm(why) => Err(BenchError::NoKvm(why)),
        End::Fault(fault) => Ok((run.console.finished, Some((fault, run.console_log)))),
    }
}

fn output<'a>(out: &'a BTreeMap<String, CaseLog>, name: &str) -> &'a str {
    out.get(name).map_or("", |c| c.console.as_str())
}

/// The last `n` lines of a case's output on stderr, to show why a figure is missing.
fn show_tail(out: &BTreeMap<String, CaseLog>, name: &str, n: usize) {
    let lines: Vec<&str> = output(out, name).lines().collect();
    eprintln!("==> {name} (last {n} lines) <==");
    for l in &lines[lines.len().saturating_sub(n)..] {
        eprintln!("{l}");
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn boot(a: BootArgs) -> Result<(), BenchError> {
    need_qemu()?;
    let timer = build_guest_tool("daxvmm-boot-timer")?;
    let launder = a.common.launder_mib;
    let (place, art) = setup(a.common)?;
    let machine = match a.qemu_machine {
        Machine::Pc => "pc",
        Machine::Microvm => "microvm",
    };
    let vmlinux = a
        .vmlinux
        .or_else(|| std::env::var_os("DAXVMM_GUEST_VMLINUX").map(PathBuf::from))
        .or_else(|| Some(art.kernel.with_file_name("vmlinux")))
        .filter(|p| p.is_file());
    match &vmlinux {
        Some(v) => log(&format!("the vmlinux side boots {}", v.display())),
        None => log("no vmlinux beside the bzImage (--vmlinux PATH): the vmlinux side is left out"),
    }
    // Nested, the test host VM gets it as /bin/vmlinux (test-host-vm --add).
    let vmlinux_at = vmlinux.as_ref().map(|v| daxvmm_tests::run::added_path(place, v));
    let adds = [Some(timer.clone()), vmlinux].into_iter().flatten().collect();
    let opts = BootOpts {
        runs: a.runs as usize,
        mem: a.mem,
        cpus: a.cpus.into(),
        machine: machine.into(),
        vmlinux: vmlinux_at,
    };
    let sides = bench_boot::sides(&opts);
    let batch = bench_boot::boot_batch(&opts, &paths(place, &art, Some(&timer), launder));
    log(&format!(
        "benchmark: 2 warm-up boots, then {} boots each of {} (qemu -machine {machine}), {} vCPU(s), {}, {}",
        opts.runs,
        sides.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
        opts.cpus,
        opts.mem,
        place.name()
    ));
    let boots = (a.runs as usize * sides.len() + bench_boot::WARMUP.len()) as u64;
    // 12G: room for the big side's 8G of guest RAM (daxvmm refuses more RAM than its host has).
    let vm = Vm { mem: "12G".into(), timeout: 300 + boots * 120, case_timeout: 300, with_qemu: true, adds };
    let out = run(place, &art, batch, vm)?;
    let guest = (file_name(&art.kernel), file_name(&art.initrd));
    let report = BootReport::from_cases(place, opts, guest, |name| output(&out, name));
    print!("{}", report.table());
    for name in report.failed() {
        show_tail(&out, &name, 10);
    }
    let none = |side| report.sides.iter().any(|(s, b)| *s == side && b.median().is_none());
    if none(bench_boot::Side::Daxvmm) || none(bench_boot::Side::Qemu) {
        return Err(BenchError::NoInit);
    }
    Ok(())
}

fn pmem(a: PmemArgs) -> Result<(), BenchError> {
    need_qemu()?;
    let launder = a.common.launder_mib;
    let (place, art) = setup(a.common)?;
    let check = build_guest_tool("daxvmm-dax-check")?;
    let opts = PmemOpts { mib: a.mib, passes: a.passes, rounds: a.rounds };
    let batch = bench_pmem::batch(&opts, &paths(place, &art, Some(&check), launder));
    log(&format!(
        "benchmark: memcpy bandwidth of a {} MiB DAX file, {} passes; {} rounds of host, daxvmm and qemu on \
         NFIT and on virtio-pmem ({})",
        opts.mib,
        opts.passes,
        opts.rounds,
        place.name()
    ));
    let vm = Vm {
        mem: opts.vm_mem(),
        timeout: 600 + 1800 * u64::from(opts.rounds),
        case_timeout: 1500,
        with_qemu: true,
        adds: vec![check],
    };
    let out = run(place, &art, batch, vm)?;
    let report = PmemReport::from_cases(place, opts, |name| bench_pmem::bandwidth(output(&out, name)));
    print!("{}", report.table());
    if !report.complete() {
        for (r, round) in (1..).zip(&report.rounds) {
            for ((case, _), bw) in bench_pmem::PMEM_CASES.iter().zip(round) {
                if bw.is_none() {
                    show_tail(&out, &bench::round_case(case, r), 20);
                }
            }
        }
        return Err(BenchError::NoMeasurement);
    }
    Ok(())
}

fn blk(a: BlkArgs) -> Result<(), BenchError> {
    need_qemu()?;
    let launder = a.common.launder_mib;
    let (place, art) = setup(a.common)?;
    let img_dir = match place {
        Where::Direct => std::env::temp_dir().display().to_string(),
        Where::Nested => "/tmp".into(),
    };
    let opts = BlkOpts { mib: a.mib, rand_ops: a.rand_ops, img_dir, rounds: a.rounds };
    let batch = bench_blk::batch(&opts, &paths(place, &art, None, launder));
    log(&format!(
        "benchmark: O_DIRECT I/O on a {} MiB virtio-blk disk, {} random requests each way; {} rounds of \
         daxvmm and qemu ({})",
        opts.mib,
        opts.rand_ops,
        opts.rounds,
        place.name()
    ));
    // The images live in the test host VM's RAM (its root is an initramfs), one at a time.
    let vm = Vm {
        mem: format!("{}G", (a.mib + 3072).div_ceil(1024)),
        timeout: 600 + 1200 * u64::from(opts.rounds),
        case_timeout: 1500,
        with_qemu: true,
        adds: Vec::new(),
    };
    let out = run(place, &art, batch, vm)?;
    let side =
        |name: &str, round| bench_blk::BlkFigures::parse(output(&out, &bench::round_case(name, round)));
    let rounds = (1..=opts.rounds)
        .map(|r| bench_blk::Round { daxvmm: side("daxvmm", r), qemu: side("qemu", r) })
        .collect();
    let report = bench_blk::Report { place, rounds, opts };
    print!("{}", report.table());
    if !report.complete() {
        for (r, round) in (1..).zip(&report.rounds) {
            for (name, figures) in [("daxvmm", round.daxvmm), ("qemu", round.qemu)] {
                if figures.is_none() {
                    show_tail(&out, &bench::round_case(name, r), 20);
                }
            }
        }
        return Err(BenchError::NoMeasurement);
    }
    Ok(())
}

fn race(a: RaceArgs) -> Result<(), BenchError> {
    let (place, art) = setup(a.common)?;
    // The reports of `daxvmm test`: kept on this host when direct (their path is logged).
    let out_dir = match place {
        Where::Direct => {
            let d = std::env::temp_dir().join(format!("daxvmm-bench-race.{}", std::process::id()));
            std::fs::create_dir_all(&d)
                .map_err(|source| BenchError::CreateDir { path: d.clone(), source })?;
            log(&format!("daxvmm test reports go to {}", d.display()));
            d.display().to_string()
        }
        Where::Nested => "/tmp/bench-race".into(),
    };
    let batch = bench_race::batch(a.baseline_runs as usize, &out_dir, &paths(place, &art, None, 0));
    log(&format!(
        "benchmark: {} mutants on ext4, forced schedules vs {} sleep-driven runs vs the sequential checks ({})",
        daxvmm_race::MUTANTS.len(),
        a.baseline_runs,
        place.name()
    ));
    let vm = Vm { mem: "4G".into(), timeout: 3600, case_timeout: 1500, with_qemu: false, adds: Vec::new() };
    // A mutant's three cases compare kill counts, not times across VMs, so a case may run again.
    let (out, faults) = run_rerunning(place, &art, &batch, &vm)?;
    let report = bench_race::Report::parse(place, |name| output(&out, name));
    print!("{}", report.table());
    print_faults(&faults, "");
    if !report.complete() {
        show_tails(&out, 15);
        return Err(BenchError::NoResults("mutant's run"));
    }
    Ok(())
}

/// The test host VM faults of a [`run_rerunning`] batch; `note` says what the reruns mean for the figures.
fn print_faults(faults: &[String], note: &str) {
    println!(
        "test host VM faults: {}{}",
        faults.len(),
        if faults.is_empty() {
            String::new()
        } else {
            format!(" (their unfinished cases ran again in a new test host VM{note})")
        }
    );
    for f in faults {
        println!("  {f}");
    }
}

/// The last `n` lines of every case, when figures are missing.
fn show_tails(out: &BTreeMap<String, CaseLog>, n: usize) {
    for name in out.keys() {
        show_tail(out, name, n);
    }
}

/// check's arguments: `-g GROUP` and the tests; `-g dax` when neither is given.
fn check_args(group: Option<String>, tests: Vec<String>) -> Vec<String> {
    let group = if tests.is_empty() { Some(group.unwrap_or_else(|| "dax".into())) } else { group };
    group.into_iter().flat_map(|g| ["-g".to_string(), g]).chain(tests).collect()
}

fn suites(a: SuitesArgs) -> Result<(), BenchError> {
    need_qemu()?;
    let image_size = std::fs::metadata(&a.rootfs)
        .map_err(|source| BenchError::Rootfs { path: a.rootfs.clone(), source })?
        .len();
    let (place, art) = setup(a.common)?;
    let opts = SuitesOpts {
        check_args: check_args(a.group, a.tests),
        fs: a.fs,
        ndctl: a.ndctl.into_iter().filter(|t| !t.is_empty()).collect(),
        image_size,
    };
    let p = paths(place, &art, None, 0);
    let rootfs = daxvmm_tests::run::added_path(place, &a.rootfs);
    let out = match place {
        Where::Direct => target_dir().join("bench-suites").display().to_string(),
        Where::Nested => "/tmp/bench-suites".into(),
    };
    let paths = SuitePaths { daxvmm: p.daxvmm, kernel: p.kernel, rootfs, out };
    let batch = bench_suites::batch(&opts, &paths);
    log(&format!(
        "benchmark: fstests {} on {} and ndctl's {} under daxvmm and QEMU ({})",
        opts.check_args.join(" "),
        opts.fs.join(","),
        if opts.ndctl.is_empty() { "(none)".to_string() } else { opts.ndctl.join(" ") },
        place.name()
    ));
    // The guests' RAM and NVDIMMs of the largest case (QEMU's ndctl guest: 5 GiB and the image), with
    // room for the test host VM's own.
    let vm = Vm {
        mem: "8G".into(),
        timeout: 3 * 3600,
        case_timeout: 3600,
        with_qemu: true,
        adds: vec![a.rootfs.clone()],
    };
    let (out, faults) = run_rerunning(place, &art, &batch, &vm)?;
    let side = |name: &str| Side {
        rows: bench_suites::rows(output(&out, name)),
        wall: out.get(name).map(|c| c.wall),
    };
    let mut suites = vec![("fstests".to_string(), side("daxvmm_fstests"), side("qemu_fstests"))];
    if !opts.ndctl.is_empty() {
        suites.push(("ndctl".to_string(), side("daxvmm_ndctl"), side("qemu_ndctl")));
    }
    let report = bench_suites::Report { place, suites };
    print!("{}", report.table());
    print_faults(&faults, ": those wall times are from another VM");
    if !report.complete() {
        show_tails(&out, 25);
        return Err(BenchError::NoResults("suite run"));
    }
    match report.differences() {
        0 => Ok(()),
        n => Err(BenchError::Differ(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended() -> CaseLog {
        CaseLog { exit_code: 0, console: String::new(), wall: Duration::ZERO }
    }

    #[test]
    fn a_dead_vm_leaves_exactly_its_unfinished_cases_to_run_again() {
        let batch = "forced-a\tdaxvmm test a\nbaseline-a\tdaxvmm test a --sleeps\nseq-a\tdaxvmm a\n";
        let mut done = Outputs::new();
        assert_eq!(unfinished(batch, &done), batch);
        done.insert("forced-a".into(), ended());
        assert_eq!(unfinished(batch, &done), "baseline-a\tdaxvmm test a --sleeps\nseq-a\tdaxvmm a\n");
        done.insert("baseline-a".into(), ended());
        done.insert("seq-a".into(), ended());
        assert_eq!(unfinished(batch, &done), "");
    }
}
