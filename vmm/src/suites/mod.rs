//! `daxvmm fstests`: one guest boot of the suite image (scripts/build-guest-rootfs.sh) that runs
//! fstests' `check` on each filesystem in turn, with `-o dax=always` on two fsdax NVDIMMs, and the
//! results read back from its console ([`check_output`]) and written to `--out` ([`report`]).
//!
//! The guest gets three NVDIMMs: pmem0 is the image (raw, `share=off`, root=/dev/pmem0), pmem1 and
//! pmem2 become TEST_DEV and SCRATCH_DEV; images/rootfs/daxvmm-fstests turns them into fsdax
//! namespaces and writes fstests' local.config.

pub mod check_output;
pub mod report;

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use thiserror::Error;

use crate::boot::cpuid::XsavePolicy;
use crate::capture::Capture;
use crate::cli::fstests::FstestsArgs;
use crate::cli::run::{check_file, BASE_CMDLINE};
use crate::pmem::spec::{PmemSpec, PmemSpecError};
use crate::units::{format_size, MIB};
use crate::vm::{self, Outcome, VmConfig};

/// Exit code when a test failed.
pub const EXIT_FAILED: u8 = 10;
/// Exit code when the guest did not finish every filesystem (or daxvmm could not run it).
pub const EXIT_INCOMPLETE: u8 = 1;
/// The kernel's command line buffer on x86 (COMMAND_LINE_SIZE), with room for its terminator.
const CMDLINE_MAX: usize = 2047;

/// Why `daxvmm fstests` could not start.
#[derive(Debug, Error)]
pub enum SuiteError {
    /// The image cannot be used.
    #[error("--rootfs {path}: {why}")]
    Rootfs {
        /// The path given.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A pmem size that the NVDIMM rules refuse.
    #[error("--pmem-size: {0}")]
    PmemSize(PmemSpecError),
    /// Too many tests for the kernel's command line.
    #[error("the guest command line would be {0} bytes, over the kernel's {CMDLINE_MAX}: name fewer tests, or a group with -g")]
    CmdlineTooLong(usize),
}

/// The image as pmem0: its size must be a multiple of 2 MiB, since it is the NVDIMM's size.
fn rootfs_region(path: &Path) -> Result<PmemSpec, SuiteError> {
    let shown = path.display().to_string();
    let bad = |why: String| SuiteError::Rootfs { path: shown.clone(), why };
    check_file("--rootfs", path).map_err(|e| bad(e.to_string()))?;
    let size = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?.len();
    if size == 0 || !size.is_multiple_of(2 * MIB) {
        return Err(bad(format!(
            "its size ({size} bytes) must be a non-zero multiple of 2M (scripts/build-guest-rootfs.sh makes such images)"
        )));
    }
    let mut spec = PmemSpec::parse(&format_size(size)).map_err(|e| bad(e.to_string()))?;
    spec.file = Some(path.to_path_buf());
    spec.share = false;
    Ok(spec)
}

/// The kernel command line: root on pmem0, the image's init, and the runner with its arguments.
fn cmdline(args: &FstestsArgs) -> Result<String, SuiteError> {
    let mut c = format!(
        "{BASE_CMDLINE} root=/dev/pmem0 rootwait rw init=/usr/local/sbin/daxvmm-init -- daxvmm-fstests --fs {} --",
        args.fs.join(",")
    );
    for a in args.check_args() {
        c.push(' ');
        c.push_str(&a);
    }
    if c.len() > CMDLINE_MAX {
        return Err(SuiteError::CmdlineTooLong(c.len()));
    }
    Ok(c)
}

/// `daxvmm fstests`: its exit code (0 nothing failed, [`EXIT_FAILED`], [`EXIT_INCOMPLETE`]).
pub fn fstests(args: &FstestsArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let device = PmemSpec::parse(&format_size(args.pmem_size)).map_err(SuiteError::PmemSize)?;
    // Echoed: check's line per test is the progress.
    let capture = Capture::new(true);
    let cfg = VmConfig {
        kernel: args.kernel.clone(),
        initrd: None,
        cmdline: cmdline(args)?,
        mem: args.mem,
        cpus: args.cpus,
        timeout: Some(args.timeout),
        timeout_after_init: None,
        xsave: XsavePolicy::for_this_host(),
        pmem: vec![rootfs_region(&args.rootfs)?, device.clone(), device],
        fault_schedule: None,
        seccomp: args.seccomp,
        last_run: true,
        race: None,
        console: Some(capture.clone()),
    };
    cfg.check()?;
    log::info!(
        "fstests on {} with check {} (TEST_DEV and SCRATCH_DEV: fsdax NVDIMMs of {}); results in {}",
        args.fs.join(", "),
        args.check_args().join(" "),
        format_size(args.pmem_size),
        args.out.display()
    );
    let outcome = vm::run(&cfg, started)?;
    let console = capture.text();
    let sections = check_output::parse(&console);
    let table = report::write(&args.out, &sections, &args.fs, &console)?;
    // The result, after the echoed console on stdout.
    let _ = writeln!(std::io::stdout().lock(), "\n{table}");
    let failed = sections.iter().any(|s| report::counts(s).failed > 0);
    let complete = sections.len() == args.fs.len() && sections.iter().all(check_output::Section::complete);
    if !matches!(outcome, Outcome::PowerOff | Outcome::GuestFailed(_)) {
        log::error!("the guest ended with {outcome} before the suite finished");
    }
    log::info!("results in {} (junit.xml, summary.txt, console.log)", args.out.display());
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

    fn args(extra: &[&str]) -> FstestsArgs {
        let base = ["daxvmm", "fstests", "--kernel", "/k", "--rootfs", "/r"];
        match Cli::try_parse_command(base.iter().chain(extra)).unwrap() {
            Command::Fstests(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_line_names_the_filesystems_and_checks_arguments() {
        let c = cmdline(&args(&["--fs", "xfs", "-g", "dax", "generic/413"])).unwrap();
        assert!(c.starts_with(BASE_CMDLINE), "{c}");
        assert!(c.ends_with(" root=/dev/pmem0 rootwait rw init=/usr/local/sbin/daxvmm-init -- daxvmm-fstests --fs xfs -- -g dax generic/413"), "{c}");
        let all = args(&[]);
        assert_eq!(all.fs, ["ext4", "xfs"]);
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
        let e = cmdline(&args(&refs)).unwrap_err();
        assert!(e.to_string().contains("over the kernel's 2047"), "{e}");
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
