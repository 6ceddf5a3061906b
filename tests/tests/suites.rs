//! The standard suites in the suite image (scripts/build-guest-rootfs.sh) on the project's kernel, in
//! one test host VM: `daxvmm fstests` runs the CI subset of fstests' dax group on ext4 and xfs with
//! `-o dax=always`, and `daxvmm ndctl-tests` runs ndctl's dax-ext4.sh, dax-xfs.sh (dax-pmd) and mmap.sh
//! on a legacy e820 range; every test's verdict is checked in the table each prints and in the JUnit it
//! writes. One boot runs the suite image from a read-only virtio-blk disk (`--disk`) with a second,
//! writable disk whose image the test reads afterwards. One more boot runs a shard of the subset
//! (`--shard 2/3`) with a kernel build tree as `--kernel`. (tests/tests/suites_tree.rs boots the Linux
//! 6.12 build tree, whose suite options are modules.)

use std::time::Duration;

use daxvmm_tests::run::{added_path, run_batch_adding};
use daxvmm_tests::suite_cases::{rootfs, suite_case};
use daxvmm_tests::{host, Batch, Case, Outcome, SharedBatch, Skip};

/// The subset: DAX with the huge page size (413), mmap and msync of DAX files (428, 437), DAX with
/// another user's writes through su (462), DAX and page-cache I/O racing (503).
const TESTS: [&str; 5] = ["generic/413", "generic/428", "generic/437", "generic/462", "generic/503"];
const FILESYSTEMS: [&str; 2] = ["ext4", "xfs"];
/// ndctl's scripts that need no nfit_test module: dax-pmd through trace-cmd on ext4 and xfs, and mmap's
/// 18 flag combinations on both.
const NDCTL_TESTS: [&str; 3] = ["dax-ext4.sh", "dax-xfs.sh", "mmap.sh"];
/// Each run's limit: about twice the longest seen in the test host VM (fstests 675 s, ndctl's tests
/// 655 s, mostly mmap.sh's 1 GiB mappings, the shard 76 s), so a wedged guest costs minutes, not the
/// CI run.
const LONG_LIMIT: Duration = Duration::from_secs(20 * 60);
const SHARD_LIMIT: Duration = Duration::from_secs(5 * 60);

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
    let disk_check = Case::daxvmm("blk_scratch", ["--version"])
        .with_setup(&format!(
            "[ \"$(dd if={{tmp}}/scratch.img bs=1M skip=3 count=1 2>/dev/null | head -c {n})\" = {BLK_MARKER} ] \
             && ! dd if={{tmp}}/scratch.img bs=1M skip=1 count=1 2>/dev/null | grep -q daxvmm-discard-me",
            n = BLK_MARKER.len()
        ))
        .needing("blk_root")
        .without_boot();
    let fs = FILESYSTEMS.join(",");
    let fstests_args: Vec<&str> = ["--fs", fs.as_str()].into_iter().chain(TESTS).collect();
    let shard_args: Vec<&str> = ["--fs", "ext4", "--shard", "2/3"].into_iter().chain(TESTS).collect();
    // One at a time: run together in one test host VM (tried 2026-12-03) these three were not done
    // after 14 minutes, against about 16 one after another, and their guests booting together made the
    // test host VM triple-fault.
    let blk_root = Case::daxvmm(
        "blk_root",
        [
            "--kernel",
            "{kernel}",
            "--mem",
            "1G",
            "--disk",
            &format!("{inside},ro"),
            "--disk",
            "{tmp}/scratch.img",
            "--timeout",
            "5m",
            "--cmdline",
            &format!("root=/dev/vda ro rootwait init=/usr/local/sbin/daxvmm-init -- {}", blk_guest_command()),
        ],
    )
    .with_setup("rm -f {tmp}/scratch.img && truncate -s 64M {tmp}/scratch.img")
    .rerun_nested_on_emulation_faults();
    let cases = vec![
        blk_root,
        disk_check,
        suite_case("fstests", "fstests", "{kernel}", &inside, LONG_LIMIT, &fstests_args),
        files,
        suite_case("fstests_shard", "fstests", "{tmp}/tree", &inside, SHARD_LIMIT, &shard_args)
            .with_setup(&tree_setup),
        suite_case("ndctl", "ndctl-tests", "{kernel}", &inside, LONG_LIMIT, &NDCTL_TESTS),
    ];
    run_batch_adding(
        &cases,
        "DAXVMM_GUEST_KERNEL",
        vec![image, config],
        LONG_LIMIT + Duration::from_secs(120),
    )
}

