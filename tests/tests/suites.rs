//! The standard suites in the suite image (scripts/build-guest-rootfs.sh): `daxvmm fstests` runs the CI
//! subset of fstests' dax group on ext4 and xfs with `-o dax=always`, and every test's verdict is
//! checked in the table it prints and in the JUnit it writes.

use std::path::PathBuf;
use std::time::Duration;

use daxvmm_tests::record::report_skip;
use daxvmm_tests::run::{added_path, run_batch_adding};
use daxvmm_tests::{host, Case, Skip};

/// The subset: DAX with the huge page size (413), mmap and msync of DAX files (428, 437), DAX with
/// another user's writes through su (462), DAX and page-cache I/O racing (503).
const TESTS: [&str; 5] = ["generic/413", "generic/428", "generic/437", "generic/462", "generic/503"];
const FILESYSTEMS: [&str; 2] = ["ext4", "xfs"];

fn rootfs() -> Result<PathBuf, Skip> {
    match std::env::var_os("DAXVMM_ROOTFS").map(PathBuf::from) {
        Some(p) if p.is_file() => Ok(p),
        Some(p) => Err(Skip(format!("DAXVMM_ROOTFS={} is not a file", p.display()))),
        None => Err(Skip("DAXVMM_ROOTFS is not set (scripts/build-guest-rootfs.sh builds the suite image; scripts/test.sh sets it)".into())),
    }
}

#[test]
fn fstests_dax_subset_passes_on_ext4_and_xfs() {
    let name = "fstests_dax_subset_passes_on_ext4_and_xfs";
    let batch = rootfs().and_then(|image| {
        let place = host::detect()?;
        let mut args = vec![
            "fstests".to_string(),
            "--kernel".into(),
            "{kernel}".into(),
            "--rootfs".into(),
            added_path(place, &image),
            "--fs".into(),
            FILESYSTEMS.join(","),
            "--out".into(),
            "{tmp}/fstests".into(),
            "--timeout".into(),
            "40m".into(),
        ];
        args.extend(TESTS.iter().map(|t| t.to_string()));
        let case = Case::daxvmm("fstests", args)
            .with_setup("rm -rf {tmp}/fstests")
            .rerun_nested_on_emulation_faults();
        let check = Case::daxvmm("fstests_files", ["--version"])
            .with_setup(
                "d={tmp}/fstests; grep -q '<testsuite name=\"fstests.ext4\" tests=\"5\" failures=\"0\" skipped=\"0\" errors=\"0\">' $d/junit.xml \
                 && grep -q '<testsuite name=\"fstests.xfs\" tests=\"5\" failures=\"0\" skipped=\"0\" errors=\"0\">' $d/junit.xml \
                 && grep -q 'xfstests.global' $d/ext4/result.xml && grep -q 'xfstests.global' $d/xfs/result.xml \
                 && grep -q '^Passed all 5 tests' $d/ext4/check.log && grep -q '^Passed all 5 tests' $d/xfs/check.log",
            )
            .needing("fstests")
            .without_boot();
        run_batch_adding(&[case, check], "DAXVMM_GUEST_KERNEL", vec![image], Duration::from_secs(45 * 60))
    });
    let batch = match batch {
        Ok(b) => b,
        Err(skip) => return report_skip(name, &skip),
    };
    let out = batch.get("fstests").unwrap_or_else(|e| panic!("{e}"));
    for fs in FILESYSTEMS {
        for t in TESTS {
            let row = format!("{fs:<6} {t:<14} pass");
            assert!(out.contains(&row), "{t} on {fs} must pass with -o dax=always (no '{row}' row): {out}");
        }
        assert!(out.contains(&format!("{fs}: 5 passed, 0 failed, 0 not run (check exited 0)")), "{out}");
    }
    assert_eq!(out.exit_code, 0, "{out}");
    let files = batch.get("fstests_files").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.exit_code, 0, "junit.xml, result.xml and check.log of both filesystems: {files}");
}
