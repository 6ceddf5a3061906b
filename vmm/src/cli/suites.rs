//! The options of `daxvmm fstests` and `daxvmm ndctl-tests`: how the suite image boots, and each
//! suite's own choices.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use daxvmm_race::Shard;

use crate::cli::race::parse_mem;
use crate::seccomp::SeccompMode;
use crate::units::{parse_size, parse_timeout};

/// A test name or group for check: letters, digits, `_`, `-` and one `/`, nothing the guest's shell
/// would read as syntax.
fn parse_check_word(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.matches('/').count() <= 1
        && !s.starts_with(['-', '/'])
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-/".contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not an fstests test or group name (like generic/413 or dax)"))
    }
}

/// One of ndctl's test scripts: `NAME.sh`, letters, digits, `_` and `-`.
fn parse_ndctl_test(s: &str) -> Result<String, String> {
    let ok = s.strip_suffix(".sh").is_some_and(|n| {
        !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
    });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not one of ndctl's test scripts (like mmap.sh or dax-ext4.sh)"))
    }
}

/// Extra kernel parameters for the suite image: printable words; not `--`, which would end the
/// kernel's parameters and hand the rest to the image's init.
fn parse_kernel_params(s: &str) -> Result<String, String> {
    if s.split_whitespace().any(|w| w == "--") {
        return Err("'--' would end the kernel's parameters: give only kernel parameters here".into());
    }
    if !s.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err("kernel parameters are printable ASCII words separated by spaces".into());
    }
    Ok(s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// How the suite image boots.
#[derive(Debug, Clone, Args)]
pub struct SuiteBoot {
    /// Guest kernel: a bzImage, or a kernel build tree (its arch/x86/boot/bzImage, once its .config has
    /// everything the suites need; what is missing is listed with the commands that set it). Options a
    /// tree builds as modules are loaded from it, except those the image needs to mount its root
    /// (LIBNVDIMM, ACPI_NFIT, BLK_DEV_PMEM, EXT4_FS), which must be built in. Default $DAXVMM_KERNEL.
    #[arg(long, value_name = "PATH", env = "DAXVMM_KERNEL")]
    pub kernel: PathBuf,
    /// The suite image (scripts/build-guest-rootfs.sh); default $DAXVMM_ROOTFS. Booted as a raw NVDIMM
    /// with share=off: the guest's writes never reach the file.
    #[arg(long, value_name = "PATH", env = "DAXVMM_ROOTFS")]
    pub rootfs: PathBuf,
    /// Where results go: junit.xml, summary.txt, console.log, and per section its log, and the files
    /// the guest sent (default daxvmm-fstests-results or daxvmm-ndctl-results).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Guest RAM (default 1G for fstests, 2560M for ndctl's tests, whose mmap.sh makes a private,
    /// populated, writable copy of a 1 GiB file).
    #[arg(long, value_name = "SIZE", value_parser = parse_mem)]
    pub mem: Option<u64>,
    /// vCPUs.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub cpus: u8,
    /// Stop the guest after this long; the sections it did not finish are reported incomplete.
    #[arg(long, value_name = "DURATION", default_value = "3h", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Seccomp filters: on, log or off (see `daxvmm run --help`).
    #[arg(long, value_name = "MODE", default_value = "on")]
    pub seccomp: SeccompMode,
    /// Extra kernel parameters, e.g. 'sysctl.kernel.panic_on_rcu_stall=1' to end a run whose guest
    /// stalls, or 'loglevel=7' to see the kernel's informational messages on the console too (by
    /// default only warnings and worse: the console is an emulated UART, slow per byte; dmesg and
    /// fstests' results have everything). Not '--'.
    #[arg(long, value_name = "PARAMS", default_value = "", value_parser = parse_kernel_params)]
    pub cmdline: String,
    /// The modules of a `--kernel` build tree that the guest loads (set when the tree is checked).
    #[arg(skip)]
    pub modules: Option<crate::kernel_tree::modules::TreeModules>,
}

/// `daxvmm fstests`.
#[derive(Debug, Clone, Args)]
pub struct FstestsArgs {
    #[command(flatten)]
    pub boot: SuiteBoot,
    /// Filesystems to run check on, in turn, comma-separated.
    #[arg(long, value_name = "FS", value_delimiter = ',', default_value = "ext4,xfs",
          value_parser = ["ext4", "xfs"])]
    pub fs: Vec<String>,
    /// Run this group (check -g GROUP), e.g. dax.
    #[arg(short = 'g', long, value_name = "GROUP", value_parser = parse_check_word)]
    pub group: Option<String>,
    /// Tests to run, e.g. generic/413 generic/428 (with -g: both).
    #[arg(value_name = "TEST", value_parser = parse_check_word)]
    pub tests: Vec<String>,
    /// Run only part I of N of the tests check would run, per filesystem (a stable round-robin split of
    /// check's own list, `check -n`), for a CI matrix or an indexed job; the parts' junit.xml files
    /// merge (a test is in exactly one part).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Size of each of the two fsdax NVDIMMs (TEST_DEV and SCRATCH_DEV).
    #[arg(long, value_name = "SIZE", default_value = "2G", value_parser = parse_size)]
    pub pmem_size: u64,
}

impl FstestsArgs {
    /// check's arguments: `-g GROUP` and the tests.
    pub fn check_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(g) = &self.group {
            a.extend(["-g".to_string(), g.clone()]);
        }
        a.extend(self.tests.iter().cloned());
        a
    }
}

/// `daxvmm ndctl-tests`.
#[derive(Debug, Clone, Args)]
pub struct NdctlArgs {
    #[command(flatten)]
    pub boot: SuiteBoot,
    /// ndctl's test scripts to run, in turn.
    #[arg(value_name = "TEST", value_parser = parse_ndctl_test,
          default_values = ["dax-ext4.sh", "dax-xfs.sh", "mmap.sh"])]
    pub tests: Vec<String>,
    /// Size of the legacy e820 pmem range the scripts find (they fallocate a 1 GiB file on it).
    #[arg(long, value_name = "SIZE", default_value = "2G", value_parser = parse_size)]
    pub e820_size: u64,
}

/// `daxvmm suite-report`.
#[derive(Debug, Clone, Args)]
pub struct SuiteReportArgs {
    /// The guest's console log of a run of the suite image (booted by another VMM, such as QEMU, with
    /// the runner on its command line; scripts/compare-qemu.sh does it).
    #[arg(value_name = "CONSOLE_LOG")]
    pub console: PathBuf,
    /// The sections the run should have: its filesystems for fstests, `ndctl` for ndctl's tests. One
    /// missing or cut short is reported incomplete.
    #[arg(long, value_name = "NAME", value_delimiter = ',', default_value = "ext4,xfs")]
    pub sections: Vec<String>,
    /// Where results go: junit.xml, summary.txt, console.log and per section its log and files.
    #[arg(long, value_name = "DIR", default_value = "daxvmm-suite-report")]
    pub out: PathBuf,
}
