//! The pmem benchmark of `bench` (tests/src/bin/bench.rs; scripts/bench-pmem.sh runs it), and what all
//! benchmarks share: the batch files they run, reading the figures
//! out of what each case printed, the statistics and the printed tables. Each benchmark measures daxvmm
//! and its baseline (QEMU, the host) on the same host in the same run, so the ratios are the figures that
//! carry over from a test host VM to real hardware. The boot benchmark is [`crate::bench_boot`], the race benchmark [`crate::bench_race`].

use std::fmt::Write as _;

use crate::case::{shell_quote, NESTED_INITRD, NESTED_KERNEL};
use crate::host::Where;

/// The paths a batch's commands use where they run: this host's files (direct), or the test host VM's
/// copies of them (nested).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The static daxvmm.
    pub daxvmm: String,
    /// The guest bzImage.
    pub kernel: String,
    /// The guest initramfs.
    pub initrd: String,
    /// The benchmark's helper program (daxvmm-boot-timer, daxvmm-dax-check), if it has one.
    pub tool: String,
    /// A shell command (ending in `; `) each measured VMM case runs first, outside what it measures
    /// (the pmem benchmark's host memcpy case too): [`launder`] in a test host VM, empty elsewhere.
    pub before_vmm: String,
}

impl Paths {
    /// The test host VM's paths: /bin/daxvmm, the guest artifacts under /guest, `/bin/TOOL`.
    pub fn nested(tool: &str) -> Paths {
        Paths {
            daxvmm: "/bin/daxvmm".into(),
            kernel: NESTED_KERNEL.into(),
            initrd: NESTED_INITRD.into(),
            tool: format!("/bin/{tool}"),
            before_vmm: launder(LAUNDER_MIB),
        }
    }
}

/// How much [`launder`] writes before each measured guest in a test host VM: more than a 512 MiB guest
/// and its VMM touch (300 MiB was enough after such a guest in the measurement below).
pub const LAUNDER_MIB: u32 = 768;

/// A command that writes `mib` MiB of zeros into a file in the test host VM's tmpfs and removes it
/// again, so the next guest lands in memory that was just written by the test host VM's kernel.
///
/// Inside the test host VM a guest booted right after another one runs its own boot about half as fast
/// as one booted into memory nothing ran in, whichever VMM boots either (2026-12-04, one test host VM,
/// by hand: the 512 MiB guest's initramfs unpacking took 2.2-2.7 s right after another guest and
/// 0.57-0.81 s after 300-1921 MiB were written this way; QEMU microvm 2.4 s against 0.6 s). It does not
/// depend on the VMM; why that memory is slower is not measured (a candidate: the emulator's, QEMU
/// TCG's, tracking of memory that held translated code). Benchmarks take it out the same way for both
/// sides.
pub fn launder(mib: u32) -> String {
    format!(
        "dd if=/dev/zero of=/tmp/daxvmm-launder bs=1M count={mib} 2>/dev/null; rm -f /tmp/daxvmm-launder; "
    )
}

/// The words after "measured ... in the same run (": where, and for nested what that means.
pub(crate) fn place_note(place: Where, nested: &str) -> String {
    match place {
        Where::Direct => "direct".into(),
        Where::Nested => format!("nested: {nested}"),
    }
}

/// The median, or `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// `a / b` with two decimals, `n/a` when either is missing or `b` is 0.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    }
}

/// The text after `key` in `line`, up to the first character `stop` rejects.
pub(crate) fn value_after<'a>(line: &'a str, key: &str, stop: impl Fn(char) -> bool) -> Option<&'a str> {
    let rest = &line[line.rfind(key)? + key.len()..];
    Some(&rest[..rest.find(stop).unwrap_or(rest.len())])
}

// ---- pmem ----

/// The options of the pmem bandwidth benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmemOpts {
    /// The file's size in MiB.
    pub mib: u64,
    /// memcpy passes each way.
    pub passes: u64,
}

