//! The bad-input matrix: daxvmm on dozens of wrong command lines, `--pmem` specs, `test` and `repro`
//! options and repro files (garbage, cut short, oversized, out-of-range fields). Each must end with one
//! error line that names the input, exit 1 or 2, never panic, and leave every existing file in the
//! scratch directory byte-identical with the same mtime, creating nothing. No guest boots: all of them are
//! refused before that.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use daxvmm_tests::host::env_file;
use daxvmm_tests::record::report_skip;
use daxvmm_tests::reject::{assert_rejected, some_kernel};

/// Path -> (content hash, length, mtime) of every entry under `dir`, links not followed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u64, Option<SystemTime>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read the scratch directory").flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).expect("stat a scratch entry");
            let mut h = std::collections::hash_map::DefaultHasher::new();
            if meta.is_dir() {
                todo.push(p.clone());
            } else if meta.file_type().is_symlink() {
                std::fs::read_link(&p).expect("read a link").hash(&mut h);
            } else {
                std::fs::read(&p).expect("read a scratch file").hash(&mut h);
            }
            out.insert(p, (h.finish(), meta.len(), meta.modified().ok()));
        }
    }
    out
}

const REPRO: &str = "format: daxvmm-repro 1
kernel: /nonexistent/daxvmm/bzImage
initrd: /nonexistent/daxvmm/initrd
kernel-release: 7.2.12
kernel-config-sha256: abc
mutant: none
kernel-build-id: unknown
scenario: truncate-unpin
fs: ext4
seed: none (enumerated)
schedule: 0.s1 0.e7 1.s1 1.s2 0.s2
cpus: 2
hold-bound-ms: 2000
kernel-events: none
finding: ordering: truncate returned while pinned
";

