//! The standard suites in the suite image (scripts/build-guest-rootfs.sh): `daxvmm fstests` runs fstests'
//! `check` on each filesystem in turn with `-o dax=always` on two fsdax NVDIMMs, `daxvmm ndctl-tests`
//! runs ndctl's own test scripts on a legacy e820 pmem range. One guest boot each; the results are read
//! back from its console ([`check_output`]) and written to `--out` ([`report`]).
//!
//! pmem0 is the image (raw, `share=off`, root=/dev/pmem0); the runner scripts in images/rootfs/ set up
//! the other devices and print what the host reads (docs/suites.md).

pub mod check_output;
pub mod report;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use thiserror::Error;

use crate::boot::cpuid::XsavePolicy;
use crate::capture::Capture;
use crate::cli::run::{check_file, BASE_CMDLINE};
use crate::cli::suites::{FstestsArgs, NdctlArgs, SuiteBoot, SuiteReportArgs};
use crate::kernel_tree::{self, modules::ModulesError, modules::TreeModules};
use crate::pmem::spec::{PmemKind, PmemSpec, PmemSpecError};
use crate::units::{format_size, GIB, MIB};
use crate::vm::{self, Outcome, VmConfig};

/// Exit code when a test failed.
pub const EXIT_FAILED: u8 = 10;
/// Exit code when the guest did not finish every section (or daxvmm could not run it).
pub const EXIT_INCOMPLETE: u8 = 1;
/// The kernel's command line buffer on x86 (COMMAND_LINE_SIZE), with room for its terminator.
const CMDLINE_MAX: usize = 2047;