impl PmemOpts {
    /// The NVDIMM region in MiB: it holds ext4 and the file, so twice the file, rounded up to a GiB.
    pub fn region_mib(&self) -> u64 {
        (self.mib * 2).div_ceil(1024) * 1024
    }

    /// The 2 MiB huge pages each case makes sure the host (or test host VM) has: the region's, and 64 more.
    pub fn hugepages(&self) -> u64 {
        self.region_mib() / 2 + 64
    }

    /// The test host VM's memory: room for the hugetlb pool (the region) beside the guests' RAM.
    pub fn vm_mem(&self) -> String {
        format!("{}G", (self.region_mib() + 3072).div_ceil(1024))
    }
}

/// The pmem benchmark's batch: `host` (daxvmm-dax-check, `paths.tool`, on hugetlb memory), `daxvmm`
/// (--pmem on 2M hugetlb) and `qemu` (-device nvdimm on a 2M hugetlb memfd), then the same two as
/// virtio-pmem: `daxvmm_virtio` (--pmem ...,type=virtio) and `qemu_virtio` (-device virtio-pmem-pci on
/// the same kind of memfd), the guests running /tests/pmem-bw.sh. A virtio-pmem region has struct pages
/// (the driver asks for them), so its raw namespace is DAX as it is and pmem-bw.sh needs no ndctl there.
pub fn pmem_batch(o: &PmemOpts, p: &Paths) -> String {
    let (region, pages) = (o.region_mib(), o.hugepages());
    let grow = format!(
        "[ $(cat /proc/sys/vm/nr_hugepages) -ge {pages} ] || echo {pages} > /proc/sys/vm/nr_hugepages"
    );
    let guest_cmd = format!("quiet -- /tests/pmem-bw.sh {} {}", o.mib, o.passes);
    let (k, i) = (shell_quote(&p.kernel), shell_quote(&p.initrd));
    let grow = format!("{}{grow}", p.before_vmm);
    let mut s = String::new();
    let _ = writeln!(s, "host\t{grow}; {} bw --hugetlb {} {}", shell_quote(&p.tool), o.mib, o.passes);
    let _ = writeln!(
        s,
        "daxvmm\t{grow}; {} --kernel {k} --initrd {i} --mem 512M --timeout 20m --pmem {region}M,backing=hugetlb-2m \
         --cmdline {}",
        shell_quote(&p.daxvmm),
        shell_quote(&guest_cmd)
    );
    let _ = writeln!(
        s,
        "qemu\t{grow}; qemu-system-x86_64 -machine pc,nvdimm=on -enable-kvm -cpu host -m 512M,slots=2,maxmem={}M \
         -object memory-backend-memfd,id=nv0,size={region}M,hugetlb=on,hugetlbsize=2M,share=on \
         -device nvdimm,memdev=nv0,id=nvdimm0 -kernel {k} -initrd {i} -append {} -nographic -no-reboot",
        region + 1024,
        shell_quote(&format!("console=ttyS0 noxsave reboot=k panic=1 {guest_cmd}"))
    );
    let _ = writeln!(
        s,
        "daxvmm_virtio\t{grow}; {} --kernel {k} --initrd {i} --mem 512M --timeout 20m \
         --pmem {region}M,backing=hugetlb-2m,type=virtio --cmdline {}",
        shell_quote(&p.daxvmm),
        shell_quote(&guest_cmd)
    );
    // A memory device (nvdimm or virtio-pmem-pci) needs QEMU's hotplug memory area: slots and maxmem.
    let _ = writeln!(
        s,
        "qemu_virtio\t{grow}; qemu-system-x86_64 -machine pc -enable-kvm -cpu host -m 512M,slots=2,maxmem={}M \
         -object memory-backend-memfd,id=vp0,size={region}M,hugetlb=on,hugetlbsize=2M,share=on \
         -device virtio-pmem-pci,memdev=vp0,id=vpmem0 -kernel {k} -initrd {i} -append {} -nographic -no-reboot",
        region + 1024,
        shell_quote(&format!("console=ttyS0 noxsave reboot=k panic=1 {guest_cmd}"))
    );
    s
}

