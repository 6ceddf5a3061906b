//! The suites side by side (`bench suites`, scripts/compare-qemu.sh): the suite image, the same guest
//! kernel and the same runner command line booted by daxvmm (`daxvmm fstests`, `daxvmm ndctl-tests`) and
//! by QEMU (`-machine pc,nvdimm=on` with `-device nvdimm`, or `memmap=` for the e820 range), one after
//! the other in one host run; QEMU's console goes through `daxvmm suite-report`, so both sides' verdicts
//! come from the same parser. Prints a row per test with both verdicts and times, the differences, and
//! each side's wall time with their ratio.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use crate::bench::{place_note, ratio};
use crate::case::shell_quote;
use crate::host::Where;

/// What the comparison runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuitesOpts {
    /// fstests' arguments for check: `-g GROUP` and/or test names.
    pub check_args: Vec<String>,
    /// Filesystems for fstests.
    pub fs: Vec<String>,
    /// ndctl's test scripts (none: skip ndctl).
    pub ndctl: Vec<String>,
    /// The image's size in bytes (QEMU's memory-backend-file wants it).
    pub image_size: u64,
}

/// Where the batch's commands find their files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuitePaths {
    /// The static daxvmm.
    pub daxvmm: String,
    /// The guest bzImage.
    pub kernel: String,
    /// The suite image.
    pub rootfs: String,
    /// A scratch directory for results and QEMU's console.
    pub out: String,
}

/// Each side's fstests NVDIMMs after the image: TEST_DEV, SCRATCH_DEV (as `daxvmm fstests`' default
/// --pmem-size) and LOGWRITES_DEV, in MiB.
const FSTESTS_DEVICES_MIB: [u64; 3] = [2048, 2048, 1024];
/// ndctl's e820 range, MiB (`daxvmm ndctl-tests`' default --e820-size), and its guest RAM.
const E820_MIB: u64 = 2048;
/// QEMU's `pc` puts RAM above 3 GiB at 4 GiB: with this much RAM the e820 range `memmap=` marks is
/// the 2 GiB at 4 GiB, leaving 3 GiB of RAM (daxvmm's guest has 2560M).
const NDCTL_QEMU_MEM_MIB: u64 = 3072 + E820_MIB;

/// The kernel command line both VMMs' guests get: what `daxvmm fstests` and `daxvmm ndctl-tests` put
/// there (vmm/src/suites/mod.rs), with `noxsave` as daxvmm sets it in a VM, the kernel's `extra`
/// parameters, and the runner after ` -- `.
fn guest_cmdline(extra: &str, runner: &str) -> String {
    format!(
        "console=ttyS0 noxsave reboot=k panic=1{}{extra} root=/dev/pmem0 rootwait rw init=/usr/local/sbin/daxvmm-init -- {runner}",
        if extra.is_empty() { "" } else { " " }
    )
}

fn qemu(kernel: &str, mem_mib: u64, maxmem_mib: u64, devices: &str, append: &str) -> String {
    format!(
        "qemu-system-x86_64 -machine pc,nvdimm=on -enable-kvm -cpu host -smp 2 -m {mem_mib}M,slots=8,maxmem={maxmem_mib}M \
         {devices} -kernel {kernel} -append {} -display none -serial stdio -monitor none -no-reboot",
        shell_quote(append)
    )
}

/// The image as the first NVDIMM, mapped privately as daxvmm maps it (share=off).
fn image_device(o: &SuitesOpts, p: &SuitePaths) -> String {
    format!(
        "-object memory-backend-file,id=nv0,mem-path={},size={}M,share=off -device nvdimm,memdev=nv0,id=nvdimm0",
        shell_quote(&p.rootfs),
        o.image_size.div_ceil(1 << 20)
    )
}

