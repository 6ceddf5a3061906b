//! The suites on a kernel build tree of another version, the Linux 6.12 variant's
//! (`scripts/build-guest-kernel.sh --variant linux-6.12 --tree`), whose device mapper, quota format and
//! e820 pmem are modules: daxvmm finds them through the tree's Makefiles, the guest loads them from
//! the tree, and fstests and ndctl's tests that use them pass; a module the guest kernel refuses stops
//! the guest with one error. `scripts/test.sh --linux-6.12` builds that tree in the background and runs
//! this file last; without it these tests skip.

use std::path::PathBuf;
use std::time::Duration;

use daxvmm_tests::run::{added_path, run_batch_adding};
use daxvmm_tests::suite_cases::{passed, rootfs, suite_case, tree_archive};
use daxvmm_tests::{host, Batch, Outcome, SharedBatch, Skip};

/// MAP_SYNC mmap through dm log-writes (a module there).
const TREE_TEST: &str = "generic/470";
const FILESYSTEMS: [&str; 2] = ["ext4", "xfs"];
/// ndctl's dax-pmd on xfs, whose e820 range only appears once nd_e820 (a module there) is loaded.
const TREE_NDCTL_TEST: &str = "dax-xfs.sh";
/// What the 6.12 variant builds as modules, dependencies first, as the guest reports loading them.
const TREE_MODULES: &str = "dm-mod dm-log-writes dm-flakey quota_tree quota_v2 nd_e820";
/// Each run's limit: about four times the longest seen in the test host VM (140 s).
const LIMIT: Duration = Duration::from_secs(8 * 60);

fn tree() -> Result<PathBuf, Skip> {
    match std::env::var_os("DAXVMM_GUEST_TREE_612").map(PathBuf::from) {
        Some(tree) if tree.is_dir() => Ok(tree),
        other => Err(Skip(format!(
            "DAXVMM_GUEST_TREE_612 is {} (scripts/test.sh --linux-6.12 sets it to the linux-6.12 variant's build tree)",
            other.map_or("not set".into(), |p| format!("{}, not a directory", p.display()))
        ))),
    }
}

fn run() -> Result<Batch, Skip> {
    let image = rootfs()?;
    let tree = tree()?;
    let place = host::detect()?;
    let inside = added_path(place, &image);
    let tar = tree_archive(&tree)?;
    let unpack = format!(
        "rm -rf {{tmp}}/tree612 && mkdir -p {{tmp}}/tree612 && tar -xf {} -C {{tmp}}/tree612",
        added_path(place, &tar)
    );
    let tree612 = "{tmp}/tree612";
    let cases = [
        suite_case("fstests_612", "fstests", tree612, &inside, LIMIT, &["--fs", "ext4,xfs", TREE_TEST])
            .with_setup(&format!("{unpack} && rm -rf {{tmp}}/fstests_612")),
        suite_case("ndctl_612", "ndctl-tests", tree612, &inside, LIMIT, &[TREE_NDCTL_TEST])
            .with_setup(&format!("{unpack} && rm -rf {{tmp}}/ndctl_612")),
        // A module the kernel refuses (its ELF type made ET_EXEC; daxvmm's checks pass it).
        suite_case("bad_module_612", "ndctl-tests", tree612, &inside, LIMIT, &[TREE_NDCTL_TEST]).with_setup(
            &format!(
                "{unpack} && rm -rf {{tmp}}/bad_module_612 && printf '\\002' | \
                 dd of={{tmp}}/tree612/drivers/md/dm-flakey.ko bs=1 seek=16 conv=notrunc 2>/dev/null"
            ),
        ),
    ];
    let batch = run_batch_adding(
        &cases,
        "DAXVMM_GUEST_KERNEL",
        vec![image, tar.clone()],
        LIMIT + Duration::from_secs(120),
    );
    let _ = std::fs::remove_file(tar);
    batch
}

static BATCH: SharedBatch = SharedBatch::running(run);

fn outcome(test: &str, name: &str) -> Option<&'static Outcome> {
    BATCH.outcome_for(test, name)
}

#[test]
fn the_suites_load_a_6_12_build_trees_modules() {
    let test = "the_suites_load_a_6_12_build_trees_modules";
    let (Some(fst), Some(ndctl)) = (outcome(test, "fstests_612"), outcome(test, "ndctl_612")) else { return };
    for out in [fst, ndctl] {
        assert!(
            out.contains("tree612/arch/x86/boot/bzImage (the tree's .config has what daxvmm"),
            "the tree must be checked and its bzImage booted: {out}"
        );
        assert!(
            out.contains(&format!("daxvmm-guest: loaded the kernel tree's modules: {TREE_MODULES}")),
            "the guest must load the tree's modules in dependency order: {out}"
        );
    }
    for fs in FILESYSTEMS {
        assert!(
            passed(fst, fs, TREE_TEST),
            "{TREE_TEST} on {fs} must pass with dm-log-writes from the tree: {fst}"
        );
    }
    assert_eq!(fst.exit_code, 0, "{fst}");
    assert!(ndctl.contains("ndctl  ndctl/dax-xfs  pass"), "dax-xfs.sh on the e820 range of nd_e820: {ndctl}");
    assert_eq!(ndctl.exit_code, 0, "{ndctl}");
}

/// A module that the guest kernel refuses stops the guest before any test, with one error naming it.
#[test]
fn a_module_the_guest_cannot_load_is_one_error_and_no_results() {
    let Some(out) = outcome("a_module_the_guest_cannot_load_is_one_error_and_no_results", "bad_module_612")
    else {
        return;
    };
    assert!(
        out.contains(
            "the guest: cannot load the tree's module kernel/drivers/md/dm-flakey.ko (insmod failed"
        ),
        "daxvmm must repeat the guest's error: {out}"
    );
    assert!(out.contains("daxvmm-guest: error: cannot load"), "{out}");
    assert!(!out.contains("section ndctl") && !out.contains("ndctl/dax-xfs  pass"), "no test may run: {out}");
    assert!(out.contains("ndctl: NOT REACHED"), "the table must say the suite never started: {out}");
    assert_eq!(out.exit_code, 1, "an incomplete run exits 1: {out}");
}