/// Why a suite could not start.
#[derive(Debug, Error)]
pub enum SuiteError {
    /// The image is not a readable file.
    #[error(transparent)]
    RootfsFile(#[from] crate::cli::run::CliError),
    /// The image cannot be used.
    #[error("--rootfs {path}: {why}")]
    Rootfs {
        /// The path given.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A device size that the pmem rules refuse.
    #[error("{0}: {1}")]
    DeviceSize(&'static str, PmemSpecError),
    /// ndctl's scripts fallocate 1 GiB on their device.
    #[error("--e820-size must be at least 2G: ndctl's scripts put a 1 GiB file on it")]
    E820TooSmall,
    /// The console log of `suite-report` cannot be read.
    #[error("{path}: {why}")]
    Console {
        /// The path given.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The output directory cannot be made.
    #[error("--out {path}: {why}")]
    Out {
        /// The path given.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The tree's modules cannot be packed.
    #[error(transparent)]
    Modules(#[from] ModulesError),
    /// Too many tests for the kernel's command line.
    #[error("the guest command line would be {0} bytes, over the kernel's {CMDLINE_MAX}: name fewer tests, or a group with -g")]
    CmdlineTooLong(usize),
}

/// The image as pmem0: its size must be a multiple of 2 MiB, since it is the NVDIMM's size.
fn rootfs_region(path: &Path) -> Result<PmemSpec, SuiteError> {
    let shown = path.display().to_string();
    let bad = |why: String| SuiteError::Rootfs { path: shown.clone(), why };
    check_file("--rootfs", path)?;
    let size = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?.len();
    if size == 0 || !size.is_multiple_of(2 * MIB) {
        return Err(bad(format!(
            "its size ({size} bytes) must be a non-zero multiple of 2M (scripts/build-guest-rootfs.sh makes such images)"
        )));
    }
    private_file_region(path, size).map_err(|e| bad(e.to_string()))
}

/// `path` as a raw NVDIMM of `size` bytes mapped `share=off`: the guest's writes never reach the file.
fn private_file_region(path: &Path, size: u64) -> Result<PmemSpec, PmemSpecError> {
    let mut spec = PmemSpec::parse(&format_size(size))?;
    spec.file = Some(path.to_path_buf());
    spec.share = false;
    Ok(spec)
}

/// Kernel messages below warnings stay in the guest's ring buffer (fstests and ndctl's tests read it
/// with dmesg): the console is a UART, one exit per byte, and the suites' mounts and boots print
/// hundreds of informational lines. The user's `--cmdline loglevel=7` comes later and wins.
const QUIET_CONSOLE: &str = "loglevel=5";

/// The kernel command line: the user's `extra` parameters, root on pmem0, the image's init, whether an
/// NVDIMM carries modules for it to load, and the runner command `runner`.
fn cmdline(extra: &str, runner: &[String], modules: bool) -> Result<String, SuiteError> {
    let c = format!(
        "{BASE_CMDLINE} {QUIET_CONSOLE}{}{extra} root=/dev/pmem0 rootwait rw init=/usr/local/sbin/daxvmm-init{} -- {}",
        if extra.is_empty() { "" } else { " " },
        if modules { " daxvmm.modules" } else { "" },
        runner.join(" ")
    );
    if c.len() > CMDLINE_MAX {
        return Err(SuiteError::CmdlineTooLong(c.len()));
    }
    Ok(c)
}

/// One suite boot: the runner's command, the devices after the image, the sections it must report.
struct Plan {
    name: &'static str,
    mem: u64,
    runner: Vec<String>,
    devices: Vec<PmemSpec>,
    sections: Vec<String>,
    out: PathBuf,
}

fn device(what: &'static str, size: u64, e820: bool) -> Result<PmemSpec, SuiteError> {
    let mut spec = PmemSpec::parse(&format_size(size)).map_err(|e| SuiteError::DeviceSize(what, e))?;
    if e820 {
        spec.kind = PmemKind::E820;
    }
    Ok(spec)
}

/// The raw NVDIMM dm log-writes logs to (fstests' LOGWRITES_DEV, generic/470).
const LOGWRITES_SIZE: u64 = GIB;

fn fstests_plan(args: &FstestsArgs) -> Result<Plan, SuiteError> {
    let dev = device("--pmem-size", args.pmem_size, false)?;
    let logwrites = device("LOGWRITES_DEV", LOGWRITES_SIZE, false)?;
    let mut runner = vec!["daxvmm-fstests".into(), "--fs".into(), args.fs.join(",")];
    if let Some(shard) = args.shard {
        runner.extend(["--shard".into(), shard.to_string()]);
    }
    runner.push("--".into());
    runner.extend(args.check_args());
    Ok(Plan {
        name: "fstests",
        mem: args.boot.mem.unwrap_or(GIB),
        runner,
        devices: vec![dev.clone(), dev, logwrites],
        sections: args.fs.clone(),
        out: args.boot.out.clone().unwrap_or_else(|| "daxvmm-fstests-results".into()),
    })
}

fn ndctl_plan(args: &NdctlArgs) -> Result<Plan, SuiteError> {
    if args.e820_size < 2 * GIB {
        return Err(SuiteError::E820TooSmall);
    }
    let mut runner = vec!["daxvmm-ndctl-tests".to_string()];
    runner.extend(args.tests.iter().cloned());
    Ok(Plan {
        name: "ndctl's tests",
        mem: args.boot.mem.unwrap_or(2560 * MIB),
        runner,
        devices: vec![device("--e820-size", args.e820_size, true)?],
        sections: vec!["ndctl".into()],
        out: args.boot.out.clone().unwrap_or_else(|| "daxvmm-ndctl-results".into()),
    })
}

/// `daxvmm fstests`: its exit code (0 nothing failed, [`EXIT_FAILED`], [`EXIT_INCOMPLETE`]).
pub fn fstests(args: &FstestsArgs) -> anyhow::Result<u8> {
    log::info!(
        "fstests on {} with check {}{} (TEST_DEV and SCRATCH_DEV: fsdax NVDIMMs of {})",
        args.fs.join(", "),
        match args.check_args() {
            a if a.is_empty() => "and no test named (every test)".to_string(),
            a => a.join(" "),
        },
        args.shard.map_or(String::new(), |s| format!(", shard {s} of its tests")),
        format_size(args.pmem_size)
    );
    run(&args.boot, fstests_plan(args)?)
}

/// `daxvmm ndctl-tests`: exit codes as [`fstests`].
pub fn ndctl_tests(args: &NdctlArgs) -> anyhow::Result<u8> {
    log::info!("ndctl's {} on a {} e820 pmem range", args.tests.join(", "), format_size(args.e820_size));
    run(&args.boot, ndctl_plan(args)?)
}

fn run(boot: &SuiteBoot, plan: Plan) -> anyhow::Result<u8> {
    let started = Instant::now();
    // Echoed: the runner's line per test is the progress.
    let capture = Capture::new(true);
    let mut pmem = vec![rootfs_region(&boot.rootfs)?];
    pmem.extend(plan.devices);
    if let Some(modules) = &boot.modules {
        // Last, so the runners' devices keep their names.
        pmem.push(modules_region(modules, &plan.out)?);
    }
    let cfg = VmConfig {
        kernel: boot.kernel.clone(),
        initrd: None,
        cmdline: cmdline(&boot.cmdline, &plan.runner, boot.modules.is_some())?,
        mem: plan.mem,
        cpus: boot.cpus,
        timeout: Some(boot.timeout),
        timeout_after_init: None,
        xsave: XsavePolicy::for_this_host(),
        pmem,
        disks: Vec::new(),
        fault_schedule: None,
        seccomp: boot.seccomp,
        last_run: true,
        race: None,
        console: Some(capture.clone()),
    };
    cfg.check()?;
    let outcome = vm::run(&cfg, started)?;
    if !matches!(outcome, Outcome::PowerOff | Outcome::GuestFailed(_)) {
        log::error!("the guest ended with {outcome} before {} finished", plan.name);
    }
    let console = capture.text();
    for line in guest_errors(&console) {
        log::error!("the guest: {line}");
    }
    Ok(results(&console, &plan.sections, &plan.out)?)
}

/// How the image's init starts a line about what it could not do (load the tree's modules), which stops
/// it before any test.
const GUEST_ERROR: &str = "daxvmm-guest: error: ";

/// The first few such lines, without control characters: the guest writes them, and they go to the
/// user's terminal outside the echoed console.
fn guest_errors(console: &str) -> Vec<String> {
    console
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix(GUEST_ERROR))
        .take(5)
        .map(|l| l.chars().filter(|c| !c.is_control()).take(300).collect())
        .collect()
}

/// The tree's modules, packed into `out`/guest-modules.cpio, as a raw NVDIMM (share=off).
fn modules_region(modules: &TreeModules, out: &Path) -> Result<PmemSpec, SuiteError> {
    let path = out.join(MODULES_ARCHIVE);
    std::fs::create_dir_all(out)
        .map_err(|e| SuiteError::Out { path: out.display().to_string(), why: e.to_string() })?;
    let size = kernel_tree::modules::pack(modules, &path)?;
    log::info!(
        "{} modules of {} for the guest in {} ({})",
        modules.modules.len(),
        modules.release,
        path.display(),
        format_size(size)
    );
    private_file_region(&path, size).map_err(|e| SuiteError::DeviceSize("the modules archive", e))
}

/// The file in `--out` that carries a kernel tree's modules to the guest.
const MODULES_ARCHIVE: &str = "guest-modules.cpio";

/// The largest console log `daxvmm suite-report` reads.
const MAX_CONSOLE: u64 = 256 * MIB;

/// `daxvmm suite-report`: the results of a suite run whose console another VMM saved.
pub fn suite_report(args: &SuiteReportArgs) -> anyhow::Result<u8> {
    let bad = |why: String| SuiteError::Console { path: args.console.display().to_string(), why };
    check_file("the console log", &args.console)?;
    // One read, bounded: a byte past the limit says the file is too large.
    let mut bytes = Vec::new();
    std::fs::File::open(&args.console)
        .and_then(|f| f.take(MAX_CONSOLE + 1).read_to_end(&mut bytes))
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > MAX_CONSOLE {
        return Err(bad(format!("larger than the {} this reads", format_size(MAX_CONSOLE))).into());
    }
    // A console may carry any byte; the parser reads lines of text.
    let console = String::from_utf8_lossy(&bytes);
    Ok(results(&console, &args.sections, &args.out)?)
}

/// Reads the console, writes the report to `out`, prints the table; the exit code.
fn results(console: &str, expected: &[String], out: &Path) -> Result<u8, report::ReportError> {
    let sections = check_output::parse(console);
    let table = report::write(out, &sections, expected, console)?;
    // The result, after the echoed console on stdout.
    let _ = writeln!(std::io::stdout().lock(), "\n{table}");
    let failed = sections.iter().any(|s| report::counts(s).failed > 0);
    let complete = expected.iter().all(|want| sections.iter().any(|s| &s.fs == want && s.complete()));
    log::info!("results in {} (junit.xml, summary.txt, console.log)", out.display());
    Ok(match (complete, failed) {
        (_, true) => EXIT_FAILED,
        (false, false) => EXIT_INCOMPLETE,
        (true, false) => 0,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    fn ndctl(extra: &[&str]) -> NdctlArgs {
        let base = ["daxvmm", "ndctl-tests", "--kernel", "/k", "--rootfs", "/r"];
        match Cli::try_parse_command(base.iter().chain(extra)).unwrap() {
            Command::NdctlTests(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn args(extra: &[&str]) -> FstestsArgs {
        let base = ["daxvmm", "fstests", "--kernel", "/k", "--rootfs", "/r"];
        match Cli::try_parse_command(base.iter().chain(extra)).unwrap() {
            Command::Fstests(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_line_names_the_filesystems_and_checks_arguments() {
        let c = cmdline(
            "",
            &fstests_plan(&args(&["--fs", "xfs", "-g", "dax", "generic/413"])).unwrap().runner,
            false,
        )
        .unwrap();
        assert!(c.starts_with(BASE_CMDLINE), "{c}");
        assert!(c.ends_with(" root=/dev/pmem0 rootwait rw init=/usr/local/sbin/daxvmm-init -- daxvmm-fstests --fs xfs -- -g dax generic/413"), "{c}");
        let m = cmdline("", &["daxvmm-fstests".into()], true).unwrap();
        assert!(m.ends_with(" init=/usr/local/sbin/daxvmm-init daxvmm.modules -- daxvmm-fstests"), "{m}");
        let extra = args(&["--cmdline", " sysctl.kernel.panic_on_rcu_stall=1   dyndbg=+p "]);
        assert_eq!(extra.boot.cmdline, "sysctl.kernel.panic_on_rcu_stall=1 dyndbg=+p");
        let e = cmdline(&extra.boot.cmdline, &["daxvmm-fstests".into()], false).unwrap();
        assert_eq!(
            e,
            format!(
                "{BASE_CMDLINE} loglevel=5 sysctl.kernel.panic_on_rcu_stall=1 dyndbg=+p root=/dev/pmem0 \
                 rootwait rw init=/usr/local/sbin/daxvmm-init -- daxvmm-fstests"
            )
        );
        assert_eq!(args(&[]).boot.cmdline, "");
        for bad in ["a -- b", "--", "a\tb", "caf\u{e9}"] {
            let base = ["daxvmm", "fstests", "--kernel", "/k", "--rootfs", "/r", "--cmdline", bad];
            assert!(Cli::try_parse_command(base).is_err(), "{bad:?}");
        }
        let all = args(&[]);
        assert_eq!(all.fs, ["ext4", "xfs"]);
        let part = fstests_plan(&args(&["--shard", "2/3", "-g", "dax"])).unwrap();
        assert_eq!(part.runner, ["daxvmm-fstests", "--fs", "ext4,xfs", "--shard", "2/3", "--", "-g", "dax"]);
        for bad in ["0/3", "4/3", "x", "1/2;reboot"] {
            let base = ["daxvmm", "fstests", "--kernel", "/k", "--rootfs", "/r", "--shard", bad];
            assert!(Cli::try_parse_command(base).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_guests_error_lines_are_repeated_few_and_without_control_characters() {
        let mut console = String::from("boot\ndaxvmm-guest: error: insmod x.ko failed\x1b[2J\r\n");
        console.push_str(&"daxvmm-guest: error: again\n".repeat(50));
        let got = guest_errors(&console);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], "insmod x.ko failed[2J");
        assert!(guest_errors("a line that mentions daxvmm-guest: error: inside\n").is_empty());
    }

    #[test]
    fn words_the_guest_shell_would_read_are_refused() {
        for bad in ["generic/413;reboot", "$(x)", "-x", "a b", "a/b/c", "/etc"] {
            let base = ["daxvmm", "fstests", "--kernel", "/k", "--rootfs", "/r", "--", bad];
            assert!(Cli::try_parse_command(base).is_err(), "{bad}");
        }
        assert!(Cli::try_parse_command([
            "daxvmm", "fstests", "--kernel", "/k", "--rootfs", "/r", "--fs", "btrfs"
        ])
        .is_err());
    }

    #[test]
    fn too_many_tests_for_the_kernel_command_line_is_one_error() {
        let many: Vec<String> = (0..400).map(|i| format!("generic/{i:03}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let e = cmdline("", &fstests_plan(&args(&refs)).unwrap().runner, false).unwrap_err();
        assert!(e.to_string().contains("over the kernel's 2047"), "{e}");
    }

    #[test]
    fn ndctl_tests_run_on_an_e820_range_of_2g_or_more() {
        let plan = ndctl_plan(&ndctl(&[])).unwrap();
        assert_eq!(plan.runner, ["daxvmm-ndctl-tests", "dax-ext4.sh", "dax-xfs.sh", "mmap.sh"]);
        assert!(
            plan.devices.len() == 1
                && plan.devices[0].kind == PmemKind::E820
                && plan.devices[0].size == 2 * GIB
        );
        assert_eq!(plan.sections, ["ndctl"]);
        assert_eq!(plan.out, std::path::Path::new("daxvmm-ndctl-results"));
        assert!(matches!(ndctl_plan(&ndctl(&["--e820-size", "1G"])), Err(SuiteError::E820TooSmall)));
        for bad in ["mmap", "../x.sh", "a b.sh", ".sh"] {
            let base = ["daxvmm", "ndctl-tests", "--kernel", "/k", "--rootfs", "/r", bad];
            assert!(Cli::try_parse_command(base).is_err(), "{bad}");
        }
        let fst = fstests_plan(&args(&[])).unwrap();
        assert!(
            fst.devices.len() == 3
                && fst.devices[2].size == GIB
                && fst.devices[0].kind == PmemKind::Nfit
                && fst.out == std::path::Path::new("daxvmm-fstests-results")
        );
    }

    #[test]
    fn the_image_must_be_a_whole_number_of_2m() {
        let dir = std::env::temp_dir().join(format!("daxvmm-suites-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let odd = dir.join("odd.img");
        std::fs::write(&odd, vec![0u8; 4096]).unwrap();
        let e = rootfs_region(&odd).unwrap_err().to_string();
        assert!(e.contains("multiple of 2M"), "{e}");
        let good = dir.join("good.img");
        std::fs::File::create(&good).unwrap().set_len(4 * MIB).unwrap();
        let spec = rootfs_region(&good).unwrap();
        assert!(!spec.share && spec.size == 4 * MIB && spec.file.as_deref() == Some(good.as_path()));
        assert!(rootfs_region(&dir.join("missing.img")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