/// Write and read bandwidth in MB/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bandwidth {
    /// memcpy into the mapping.
    pub write: f64,
    /// memcpy out of it.
    pub read: f64,
}

/// The first `write_MBps=W read_MBps=R` (daxvmm-dax-check bw, also behind `pmem-bw: ` in a guest) in a
/// case's output.
pub fn bandwidth(output: &str) -> Option<Bandwidth> {
    let line = output.lines().find(|l| l.contains("write_MBps="))?;
    let num = |key| value_after(line, key, |c: char| !(c.is_ascii_digit() || c == '.'))?.parse().ok();
    Some(Bandwidth { write: num("write_MBps=")?, read: num("read_MBps=")? })
}

/// Everything the pmem benchmark's table shows.
#[derive(Debug, Clone)]
pub struct PmemReport {
    /// Where it ran.
    pub place: Where,
    /// The options.
    pub opts: PmemOpts,
    /// The host's memcpy on hugetlb memory.
    pub host: Option<Bandwidth>,
    /// The guest's under daxvmm, on an NFIT NVDIMM.
    pub daxvmm: Option<Bandwidth>,
    /// The guest's under QEMU, on an NFIT NVDIMM.
    pub qemu: Option<Bandwidth>,
    /// The guest's under daxvmm, on virtio-pmem (virtio-mmio).
    pub daxvmm_virtio: Option<Bandwidth>,
    /// The guest's under QEMU, on virtio-pmem-pci.
    pub qemu_virtio: Option<Bandwidth>,
}

/// The pmem benchmark's cases, in batch order, with their row names in the table.
pub const PMEM_CASES: [(&str, &str); 5] = [
    ("host", "host"),
    ("daxvmm", "daxvmm nfit"),
    ("qemu", "qemu nfit"),
    ("daxvmm_virtio", "daxvmm virtio"),
    ("qemu_virtio", "qemu virtio"),
];

impl PmemReport {
    /// The report from each case's bandwidth, looked up by case name ([`PMEM_CASES`]).
    pub fn from_cases(place: Where, opts: PmemOpts, bw: impl Fn(&str) -> Option<Bandwidth>) -> PmemReport {
        PmemReport {
            place,
            opts,
            host: bw("host"),
            daxvmm: bw("daxvmm"),
            qemu: bw("qemu"),
            daxvmm_virtio: bw("daxvmm_virtio"),
            qemu_virtio: bw("qemu_virtio"),
        }
    }

    /// Whether all five were measured.
    pub fn complete(&self) -> bool {
        [self.host, self.daxvmm, self.qemu, self.daxvmm_virtio, self.qemu_virtio].iter().all(Option::is_some)
    }

