//! The standard suites in the suite image (scripts/build-guest-rootfs.sh), in one test host VM:
//! `daxvmm fstests` runs the CI subset of fstests' dax group on ext4 and xfs with `-o dax=always`, and
//! `daxvmm ndctl-tests` runs ndctl's dax-ext4.sh, dax-xfs.sh (dax-pmd) and mmap.sh on a legacy e820
//! range; every test's verdict is checked in the table each prints and in the JUnit it writes. One
//! more boot runs a shard of the subset (`--shard 2/3`) with a kernel build tree as `--kernel`; two run
//! fstests and ndctl's tests on the Linux 6.12 variant's build tree, whose device mapper, quota format
//! and e820 pmem are modules the guest loads from the tree, and one gives it a module its kernel refuses.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use daxvmm_tests::record::report_skip;
use daxvmm_tests::run::{added_path, run_batch_adding};
use daxvmm_tests::{host, Batch, Case, Outcome, Skip};

/// The subset: DAX with the huge page size (413), mmap and msync of DAX files (428, 437), DAX with
/// another user's writes through su (462), DAX and page-cache I/O racing (503).
const TESTS: [&str; 5] = ["generic/413", "generic/428", "generic/437", "generic/462", "generic/503"];
const FILESYSTEMS: [&str; 2] = ["ext4", "xfs"];
/// ndctl's scripts that need no nfit_test module: dax-pmd through trace-cmd on ext4 and xfs, and mmap's
/// 18 flag combinations on both.
const NDCTL_TESTS: [&str; 3] = ["dax-ext4.sh", "dax-xfs.sh", "mmap.sh"];

/// On the 6.12 tree: mmap MAP_SYNC through dm log-writes (a module there), and ndctl's dax-pmd on xfs,
/// whose e820 range only appears once nd_e820 (a module there) is loaded.
const TREE_TEST: &str = "generic/470";
const TREE_NDCTL_TEST: &str = "dax-xfs.sh";
/// What the 6.12 variant builds as modules, dependencies first, as the guest reports loading them.
const TREE_MODULES: &str = "dm-mod dm-log-writes dm-flakey quota_tree quota_v2 nd_e820";