#[test]
fn every_bad_input_is_one_clear_error_and_changes_no_file() {
    let test = "every_bad_input_is_one_clear_error_and_changes_no_file";
    if let Err(skip) = env_file("DAXVMM_BIN") {
        return report_skip(test, &skip);
    }
    let dir = std::env::temp_dir().join(format!("daxvmm-bad-input-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a-dir")).expect("scratch setup");
    let p = |name: &str| dir.join(name).display().to_string();
    std::fs::write(dir.join("small.img"), vec![0x5a; 4 << 20]).expect("scratch setup");
    std::fs::write(dir.join("target.img"), vec![0xa5; 4 << 20]).expect("scratch setup");
    std::os::unix::fs::symlink(dir.join("target.img"), dir.join("link.img")).expect("scratch setup");
    std::os::unix::fs::symlink(dir.join("missing.img"), dir.join("dangling.img")).expect("scratch setup");
    let repro = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).expect("scratch setup");
        p(name)
    };
    let good = repro("good.repro", REPRO);
    let edited = |name: &str, from: &str, to: &str| {
        assert!(REPRO.contains(from), "{from}");
        repro(name, &REPRO.replace(from, to))
    };
    let garbage = repro("garbage.repro", "\x7fELF\x02\x01\x01 not a repro file\n");
    let cut = repro("cut.repro", &REPRO[..REPRO.find("fs: ").expect("the template has fs")]);
    let big = repro("big.repro", &format!("{REPRO}{}", "x".repeat(17 << 20)));
    let cpus0 = edited("cpus0.repro", "cpus: 2", "cpus: 0");
    let cpus99 = edited("cpus99.repro", "cpus: 2", "cpus: 99");
    let fs = edited("fs.repro", "fs: ext4", "fs: ext4; reboot");
    let scen = edited("scenario.repro", "scenario: truncate-unpin", "scenario: rm -rf");
    let sched = edited("sched.repro", "schedule: 0.s1 0.e7 1.s1 1.s2 0.s2", "schedule: 0.s1 0.s9");
    let build = edited("build.repro", "kernel-build-id: unknown", "kernel-build-id: ../../etc");
    let mutant = edited("mutant.repro", "mutant: none", "mutant: everything");
    let bound = edited("bound.repro", "hold-bound-ms: 2000", "hold-bound-ms: 99999999");
    let kind = edited("kind.repro", "finding: ordering:", "finding: bogus:");
    let kernel = some_kernel().display().to_string();
    let run = |extra: &[&str]| {
        let mut a = vec!["--kernel".to_string(), kernel.clone(), "--timeout".into(), "10s".into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let pmem = |spec: &str| run(&["--pmem", spec]);
    let own = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let test_cmd = |extra: &[&str]| {
        let mut a = own(&["test", "--kernel", &kernel, "--initrd", &kernel, "--out", &p("out")]);
        a.extend(own(extra));
        a
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (own(&["--kernel", "/nonexistent/bzImage"]), vec!["kernel"]),
        (own(&["--kernel", &p("a-dir")]), vec!["kernel"]),
        (own(&["--kernel", &p("small.img")]), vec!["bzimage"]),
        (run(&["--mem", "0"]), vec!["mem"]),
        (run(&["--mem", "10X"]), vec!["mem", "10x"]),
        (run(&["--mem", "99999G"]), vec!["mem", "99999g"]),
        (run(&["--cpus", "0"]), vec!["cpus"]),
        (run(&["--cpus", "300"]), vec!["cpus", "300"]),
        (run(&["--timeout", "0"]), vec!["timeout"]),
        (run(&["--timeout", "-5s"]), vec!["timeout", "-5"]),
        (run(&["--timeout", "soon"]), vec!["timeout", "soon"]),
        (run(&["--initrd", "/nonexistent/initrd"]), vec!["initrd"]),
        (run(&["--fault-schedule", "0.x1"]), vec!["schedule", "0.x1"]),
        (run(&["--fault-schedule", "9.s1"]), vec!["thread", "9"]),
        (run(&["--hold-bound", "0"]), vec!["hold"]),
        (run(&["--repeat", "0"]), vec!["repeat"]),
        (run(&["--frobnicate"]), vec!["frobnicate"]),
        (pmem("0"), vec!["pmem", "size"]),
        (pmem("3M"), vec!["multiple of 2m"]),
        (pmem("16M,bogus=1"), vec!["bogus"]),
        (pmem(&format!("16M,file={}", p("small.img"))), vec!["resize=on"]),
        (pmem(&format!("16M,file={},resize=on", p("link.img"))), vec!["symbolic link"]),
        (pmem(&format!("4M,file={}", p("dangling.img"))), vec!["symbolic link"]),
        (pmem(&format!("16M,file={}", p("a-dir"))), vec!["directory"]),
        (pmem("16M,file=/dev/null"), vec!["not a regular file"]),
        (pmem("16M,backing=weird"), vec!["backing", "weird"]),
        (pmem("16M,share=maybe"), vec!["share", "maybe"]),
        (pmem("16M,addr=0x1"), vec!["addr"]),
        (test_cmd(&["--scenario", "nope"]), vec!["nope"]),
        (test_cmd(&["--fs", "btrfs"]), vec!["btrfs"]),
        (test_cmd(&["--mutant", "everything"]), vec!["mutant"]),
        (test_cmd(&["--cpus", "9"]), vec!["cpus", "9"]),
        (test_cmd(&["--hold-bound", "0"]), vec!["hold"]),
        (test_cmd(&["--samples", "many"]), vec!["samples", "many"]),
        (own(&["repro", &p("none.repro")]), vec!["none.repro"]),
        (own(&["repro", &good]), vec!["kernel"]),
        (own(&["repro", "--replays", "0", &good]), vec!["replays"]),
        (own(&["repro", &garbage]), vec!["not a daxvmm repro file"]),
        (own(&["repro", &cut]), vec!["missing"]),
        (own(&["repro", &big]), vec!["larger than"]),
        (own(&["repro", &cpus0]), vec!["cpus 0"]),
        (own(&["repro", &cpus99]), vec!["cpus 99"]),
        (own(&["repro", &fs]), vec!["fs 'ext4; reboot'"]),
        (own(&["repro", &scen]), vec!["unknown scenario"]),
        (own(&["repro", &sched]), vec!["schedule"]),
        (own(&["repro", &build]), vec!["kernel-build-id"]),
        (own(&["repro", &mutant]), vec!["mutant"]),
        (own(&["repro", &bound]), vec!["hold-bound-ms"]),
        (own(&["repro", &kind]), vec!["finding kind"]),
    ];
    let before = snapshot(&dir);
    for (args, mention) in &cases {
        assert_rejected(test, args, mention);
        assert_eq!(
            snapshot(&dir),
            before,
            "daxvmm {} changed or created a file under {}",
            args.join(" "),
            dir.display()
        );
    }
    assert!(cases.len() >= 40, "the matrix has {} bad inputs", cases.len());
    // The count README reports.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("bad inputs tried: {}\n", cases.len()).as_bytes(),
    );
    std::fs::remove_dir_all(&dir).expect("scratch setup");
}