    /// The table: each bandwidth, each guest's against the host's, daxvmm's against QEMU's on each
    /// transport, and daxvmm's virtio-pmem against its NFIT.
    pub fn table(&self) -> String {
        let o = &self.opts;
        let mut s = format!(
            "\npmem bandwidth: memcpy through a shared mapping of a {} MiB file, {} passes each way (MB/s)\n",
            o.mib, o.passes
        );
        s.push_str(
            "host: the same program on 2M hugetlb memory; guests: ext4 -o dax on a 2M-hugetlb-backed NVDIMM \
             (nfit: daxvmm --pmem, qemu -device nvdimm) or virtio-pmem (daxvmm type=virtio on virtio-mmio, \
             qemu -device virtio-pmem-pci)\n",
        );
        let _ = writeln!(
            s,
            "all measured on the same host in the same run ({})",
            place_note(self.place, "inside one test host VM")
        );
        let w = |b: Option<Bandwidth>| b.map(|b| b.write);
        let r = |b: Option<Bandwidth>| b.map(|b| b.read);
        let num = |v: Option<f64>| v.map_or_else(|| "none".into(), |v| v.to_string());
        let _ = writeln!(s, "  {:<14} write {:>9}  read {:>9}", "host", num(w(self.host)), num(r(self.host)));
        let guests = [self.daxvmm, self.qemu, self.daxvmm_virtio, self.qemu_virtio];
        for ((_, row), b) in PMEM_CASES[1..].iter().zip(guests) {
            let _ = writeln!(
                s,
                "  {row:<14} write {:>9}  read {:>9}   guest/host: write {}, read {}",
                num(w(b)),
                num(r(b)),
                ratio(w(b), w(self.host)),
                ratio(r(b), r(self.host))
            );
        }
        let pairs = [
            ("daxvmm/qemu, nfit", self.daxvmm, self.qemu, "   (goal >= 1)"),
            ("daxvmm/qemu, virtio", self.daxvmm_virtio, self.qemu_virtio, "   (goal >= 1)"),
            ("daxvmm virtio/nfit", self.daxvmm_virtio, self.daxvmm, "   (goal 0.95-1.05)"),
        ];
        for (what, a, b, goal) in pairs {
            let _ = writeln!(s, "  {what:<20} write {}, read {}{goal}", ratio(w(a), w(b)), ratio(r(a), r(b)));
        }
        if self.place == Where::Nested {
            s.push_str(
                "  (inside the test host VM the numbers are emulated; the ratios are what carries over)\n",
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(ratio(Some(1.0), Some(3.0)), "0.33");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "n/a");
        assert_eq!(ratio(None, Some(1.0)), "n/a");
    }

    #[test]
    fn the_pmem_sizes_follow_the_file() {
        let o = PmemOpts { mib: 1024, passes: 3 };
        assert_eq!((o.region_mib(), o.hugepages(), o.vm_mem()), (2048, 1088, "5G".to_string()));
        let small = PmemOpts { mib: 1, passes: 1 };
        assert_eq!((small.region_mib(), small.hugepages(), small.vm_mem()), (1024, 576, "4G".to_string()));
    }

    #[test]
    fn the_pmem_batch_runs_host_and_both_vmms_on_both_transports() {
        let b = pmem_batch(&PmemOpts { mib: 1024, passes: 3 }, &Paths::nested("daxvmm-dax-check"));
        assert_eq!(crate::test_host::check_batch(&b).expect("a valid batch"), 5);
        let names: Vec<&str> = b.lines().map(|l| l.split('\t').next().unwrap_or_default()).collect();
        assert_eq!(names, PMEM_CASES.map(|(case, _)| case));
        // Every case first writes over the test host VM's free memory (`launder`).
        let grow =
            "dd if=/dev/zero of=/tmp/daxvmm-launder bs=1M count=768 2>/dev/null; rm -f /tmp/daxvmm-launder; \
                    [ $(cat /proc/sys/vm/nr_hugepages) -ge 1088 ] || echo 1088 > /proc/sys/vm/nr_hugepages; ";
        let lines: Vec<&str> = b.lines().collect();
        assert_eq!(lines[0], format!("host\t{grow}/bin/daxvmm-dax-check bw --hugetlb 1024 3"));
        assert!(lines[1].starts_with(&format!("daxvmm\t{grow}/bin/daxvmm --kernel /guest/bzImage")), "{b}");
        assert!(
            lines[1]
                .ends_with("--pmem 2048M,backing=hugetlb-2m --cmdline 'quiet -- /tests/pmem-bw.sh 1024 3'"),
            "{b}"
        );
        assert!(
            lines[2].contains("-m 512M,slots=2,maxmem=3072M -object memory-backend-memfd,id=nv0,size=2048M,")
        );
        assert!(lines[2]
            .contains("-append 'console=ttyS0 noxsave reboot=k panic=1 quiet -- /tests/pmem-bw.sh 1024 3'"));
        assert!(lines[3].starts_with(&format!("daxvmm_virtio\t{grow}/bin/daxvmm --kernel")), "{b}");
        assert!(
            lines[3].ends_with(
                "--pmem 2048M,backing=hugetlb-2m,type=virtio --cmdline 'quiet -- /tests/pmem-bw.sh 1024 3'"
            ),
            "{b}"
        );
        assert!(
            lines[4].starts_with(&format!("qemu_virtio\t{grow}qemu-system-x86_64 -machine pc -enable-kvm"))
        );
        assert!(
            lines[4].contains(
                "-m 512M,slots=2,maxmem=3072M -object memory-backend-memfd,id=vp0,size=2048M,hugetlb=on,\
                 hugetlbsize=2M,share=on -device virtio-pmem-pci,memdev=vp0,id=vpmem0 -kernel /guest/bzImage"
            ),
            "{b}"
        );
        assert!(lines[4]
            .contains("-append 'console=ttyS0 noxsave reboot=k panic=1 quiet -- /tests/pmem-bw.sh 1024 3'"));
    }

    #[test]
    fn bandwidth_lines_are_read() {
        let host = "write_MBps=10234 read_MBps=11876\n";
        assert_eq!(bandwidth(host), Some(Bandwidth { write: 10234.0, read: 11876.0 }));
        let guest = "[    1.2] pmem0: detected\r\npmem-bw: write_MBps=9120 read_MBps=10998\r\n";
        assert_eq!(bandwidth(guest), Some(Bandwidth { write: 9120.0, read: 10998.0 }));
        assert_eq!(bandwidth("mount: /mnt/pmem0: wrong fs type\n"), None);
    }

    #[test]
    fn the_pmem_table_shows_the_ratios() {
        let bw = |write, read| Some(Bandwidth { write, read });
        let r = PmemReport {
            place: Where::Direct,
            opts: PmemOpts { mib: 1024, passes: 3 },
            host: bw(10000.0, 12000.0),
            daxvmm: bw(9000.0, 11400.0),
            qemu: None,
            daxvmm_virtio: bw(8800.0, 11400.0),
            qemu_virtio: bw(8000.0, 12000.0),
        };
        let t = r.table();
        assert!(t.contains("a 1024 MiB file, 3 passes each way (MB/s)"), "{t}");
        assert!(t.contains("in the same run (direct)\n"), "{t}");
        assert!(t.contains("  host           write     10000  read     12000\n"), "{t}");
        assert!(
            t.contains(
                "  daxvmm nfit    write      9000  read     11400   guest/host: write 0.90, read 0.95\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "  qemu nfit      write      none  read      none   guest/host: write n/a, read n/a\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "  daxvmm virtio  write      8800  read     11400   guest/host: write 0.88, read 0.95\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "  qemu virtio    write      8000  read     12000   guest/host: write 0.80, read 1.00\n"
            ),
            "{t}"
        );
        assert!(t.contains("  daxvmm/qemu, nfit    write n/a, read n/a   (goal >= 1)\n"), "{t}");
        assert!(t.contains("  daxvmm/qemu, virtio  write 1.10, read 0.95   (goal >= 1)\n"), "{t}");
        assert!(t.contains("  daxvmm virtio/nfit   write 0.98, read 1.00   (goal 0.95-1.05)\n"), "{t}");
        assert!(!r.complete());
        let full = PmemReport { qemu: bw(1.0, 1.0), ..r };
        assert!(full.complete());
    }

    #[test]
    fn the_pmem_report_takes_each_case_by_name() {
        let outputs = |case: &str| match case {
            "host" => "write_MBps=100 read_MBps=200\n",
            "qemu_virtio" => "pmem-bw: write_MBps=7 read_MBps=8\r\n",
            _ => "mount: wrong fs type\n",
        };
        let r =
            PmemReport::from_cases(Where::Nested, PmemOpts { mib: 1, passes: 1 }, |c| bandwidth(outputs(c)));
        assert_eq!(r.host, Some(Bandwidth { write: 100.0, read: 200.0 }));
        assert_eq!(r.qemu_virtio, Some(Bandwidth { write: 7.0, read: 8.0 }));
        assert_eq!((r.daxvmm, r.qemu, r.daxvmm_virtio), (None, None, None));
        assert!(r.table().contains("the ratios are what carries over"));
    }
}