/// The batch: `daxvmm_fstests`, `qemu_fstests`, then (with ndctl tests) `daxvmm_ndctl`, `qemu_ndctl`.
/// A QEMU case tees its console to a file and has `daxvmm suite-report` read it.
pub fn batch(o: &SuitesOpts, p: &SuitePaths) -> String {
    let (d, k, out) = (shell_quote(&p.daxvmm), shell_quote(&p.kernel), &p.out);
    let fs = o.fs.join(",");
    let check: Vec<String> = o.check_args.iter().map(|a| shell_quote(a)).collect();
    let check = check.join(" ");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "daxvmm_fstests\trm -rf {out}/daxvmm-fstests; {d} fstests --kernel {k} --rootfs {} --out {out}/daxvmm-fstests \
         --timeout 60m --fs {fs} {check}",
        shell_quote(&p.rootfs)
    );
    let mut devices = image_device(o, p);
    for (i, mib) in FSTESTS_DEVICES_MIB.iter().enumerate() {
        let n = i + 1;
        let _ = write!(
            devices,
            " -object memory-backend-ram,id=nv{n},size={mib}M -device nvdimm,memdev=nv{n},id=nvdimm{n}"
        );
    }
    let maxmem = 1024 + o.image_size.div_ceil(1 << 20) + FSTESTS_DEVICES_MIB.iter().sum::<u64>() + 1024;
    let runner = format!("daxvmm-fstests --fs {fs} -- {}", o.check_args.join(" "));
    let _ = writeln!(
        s,
        "qemu_fstests\trm -rf {out}/qemu-fstests; mkdir -p {out}; {} 2>&1 | tee {out}/qemu-fstests.console; \
         {d} suite-report {out}/qemu-fstests.console --sections {fs} --out {out}/qemu-fstests",
        qemu(&k, 1024, maxmem, &devices, &guest_cmdline("", &runner))
    );
    if !o.ndctl.is_empty() {
        let tests = o.ndctl.join(" ");
        let _ = writeln!(
            s,
            "daxvmm_ndctl\trm -rf {out}/daxvmm-ndctl; {d} ndctl-tests --kernel {k} --rootfs {} --out {out}/daxvmm-ndctl \
             --timeout 60m {tests}",
            shell_quote(&p.rootfs)
        );
        // The e820 range: memmap=SIZE!START marks RAM as legacy pmem, as on a machine without an NFIT.
        let append = guest_cmdline(&format!("memmap={E820_MIB}M!4G"), &format!("daxvmm-ndctl-tests {tests}"));
        let maxmem = NDCTL_QEMU_MEM_MIB + o.image_size.div_ceil(1 << 20) + 1024;
        let _ = writeln!(
            s,
            "qemu_ndctl\trm -rf {out}/qemu-ndctl; mkdir -p {out}; {} 2>&1 | tee {out}/qemu-ndctl.console; \
             {d} suite-report {out}/qemu-ndctl.console --sections ndctl --out {out}/qemu-ndctl",
            qemu(&k, NDCTL_QEMU_MEM_MIB, maxmem, &image_device(o, p), &append)
        );
    }
    s
}

/// One row of the table `daxvmm fstests` and `daxvmm suite-report` print: a verdict and its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// `pass`, `FAIL` or `not run`.
    pub verdict: String,
    /// check's seconds, if it gave them.
    pub seconds: Option<u64>,
    /// The note (a failure or the reason for not running).
    pub note: String,
}

/// The header of that table.
const HEADER: &str = "fs     test           verdict    time  note";

/// The rows of the last table in `output`, by (section, test). Nothing when there is no table.
pub fn rows(output: &str) -> BTreeMap<(String, String), Row> {
    let mut out = BTreeMap::new();
    let Some(start) = output.rfind(HEADER) else { return out };
    for line in output[start + HEADER.len()..].lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (verdict, rest) = match words.as_slice() {
            [_, _, "not", "run", rest @ ..] => ("not run", rest),
            [_, _, v @ ("pass" | "FAIL"), rest @ ..] => (*v, rest),
            _ => continue,
        };
        let seconds = rest.first().and_then(|w| w.strip_suffix('s')?.parse().ok());
        let note = if seconds.is_some() { &rest[1..] } else { rest };
        out.insert(
            (words[0].to_string(), words[1].to_string()),
            Row { verdict: verdict.to_string(), seconds, note: note.join(" ") },
        );
    }
    out
}