fn rootfs() -> Result<PathBuf, Skip> {
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
fn tree_archive(tree: &Path) -> Result<PathBuf, Skip> {
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
    let out = std::env::temp_dir().join(format!("daxvmm-tree612-{}.tar", std::process::id()));
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

fn suite_case(name: &str, command: &str, kernel: &str, image: &str, extra: &[&str]) -> Case {
    let mut args: Vec<String> =
        [command, "--kernel", kernel, "--rootfs", image, "--out"].iter().map(|s| s.to_string()).collect();
    args.push(format!("{{tmp}}/{name}"));
    args.extend(["--timeout".into(), "40m".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    Case::daxvmm(name, args).with_setup(&format!("rm -rf {{tmp}}/{name}")).rerun_nested_on_emulation_faults()
}

fn run() -> Result<Batch, Skip> {
    let image = rootfs()?;
    let place = host::detect()?;
    let inside = added_path(place, &image);
    // The shard boots a kernel build tree: the guest kernel's .config and bzImage where a tree has them.
    let config = host::env_file("DAXVMM_GUEST_KERNEL")?.with_file_name(".config");
    if !config.is_file() {
        return Err(Skip(format!(
            "{} is missing (scripts/build-guest-kernel.sh keeps it)",
            config.display()
        )));
    }
    let tree_setup = format!(
        "rm -rf {{tmp}}/fstests_shard {{tmp}}/tree && mkdir -p {{tmp}}/tree/arch/x86/boot && \
         cp {} {{tmp}}/tree/.config && cp {{kernel}} {{tmp}}/tree/arch/x86/boot/bzImage",
        added_path(place, &config)
    );
    let files = Case::daxvmm("fstests_files", ["--version"])
        .with_setup(
            "d={tmp}/fstests; for fs in ext4 xfs; do \
             grep -q \"<testsuite name=\\\"fstests.$fs\\\" tests=\\\"5\\\" failures=\\\"0\\\" skipped=\\\"0\\\" errors=\\\"0\\\">\" $d/junit.xml \
             && grep -q 'xfstests.global' $d/$fs/result.xml && grep -q '^Passed all 5 tests' $d/$fs/check.log || exit 1; done",
        )
        .needing("fstests")
        .without_boot();
    let fs = FILESYSTEMS.join(",");
    let fstests_args: Vec<&str> = ["--fs", fs.as_str()].into_iter().chain(TESTS).collect();
    let shard_args: Vec<&str> = ["--fs", "ext4", "--shard", "2/3"].into_iter().chain(TESTS).collect();
    // One at a time: run together in one test host VM (tried 2026-12-03) these three were not done
    // after 14 minutes, against about 16 one after another, and their guests booting together made the
    // test host VM triple-fault.
    let mut cases = vec![
        suite_case("fstests", "fstests", "{kernel}", &inside, &fstests_args),
        files,
        suite_case("fstests_shard", "fstests", "{tmp}/tree", &inside, &shard_args).with_setup(&tree_setup),
        suite_case("ndctl", "ndctl-tests", "{kernel}", &inside, &NDCTL_TESTS),
    ];
    let mut adds = vec![image, config];
    let mut tree_tar = None;
    // The Linux 6.12 variant's tree (scripts/build-guest-kernel.sh --variant linux-6.12 --tree).
    match std::env::var_os("DAXVMM_GUEST_TREE_612").map(PathBuf::from) {
        Some(tree) if tree.is_dir() => {
            let tar = tree_archive(&tree)?;
            let unpack = format!(
                "rm -rf {{tmp}}/tree612 && mkdir -p {{tmp}}/tree612 && tar -xf {} -C {{tmp}}/tree612",
                added_path(place, &tar)
            );
            cases.push(
                suite_case("fstests_612", "fstests", "{tmp}/tree612", &inside, &["--fs", "ext4,xfs", TREE_TEST])
                    .with_setup(&format!("{unpack} && rm -rf {{tmp}}/fstests_612")),
            );
            cases.push(
                suite_case("ndctl_612", "ndctl-tests", "{tmp}/tree612", &inside, &[TREE_NDCTL_TEST])
                    .with_setup(&format!("{unpack} && rm -rf {{tmp}}/ndctl_612")),
            );
            // A module the kernel refuses (its ELF type made ET_EXEC; daxvmm's checks pass it).
            cases.push(
                suite_case("bad_module_612", "ndctl-tests", "{tmp}/tree612", &inside, &[TREE_NDCTL_TEST]).with_setup(
                    &format!(
                        "{unpack} && rm -rf {{tmp}}/bad_module_612 && printf '\\002' | \
                         dd of={{tmp}}/tree612/drivers/md/dm-flakey.ko bs=1 seek=16 conv=notrunc 2>/dev/null"
                    ),
                ),
            );
            adds.push(tar.clone());
            tree_tar = Some(tar);
        }
        other => report_skip(
            "the_suites_load_a_6_12_build_trees_modules",
            &Skip(format!(
                "DAXVMM_GUEST_TREE_612 is {} (scripts/test.sh sets it to the linux-6.12 variant's build tree)",
                other.map_or("not set".into(), |p| format!("{}, not a directory", p.display()))
            )),
        ),
    }
    let batch = run_batch_adding(&cases, "DAXVMM_GUEST_KERNEL", adds, Duration::from_secs(45 * 60));
    if let Some(tar) = tree_tar {
        let _ = std::fs::remove_file(tar);
    }
    batch
}

static BATCH: OnceLock<Result<Batch, Skip>> = OnceLock::new();

/// The outcome of case `name`, or `None` after reporting why the batch was skipped.
fn outcome(test: &str, name: &str) -> Option<&'static Outcome> {
    match BATCH.get_or_init(run) {
        Ok(b) => Some(b.get(name).unwrap_or_else(|e| panic!("{e}"))),
        Err(skip) => {
            report_skip(test, skip);
            None
        }
    }
}

#[test]
fn fstests_dax_subset_passes_on_ext4_and_xfs() {
    let Some(out) = outcome("fstests_dax_subset_passes_on_ext4_and_xfs", "fstests") else { return };
    for fs in FILESYSTEMS {
        for t in TESTS {
            let row = format!("{fs:<6} {t:<14} pass");
            assert!(out.contains(&row), "{t} on {fs} must pass with -o dax=always (no '{row}' row): {out}");
        }
        assert!(out.contains(&format!("{fs}: 5 passed, 0 failed, 0 not run (exit status 0)")), "{out}");
    }
    assert_eq!(out.exit_code, 0, "{out}");
    let files = outcome("fstests_dax_subset_passes_on_ext4_and_xfs", "fstests_files").expect("same batch");
    assert_eq!(files.exit_code, 0, "junit.xml, result.xml and check.log of both filesystems: {files}");
}

/// The shard's boot also shows a kernel build tree as --kernel: its .config checked, its bzImage booted.
#[test]
fn an_fstests_shard_runs_every_third_test_from_the_second() {
    let Some(out) = outcome("an_fstests_shard_runs_every_third_test_from_the_second", "fstests_shard") else {
        return;
    };
    assert!(
        out.contains("tree/arch/x86/boot/bzImage (the tree's .config has what daxvmm fstests needs)"),
        "the build tree must be checked and its bzImage booted: {out}"
    );
    // check's list of the five, in its order; part 2 of 3 is its tests 1 and 4 (0-based).
    assert!(
        out.contains("daxvmm-suite: shard ext4 2/3: 2 of 5: generic/428 generic/503"),
        "the runner must pick generic/428 and generic/503: {out}"
    );
    for t in ["generic/428", "generic/503"] {
        assert!(out.contains(&format!("ext4   {t:<14} pass")), "{t}: {out}");
    }
    assert!(out.contains("ext4: 2 passed, 0 failed, 0 not run (exit status 0)"), "{out}");
    assert_eq!(out.exit_code, 0, "{out}");
}

#[test]
fn ndctl_dax_pmd_and_mmap_pass_on_an_e820_range() {
    let Some(out) = outcome("ndctl_dax_pmd_and_mmap_pass_on_an_e820_range", "ndctl") else { return };
    for t in NDCTL_TESTS {
        let row = format!("ndctl  ndctl/{:<8} pass", t.trim_end_matches(".sh"));
        assert!(out.contains(&row), "ndctl's {t} must pass (no '{row}' row): {out}");
    }
    assert!(out.contains("ndctl: 3 passed, 0 failed, 0 not run (exit status 0)"), "{out}");
    assert_eq!(out.exit_code, 0, "{out}");
}

/// A kernel build tree of another version whose suite options are modules: daxvmm finds them through
/// the tree's Makefiles, the guest loads them, and the tests that use them pass.
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
            out_row(fst, fs, TREE_TEST),
            "{TREE_TEST} on {fs} must pass with dm-log-writes from the tree: {fst}"
        );
    }
    assert_eq!(fst.exit_code, 0, "{fst}");
    assert!(ndctl.contains("ndctl  ndctl/dax-xfs  pass"), "dax-xfs.sh on the e820 range of nd_e820: {ndctl}");
    assert_eq!(ndctl.exit_code, 0, "{ndctl}");
}

fn out_row(out: &Outcome, fs: &str, test: &str) -> bool {
    out.contains(&format!("{fs:<6} {test:<14} pass"))
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
