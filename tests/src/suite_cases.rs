//! The cases of the standard-suite tests (tests/tests/suites.rs on the project's kernel, and
//! tests/tests/suites_tree.rs on the Linux 6.12 build tree): the suite image they boot, a kernel build
//! tree packed for the test host VM, and one `daxvmm fstests` or `daxvmm ndctl-tests` run as a case.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Case, Outcome, Skip};

/// What the guest kernel prints when `sysctl.kernel.panic_on_rcu_stall=1` (which every suite case
/// passes) turns an RCU stall into a panic. In the test host VM this has been one vCPU whose timer
/// interrupts stopped ("timer wakeup didn't happen"), which left the guest half alive until the
/// case's timeout; the panic ends it at once and the case runs again in a new test host VM.
pub const RCU_STALL_PANIC: &str = "Kernel panic - not syncing: RCU Stall";

/// The extra kernel command line of every suite case: an RCU stall ends the guest (see
/// [`RCU_STALL_PANIC`]).
const CMDLINE: &str = "sysctl.kernel.panic_on_rcu_stall=1";

/// The suite image (scripts/build-guest-rootfs.sh), from `DAXVMM_ROOTFS`.
pub fn rootfs() -> Result<PathBuf, Skip> {
    match std::env::var_os("DAXVMM_ROOTFS").map(PathBuf::from) {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => Err(Skip(format!("DAXVMM_ROOTFS={} is not a file", p.display()))),
        None => Err(Skip(
            "DAXVMM_ROOTFS is not set (scripts/build-guest-rootfs.sh builds the suite image; scripts/test.sh sets it)"
                .into(),
        )),
    }
}

/// What daxvmm reads of a kernel build tree with modules: the .config, bzImage and release, the modules
/// modules.order lists and the Makefiles beside them, packed (with their times, which the staleness
/// checks compare) into one file the test host VM gets.
pub fn tree_archive(tree: &Path) -> Result<PathBuf, Skip> {
    let skip = |why: String| Skip(format!("the kernel build tree {}: {why}", tree.display()));
    let order = std::fs::read_to_string(tree.join("modules.order"))
        .map_err(|e| skip(format!("modules.order: {e}")))?;
    let mut files: Vec<String> =
        [".config", "arch/x86/boot/bzImage", "include/config/kernel.release", "modules.order"]
            .map(String::from)
            .into();
    for m in order.lines().filter(|l| !l.is_empty()) {
        let stem = m.strip_suffix(".o").or_else(|| m.strip_suffix(".ko")).unwrap_or(m);
        files.push(format!("{stem}.ko"));
        let dir = Path::new(stem).parent().unwrap_or(Path::new(""));
        files.extend(
            ["Makefile", "Kbuild"]
                .iter()
                .map(|f| dir.join(f))
                .filter(|p| tree.join(p).is_file())
                .map(|p| p.display().to_string()),
        );
    }
    files.sort();
    files.dedup();
    let out = std::env::temp_dir().join(format!("daxvmm-tree-{}.tar", std::process::id()));
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&out)
        .arg("-C")
        .arg(tree)
        .args(&files)
        .status()
        .map_err(|e| skip(format!("tar: {e}")))?;
    if !status.success() {
        return Err(skip(format!("tar failed ({status}) on {}", files.join(" "))));
    }
    Ok(out)
}

/// `daxvmm COMMAND --kernel KERNEL --rootfs IMAGE --out {tmp}/NAME --timeout LIMIT EXTRA...` as case
/// `name`, run again on the test host VM's faults and on a guest RCU stall.
pub fn suite_case(
    name: &str,
    command: &str,
    kernel: &str,
    image: &str,
    limit: Duration,
    extra: &[&str],
) -> Case {
    let mut args: Vec<String> =
        [command, "--kernel", kernel, "--rootfs", image, "--out"].iter().map(|s| s.to_string()).collect();
    args.push(format!("{{tmp}}/{name}"));
    args.extend(["--timeout".into(), format!("{}s", limit.as_secs()), "--cmdline".into(), CMDLINE.into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    Case::daxvmm(name, args)
        .with_setup(&format!("rm -rf {{tmp}}/{name}"))
        .rerun_nested_on_emulation_faults()
        .rerun_nested_on(RCU_STALL_PANIC)
}

/// Whether the results table in `out` has `test` passing on `fs`.
pub fn passed(out: &Outcome, fs: &str, test: &str) -> bool {
    out.contains(&format!("{fs:<6} {test:<14} pass"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suite_case_has_its_limit_and_the_stall_panic() {
        let c = suite_case(
            "x",
            "fstests",
            "{kernel}",
            "/bin/rootfs.img",
            Duration::from_secs(600),
            &["--fs", "ext4"],
        );
        let line = c.batch_line();
        assert!(
            line.ends_with(
                "/bin/daxvmm fstests --kernel /guest/bzImage --rootfs /bin/rootfs.img --out /tmp/x --timeout 600s \
                 --cmdline sysctl.kernel.panic_on_rcu_stall=1 --fs ext4"
            ),
            "{line}"
        );
        assert!(c.nested_fault.iter().any(|t| t == RCU_STALL_PANIC), "{:?}", c.nested_fault);
    }

    #[test]
    fn a_missing_tree_is_a_skip_naming_it() {
        let Err(Skip(why)) = tree_archive(Path::new("/nonexistent/tree")) else {
            panic!("no tree, no archive")
        };
        assert!(why.starts_with("the kernel build tree /nonexistent/tree: modules.order:"), "{why}");
    }
}