/// One suite, both sides: their tables and wall times.
#[derive(Debug, Clone)]
pub struct Side {
    /// The rows of the table it printed.
    pub rows: BTreeMap<(String, String), Row>,
    /// The case's wall time (`None`: the case did not finish).
    pub wall: Option<Duration>,
}

/// The report: a table per suite and the totals.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where it ran.
    pub place: Where,
    /// Per suite (`fstests`, `ndctl`): daxvmm's side and QEMU's.
    pub suites: Vec<(String, Side, Side)>,
}

impl Report {
    /// Tests whose verdicts differ, or that one side lacks, over all suites.
    pub fn differences(&self) -> usize {
        self.suites.iter().map(|(_, d, q)| diff_keys(d, q).len()).sum()
    }

    /// Whether every case finished with a table.
    pub fn complete(&self) -> bool {
        self.suites
            .iter()
            .all(|(_, d, q)| d.wall.is_some() && q.wall.is_some() && !d.rows.is_empty() && !q.rows.is_empty())
    }

    /// The printed comparison.
    pub fn table(&self) -> String {
        let mut s = format!(
            "suites under daxvmm and QEMU, same kernel, image and runner, measured in the same run ({})\n",
            place_note(self.place, "times are emulated; compare the ratios")
        );
        for (suite, d, q) in &self.suites {
            let _ =
                writeln!(s, "\n{suite}:\n{:<6} {:<16} {:<14} {:<14} same", "fs", "test", "daxvmm", "qemu");
            for key in keys(d, q) {
                let cell = |side: &Side| {
                    side.rows.get(key).map_or("-".to_string(), |r| match r.seconds {
                        Some(t) => format!("{} {t}s", r.verdict),
                        None => r.verdict.clone(),
                    })
                };
                let same = match (d.rows.get(key), q.rows.get(key)) {
                    (Some(a), Some(b)) if a.verdict == b.verdict => "yes",
                    _ => "NO",
                };
                let _ = writeln!(s, "{:<6} {:<16} {:<14} {:<14} {same}", key.0, key.1, cell(d), cell(q));
            }
            let secs = |side: &Side| side.wall.map(|w| w.as_secs_f64());
            let shown = |v: Option<f64>| v.map_or("did not finish".to_string(), |v| format!("{v:.0} s"));
            let _ = writeln!(
                s,
                "{suite} wall time: daxvmm {}, qemu {}, ratio daxvmm/qemu {}; verdicts differ on {} tests",
                shown(secs(d)),
                shown(secs(q)),
                ratio(secs(d), secs(q)),
                diff_keys(d, q).len()
            );
        }
        s
    }
}

/// The tests either side has a row for, in order.
fn keys<'a>(d: &'a Side, q: &'a Side) -> BTreeSet<&'a (String, String)> {
    d.rows.keys().chain(q.rows.keys()).collect()
}