/// What the guest booted from a read-only virtio-blk disk writes to the second, writable one.
const BLK_MARKER: &str = "daxvmm-blk-marker";
/// The guest's side of blk_root: where its root came from, the disks' serial numbers and read-only
/// flags, the marker written to vdb at 3 MiB and read back with O_DIRECT (so from the device, not the
/// page cache), a second marker at 1 MiB that blkdiscard then removes (it reads back as zeros, in the
/// guest and in the image), and a write to the read-only vda that must fail.
const BLK_GUEST: &str = "set -e; echo root=$(findmnt -no SOURCE /); \
    echo serials=$(cat /sys/block/vda/serial),$(cat /sys/block/vdb/serial); \
    echo ro=$(cat /sys/block/vda/ro),$(cat /sys/block/vdb/ro); \
    printf daxvmm-blk-marker | dd of=/dev/vdb bs=1M seek=3 conv=fsync 2>/dev/null; \
    echo readback=$(dd if=/dev/vdb bs=4096 skip=768 count=1 iflag=direct 2>/dev/null | head -c 17); \
    printf daxvmm-discard-me | dd of=/dev/vdb bs=1M seek=1 conv=fsync 2>/dev/null; \
    echo discard_max=$(cat /sys/block/vdb/queue/discard_max_bytes); blkdiscard -o 1048576 -l 1048576 /dev/vdb; \
    echo discarded=$(dd if=/dev/vdb bs=4096 skip=256 count=1 iflag=direct 2>/dev/null | tr -d '\\000')end; \
    if dd if=/dev/zero of=/dev/vda bs=512 count=1 oflag=direct 2>/dev/null; then echo vda=written; exit 1; fi; \
    echo vda=refused";

/// BLK_GUEST as init's command: the kernel passes init at most 32 words after `--`, and a double-quoted
/// string is one; the `$(` are escaped so the inner shell, not init's, expands them.
fn blk_guest_command() -> String {
    format!("bash -c \"{}\"", BLK_GUEST.replace("$(", "\\$("))
}

static BATCH: SharedBatch = SharedBatch::running(run);

fn outcome(test: &str, name: &str) -> Option<&'static Outcome> {
    BATCH.outcome_for(test, name)
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

/// The suite image boots from a read-only virtio-blk disk (`--disk IMG,ro`, root=/dev/vda), and a
/// second, writable disk takes the guest's writes and discards, which reach its image file by the end of
/// the run.
#[test]
fn the_suite_image_boots_from_a_read_only_virtio_blk_disk() {
    let Some(out) = outcome("the_suite_image_boots_from_a_read_only_virtio_blk_disk", "blk_root") else {
        return;
    };
    for line in [
        "root=/dev/vda",
        "serials=daxvmm-disk0,daxvmm-disk1",
        "ro=1,0",
        "readback=daxvmm-blk-marker",
        "discard_max=2147483648",
        "discarded=end",
        "vda=refused",
        "daxvmm-guest: command exited rc=0",
    ] {
        assert!(out.contains(line), "no '{line}' in the guest's output: {out}");
    }
    // The second disk's worker saw the writes and flushes; none failed.
    assert!(out.contains("virtio-blk1: the guest sent "), "{out}");
    assert!(out.contains("scratch.img), 0 failed; 0 queue notifications were VM exits"), "{out}");
    assert!(out.contains("rootfs.img, read-only), 0 failed"), "{out}");
    assert_eq!(out.exit_code, 0, "{out}");
    let check = outcome("the_suite_image_boots_from_a_read_only_virtio_blk_disk", "blk_scratch");
    let check = check.expect("same batch");
    assert_eq!(
        check.exit_code, 0,
        "scratch.img must have the marker at 3 MiB and the discarded one gone from 1 MiB: {check}"
    );
}
