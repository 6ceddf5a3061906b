//! Why `daxvmm-race` could not do what it was asked: a bad command line (printed with the usage, exit 2)
//! or a run it could not do (printed as that run's `@@race skip run=N REASON`; the host counts the run
//! as skipped, not failed). The messages are that output and keep their wording; the variants' docs say
//! what to do.

use std::ffi::NulError;
use std::io;
use std::num::ParseIntError;
use std::sync::Arc;

use daxvmm_refcount_test::sys::{ename, SysError};

/// `s` in double quotes with Rust's string escapes (`\"`, `\\`, `\n`, `\u{..}`; `'` as is): how the plan
/// items were quoted in these messages before they were typed.
fn quoted(s: &str) -> String {
    let mut q = String::from('"');
    for c in s.chars() {
        if c == '\'' {
            q.push(c);
        } else {
            q.extend(c.escape_debug());
        }
    }
    q.push('"');
    q
}

/// Why `daxvmm-race` rejected its command line, or could not do a run (that run's skip reason).
#[derive(Debug, thiserror::Error)]
pub enum RaceError {
    /// An option was given without its value: give one (see the usage).
    #[error("{0} needs a value")]
    MissingValue(String),
    /// A `--plan` item is not `FS:SCENARIO:RUNS`.
    #[error("bad plan item {}", quoted(.0))]
    PlanItem(String),
    /// A `--plan` item names a filesystem other than ext4 or xfs.
    #[error("plan item {}: filesystem must be ext4 or xfs", quoted(.0))]
    PlanFs(String),
    /// A `--plan` item names a scenario this program does not have (the usage lists them): the host and
    /// the guest program come from different trees; rebuild the initramfs.
    #[error("plan item {}: unknown scenario {name}", quoted(.item))]
    PlanScenario {
        /// The item.
        item: String,
        /// The scenario name in it.
        name: String,
    },
    /// A `--plan` item's RUNS is not a number.
    #[error("plan item {}: bad run count", quoted(.item))]
    PlanRuns {
        /// The item.
        item: String,
        /// Why the count did not parse.
        source: ParseIntError,
    },
    /// An argument this program does not know (see the usage).
    #[error("unknown argument {0}")]
    UnknownArgument(String),
    /// No `--plan`: give one.
    #[error("--plan is required")]
    NoPlan,
    /// /bin/sh could not be started: the initramfs needs a shell (busybox).
    #[error("sh: {0}")]
    Shell(io::Error),
    /// A shell script failed (its stderr is in the message): for the filesystem setup, /tests/lib.sh,
    /// ndctl and mkfs.ext4/mkfs.xfs must be in the initramfs (scripts/build-initramfs.sh) and the NVDIMM
    /// (`--dev`) must exist.
    #[error("`{script}` failed: {stderr}")]
    Script {
        /// The script.
        script: String,
        /// Its trimmed stderr.
        stderr: String,
    },
    /// The filesystem of this plan item could not be made and mounted, so none of its runs are done (one
    /// error, shared by all of them).
    #[error("filesystem setup: {0}")]
    Setup(#[source] Arc<RaceError>),
    /// The scenario needs more threads than the guest has CPUs (one CPU per thread): give the VM more
    /// CPUs.
    #[error("needs {threads} CPUs, the guest has {cpus}")]
    TooFewCpus {
        /// The scenario's threads.
        threads: usize,
        /// The guest's online CPUs.
        cpus: usize,
    },
    /// The kernel has no dax_refcount driver: boot one built with daxvmm's guest-kernel patches.
    #[error("needs /dev/dax_refcount (a kernel with daxvmm's guest-kernel patches)")]
    NoDriver,
    /// The driver did not bind daxvmm's fault-injection device: run the VM under `daxvmm test`, which
    /// gives the guest that device.
    #[error("needs the fault injector (the driver did not bind DAXF0001)")]
    NoFaultInjector,
    /// The driver does not know DAX_RC_TAG: boot a kernel with guest patch 0007 (and 0006).
    #[error("needs kernel hold points (DAX_RC_TAG: {}; guest patch 0007)", ename(*.0))]
    NoHoldPoints(i32),
    /// Making, mapping or opening a file of the run failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// A driver ioctl of the run's setup failed (`what` names it): EFAULT or EOPNOTSUPP on a PIN means
    /// the filesystem is not mounted with `-o dax` (or the NVDIMM is not in fsdax mode).
    #[error("{what}: {}", ename(*.errno))]
    Ioctl {
        /// The ioctl, as the message names it.
        what: &'static str,
        /// Its errno.
        errno: i32,
    },
    /// mount(8) could not be started: the initramfs needs it (busybox).
    #[error("mount: {0}")]
    MountSpawn(io::Error),
    /// The filesystem a scenario unmounted could not be mounted again (mount's stderr is in the message);
    /// the following runs of this plan item will fail to set up until it is.
    #[error("mounting {dev} on {dir} again failed: {stderr}")]
    Remount {
        /// The NVDIMM.
        dev: String,
        /// The mount point.
        dir: String,
        /// mount's trimmed stderr.
        stderr: String,
    },
    /// `--dev virtio` or `--raw nfit` found no pmem disk on that bus: the kernel lacks the driver, or the
    /// VM lacks the device.
    #[error("no pmem disk on the {0} bus (/sys/block/pmem*)")]
    NoDisk(String),
    /// The O_DIRECT scenario needs a raw NVDIMM: give a second one to the VM and pass it with `--raw`.
    #[error("needs a second, non-DAX NVDIMM as the O_DIRECT source (--raw)")]
    NoRawDevice,
    /// The `--raw` path has a NUL byte: give a device path.
    #[error(transparent)]
    RawPath(NulError),
    /// The `--raw` device could not be opened with O_DIRECT: it must be a block device that supports
    /// direct I/O (a raw-mode NVDIMM, e.g. /dev/pmem1).
    #[error("open {raw} O_DIRECT: {source}")]
    OpenRaw {
        /// The device.
        raw: String,
        /// What open(2) said.
        source: io::Error,
    },
    /// pipe2(2) failed: out of file descriptors or memory.
    #[error("pipe2: {0}")]
    Pipe(io::Error),
    /// io_uring_setup(2) failed: a kernel without CONFIG_IO_URING says ENOSYS.
    #[error("io_uring_setup: {0} (the guest kernel needs CONFIG_IO_URING=y)")]
    IoUring(io::Error),
    /// vmsplice(2) did not take the whole page (`n` is what it returned): a DAX page it cannot splice;
    /// the scenario needs a kernel that lets vmsplice reference fs-dax pages.
    #[error("vmsplice: {n} ({source})")]
    Vmsplice {
        /// vmsplice's return value.
        n: isize,
        /// The errno after it.
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages are printed as `@@race skip` reasons and usage errors: they keep the wording of the
    /// String errors they replaced (the plan item quoted as `{:?}` quoted it).
    #[test]
    fn messages() {
        let item = String::from("ext4:truncate-unpin:x");
        let bad: ParseIntError = "x".parse::<u64>().expect_err("not a number");
        let cases = [
            (RaceError::PlanItem("ext4:a".into()), r#"bad plan item "ext4:a""#.to_string()),
            (
                RaceError::PlanFs("btrfs:a:1".into()),
                format!("plan item {:?}: filesystem must be ext4 or xfs", "btrfs:a:1"),
            ),
            (
                RaceError::PlanScenario { item: "ext4:nope:1".into(), name: "nope".into() },
                format!("plan item {:?}: unknown scenario nope", "ext4:nope:1"),
            ),
            (
                RaceError::PlanRuns { item: item.clone(), source: bad },
                format!("plan item {item:?}: bad run count"),
            ),
            (RaceError::PlanItem("a\"b\\c\n".into()), format!("bad plan item {:?}", "a\"b\\c\n")),
            (
                RaceError::NoHoldPoints(libc::ENOTTY),
                "needs kernel hold points (DAX_RC_TAG: ENOTTY; guest patch 0007)".into(),
            ),
            (RaceError::Ioctl { what: "second PIN", errno: libc::EFAULT }, "second PIN: EFAULT".into()),
            (RaceError::TooFewCpus { threads: 3, cpus: 2 }, "needs 3 CPUs, the guest has 2".into()),
            (
                RaceError::Setup(Arc::new(RaceError::Script { script: "mkfs".into(), stderr: "no".into() })),
                "filesystem setup: `mkfs` failed: no".into(),
            ),
        ];
        for item in ["ext4:a'b:1", "x\u{301}y\u{7f}\t\u{200b}é", ""] {
            assert_eq!(quoted(item), format!("{item:?}"));
        }
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
        let nul = std::ffi::CString::new("a\0b").expect_err("a NUL byte");
        let text = nul.to_string();
        assert_eq!(RaceError::RawPath(nul).to_string(), text);
    }
}