fn diff_keys<'a>(d: &'a Side, q: &'a Side) -> Vec<&'a (String, String)> {
    keys(d, q)
        .into_iter()
        .filter(|k| d.rows.get(*k).map(|r| &r.verdict) != q.rows.get(*k).map(|r| &r.verdict))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn opts() -> SuitesOpts {
        SuitesOpts {
            check_args: vec!["-g".into(), "dax".into()],
            fs: vec!["ext4".into(), "xfs".into()],
            ndctl: vec!["mmap.sh".into()],
            image_size: 448 << 20,
        }
    }

    fn paths() -> SuitePaths {
        SuitePaths {
            daxvmm: "/bin/daxvmm".into(),
            kernel: "/guest/bzImage".into(),
            rootfs: "/bin/rootfs.img".into(),
            out: "/tmp/cmp".into(),
        }
    }

    #[test]
    fn both_vmms_boot_the_same_image_kernel_and_runner() {
        let b = batch(&opts(), &paths());
        let names: Vec<&str> = b.lines().map(|l| l.split('\t').next().unwrap()).collect();
        assert_eq!(names, ["daxvmm_fstests", "qemu_fstests", "daxvmm_ndctl", "qemu_ndctl"]);
        let line = |n: &str| b.lines().find(|l| l.starts_with(&format!("{n}\t"))).unwrap();
        assert!(line("daxvmm_fstests").contains("/bin/daxvmm fstests --kernel /guest/bzImage --rootfs /bin/rootfs.img --out /tmp/cmp/daxvmm-fstests --timeout 60m --fs ext4,xfs -g dax"));
        let q = line("qemu_fstests");
        assert!(q.contains("-machine pc,nvdimm=on") && q.contains(" -kernel /guest/bzImage -append "), "{q}");
        assert!(q.contains("mem-path=/bin/rootfs.img,size=448M,share=off"), "{q}");
        assert_eq!(q.matches("-device nvdimm,").count(), 4, "{q}");
        assert!(q.contains("root=/dev/pmem0 rootwait rw init=/usr/local/sbin/daxvmm-init -- daxvmm-fstests --fs ext4,xfs -- -g dax'"), "{q}");
        assert!(q.contains("| tee /tmp/cmp/qemu-fstests.console; /bin/daxvmm suite-report /tmp/cmp/qemu-fstests.console --sections ext4,xfs"), "{q}");
        let n = line("qemu_ndctl");
        assert!(
            n.contains("-m 5120M,")
                && n.contains("memmap=2048M!4G")
                && n.contains("-- daxvmm-ndctl-tests mmap.sh"),
            "{n}"
        );
        assert_eq!(n.matches("-device nvdimm,").count(), 1, "{n}");
        let without = batch(&SuitesOpts { ndctl: vec![], ..opts() }, &paths());
        assert_eq!(without.lines().count(), 2);
    }

    const TABLE: &str = "\
console noise\nfs     test           verdict    time  note\nnot a row\n\
ext4   generic/413    pass        25s\n\
ext4   generic/470    not run          This test requires a valid $LOGWRITES_DEV\n\
xfs    generic/413    FAIL        27s  output mismatch (see x)\n\
ext4: 1 passed, 0 failed, 1 not run (exit status 0)\n";

    #[test]
    fn rows_come_from_the_last_table() {
        let r = rows(&format!("fs     test           verdict    time  note\next4   old/1 pass 1s\n{TABLE}"));
        assert_eq!(r.len(), 3, "{r:?}");
        let key = |fs: &str, t: &str| (fs.to_string(), t.to_string());
        assert_eq!(
            r[&key("ext4", "generic/413")],
            Row { verdict: "pass".into(), seconds: Some(25), note: String::new() }
        );
        assert_eq!(r[&key("ext4", "generic/470")].verdict, "not run");
        assert_eq!(r[&key("ext4", "generic/470")].note, "This test requires a valid $LOGWRITES_DEV");
        assert_eq!(r[&key("xfs", "generic/413")].note, "output mismatch (see x)");
        assert!(rows("no table").is_empty());
    }

    #[test]
    fn the_report_marks_differences_and_missing_rows() {
        let d = Side { rows: rows(TABLE), wall: Some(Duration::from_secs(300)) };
        let mut q = d.clone();
        q.wall = Some(Duration::from_secs(400));
        q.rows.get_mut(&("xfs".to_string(), "generic/413".to_string())).unwrap().verdict = "pass".into();
        q.rows.insert(
            ("xfs".into(), "xfs/550".into()),
            Row { verdict: "pass".into(), seconds: None, note: String::new() },
        );
        let r = Report { place: Where::Direct, suites: vec![("fstests".into(), d, q)] };
        assert_eq!(r.differences(), 2);
        assert!(r.complete());
        let t = r.table();
        assert!(t.contains("xfs    generic/413      FAIL 27s       pass 27s       NO"), "{t}");
        assert!(t.contains("xfs    xfs/550          -              pass           NO"), "{t}");
        assert!(t.contains("ext4   generic/413      pass 25s       pass 25s       yes"), "{t}");
        assert!(t.contains("fstests wall time: daxvmm 300 s, qemu 400 s, ratio daxvmm/qemu 0.75; verdicts differ on 2 tests"), "{t}");
    }
}
