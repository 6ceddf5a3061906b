//! The pmem bandwidth benchmark (`bench pmem`, scripts/bench-pmem.sh): memcpy through a DAX mapping of a
//! file in a guest, on an NFIT NVDIMM and on virtio-pmem, under daxvmm and under QEMU, beside the
//! host's own memcpy on the same kind of memory, all on one host in one run (one test host VM when
//! nested).
//!
//! A run is several rounds of the five cases, in reverse order every other round, because one set of
//! runs inside the test host VM moves by more than the differences looked for. The table gives each
//! case's median and, for each comparison, the median of the rounds' ratios with every round's ratio.

use std::fmt::Write as _;

use crate::bench::{
    median, median_present as mid, no_decimals as num, place_note, round_case, two_decimals as two,
    value_after, Paths,
};
use crate::case::shell_quote;
use crate::host::Where;

/// The options of the pmem bandwidth benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmemOpts {
    /// The file's size in MiB.
    pub mib: u64,
    /// memcpy passes each way.
    pub passes: u64,
    /// Rounds of the five cases.
    pub rounds: u32,
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

/// The cases of one round, in the order of the odd rounds, with their row names in the table.
pub const PMEM_CASES: [(&str, &str); 5] = [
    ("host", "host"),
    ("daxvmm", "daxvmm nfit"),
    ("qemu", "qemu nfit"),
    ("daxvmm_virtio", "daxvmm virtio"),
    ("qemu_virtio", "qemu virtio"),
];
const HOST: usize = 0;
const DAXVMM: usize = 1;
const QEMU: usize = 2;
const DAXVMM_VIRTIO: usize = 3;
const QEMU_VIRTIO: usize = 4;

/// The batch: per round `host` (daxvmm-dax-check, `paths.tool`, on hugetlb memory), `daxvmm` (--pmem on
/// 2M hugetlb) and `qemu` (-device nvdimm on a 2M hugetlb memfd), then the same two as virtio-pmem:
/// `daxvmm_virtio` (--pmem ...,type=virtio) and `qemu_virtio` (-device virtio-pmem-pci on the same kind
/// of memfd), the guests running /tests/pmem-bw.sh; even rounds run them in reverse. A virtio-pmem
/// region has struct pages (the driver asks for them), so its raw namespace is DAX as it is and
/// pmem-bw.sh needs no ndctl there.
pub fn batch(o: &PmemOpts, p: &Paths) -> String {
    let (region, pages) = (o.region_mib(), o.hugepages());
    let grow = format!(
        "{}[ $(cat /proc/sys/vm/nr_hugepages) -ge {pages} ] || echo {pages} > /proc/sys/vm/nr_hugepages",
        p.before_vmm
    );
    let guest_cmd = format!("quiet -- /tests/pmem-bw.sh {} {}", o.mib, o.passes);
    let (k, i) = (shell_quote(&p.kernel), shell_quote(&p.initrd));
    let qemu_append = shell_quote(&format!("console=ttyS0 noxsave reboot=k panic=1 {guest_cmd}"));
    // A memory device (nvdimm or virtio-pmem-pci) needs QEMU's hotplug memory area: slots and maxmem.
    let qemu = |machine: &str, id: &str, device: &str| {
        format!(
            "qemu-system-x86_64 -machine {machine} -enable-kvm -cpu host -m 512M,slots=2,maxmem={}M \
             -object memory-backend-memfd,id={id},size={region}M,hugetlb=on,hugetlbsize=2M,share=on \
             -device {device},memdev={id},id={id}dev -kernel {k} -initrd {i} -append {qemu_append} -nographic \
             -no-reboot",
            region + 1024
        )
    };
    let daxvmm = |kind: &str| {
        format!(
            "{} --kernel {k} --initrd {i} --mem 512M --timeout 20m --pmem {region}M,backing=hugetlb-2m{kind} \
             --cmdline {}",
            shell_quote(&p.daxvmm),
            shell_quote(&guest_cmd)
        )
    };
    let runs = [
        format!("{} bw --hugetlb {} {}", shell_quote(&p.tool), o.mib, o.passes),
        daxvmm(""),
        qemu("pc,nvdimm=on", "nv0", "nvdimm"),
        daxvmm(",type=virtio"),
        qemu("pc", "vp0", "virtio-pmem-pci"),
    ];
    let mut s = String::new();
    for round in 1..=o.rounds {
        let mut order: Vec<usize> = (0..PMEM_CASES.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for c in order {
            let _ = writeln!(s, "{}\t{grow}; {}", round_case(PMEM_CASES[c].0, round), runs[c]);
        }
    }
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

/// One round: each case's bandwidth in [`PMEM_CASES`] order, `None` where it printed none.
pub type PmemRound = [Option<Bandwidth>; 5];

/// Everything the pmem benchmark's table shows.
#[derive(Debug, Clone)]
pub struct PmemReport {
    /// Where it ran.
    pub place: Where,
    /// The options.
    pub opts: PmemOpts,
    /// The rounds, in order.
    pub rounds: Vec<PmemRound>,
}

/// One direction of a bandwidth.
type Way = fn(&Bandwidth) -> f64;

/// A bandwidth's two directions.
const WAYS: [(&str, Way); 2] = [("write", |b| b.write), ("read", |b| b.read)];

impl PmemReport {
    /// The report of `opts.rounds` rounds from each case's bandwidth, looked up by case name
    /// ([`round_case`]).
    pub fn from_cases(place: Where, opts: PmemOpts, bw: impl Fn(&str) -> Option<Bandwidth>) -> PmemReport {
        let rounds =
            (1..=opts.rounds).map(|r| PMEM_CASES.map(|(case, _)| bw(&round_case(case, r)))).collect();
        PmemReport { place, opts, rounds }
    }

    /// Whether every case was measured in every round.
    pub fn complete(&self) -> bool {
        !self.rounds.is_empty() && self.rounds.iter().flatten().all(Option::is_some)
    }

    /// Case `c`'s median bandwidth one way.
    fn median_of(&self, c: usize, way: Way) -> Option<f64> {
        median(&self.rounds.iter().filter_map(|r| r[c].as_ref().map(way)).collect::<Vec<_>>())
    }

    /// Each round's ratio of case `a` to case `b` one way (`None` where either is missing or `b` is 0).
    fn ratios(&self, a: usize, b: usize, way: Way) -> Vec<Option<f64>> {
        let one = |r: &PmemRound| {
            let (x, y) = (way(r[a].as_ref()?), way(r[b].as_ref()?));
            (y != 0.0).then(|| x / y)
        };
        self.rounds.iter().map(one).collect()
    }

    /// The table: each case's median bandwidth and the median of its rounds' guest/host ratios, then
    /// daxvmm against QEMU on each transport and daxvmm's virtio-pmem against its NFIT, as the median of
    /// the rounds' ratios followed by every round's.
    pub fn table(&self) -> String {
        let o = &self.opts;
        let mut s = format!(
            "\npmem bandwidth: memcpy through a shared mapping of a {} MiB file, {} passes each way (MB/s); \
             {} rounds, every other one in reverse order\n",
            o.mib,
            o.passes,
            self.rounds.len()
        );
        s.push_str(
            "host: the same program on 2M hugetlb memory; guests: ext4 -o dax on a 2M-hugetlb-backed NVDIMM \
             (nfit: daxvmm --pmem, qemu -device nvdimm) or virtio-pmem (daxvmm type=virtio on virtio-mmio, \
             qemu -device virtio-pmem-pci)\n",
        );
        let _ = writeln!(
            s,
            "all measured on the same host in the same run ({}); medians over the rounds",
            place_note(self.place, "inside one test host VM")
        );
        for (c, (_, row)) in PMEM_CASES.iter().enumerate() {
            let [w, r] = WAYS.map(|(_, f)| num(self.median_of(c, f)));
            let _ = write!(s, "  {row:<14} write {w:>9}  read {r:>9}");
            if c != HOST {
                let [w, r] = WAYS.map(|(_, f)| two(mid(&self.ratios(c, HOST, f))));
                let _ = write!(s, "   guest/host: write {w}, read {r}");
            }
            s.push('\n');
        }
        let pairs = [
            ("daxvmm/qemu, nfit", DAXVMM, QEMU, "goal >= 1"),
            ("daxvmm/qemu, virtio", DAXVMM_VIRTIO, QEMU_VIRTIO, "goal >= 1"),
            ("daxvmm virtio/nfit", DAXVMM_VIRTIO, DAXVMM, "goal 0.95-1.05"),
        ];
        for (what, a, b, goal) in pairs {
            let _ = write!(s, "  {what:<20}");
            for (way, f) in WAYS {
                let each = self.ratios(a, b, f);
                let list: Vec<String> = each.iter().map(|&r| two(r)).collect();
                let _ = write!(s, " {way} {} ({})", two(mid(&each)), list.join(" "));
            }
            let _ = writeln!(s, "   ({goal}; each round's in brackets)");
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

    fn opts(rounds: u32) -> PmemOpts {
        PmemOpts { mib: 1024, passes: 3, rounds }
    }

    #[test]
    fn the_pmem_sizes_follow_the_file() {
        let o = opts(1);
        assert_eq!((o.region_mib(), o.hugepages(), o.vm_mem()), (2048, 1088, "5G".to_string()));
        let small = PmemOpts { mib: 1, passes: 1, rounds: 1 };
        assert_eq!((small.region_mib(), small.hugepages(), small.vm_mem()), (1024, 576, "4G".to_string()));
    }

    #[test]
    fn the_batch_runs_host_and_both_vmms_on_both_transports_each_round() {
        let b = batch(&opts(2), &Paths::nested("daxvmm-dax-check"));
        assert_eq!(crate::test_host::check_batch(&b).expect("a valid batch"), 10);
        let names: Vec<&str> = b.lines().map(|l| l.split('\t').next().unwrap_or_default()).collect();
        assert_eq!(
            names,
            [
                "host-1",
                "daxvmm-1",
                "qemu-1",
                "daxvmm_virtio-1",
                "qemu_virtio-1",
                "qemu_virtio-2",
                "daxvmm_virtio-2",
                "qemu-2",
                "daxvmm-2",
                "host-2"
            ]
        );
        // Every case first writes over the test host VM's free memory (`launder`).
        let grow =
            "dd if=/dev/zero of=/tmp/daxvmm-launder bs=1M count=768 2>/dev/null; rm -f /tmp/daxvmm-launder; \
                    [ $(cat /proc/sys/vm/nr_hugepages) -ge 1088 ] || echo 1088 > /proc/sys/vm/nr_hugepages; ";
        let lines: Vec<&str> = b.lines().collect();
        assert_eq!(lines[0], format!("host-1\t{grow}/bin/daxvmm-dax-check bw --hugetlb 1024 3"));
        assert!(lines[1].starts_with(&format!("daxvmm-1\t{grow}/bin/daxvmm --kernel /guest/bzImage")), "{b}");
        assert!(
            lines[1]
                .ends_with("--pmem 2048M,backing=hugetlb-2m --cmdline 'quiet -- /tests/pmem-bw.sh 1024 3'"),
            "{b}"
        );
        assert!(
            lines[2].starts_with(&format!("qemu-1\t{grow}qemu-system-x86_64 -machine pc,nvdimm=on ")),
            "{b}"
        );
        assert!(
            lines[2].contains(
                "-m 512M,slots=2,maxmem=3072M -object memory-backend-memfd,id=nv0,size=2048M,hugetlb=on,\
                 hugetlbsize=2M,share=on -device nvdimm,memdev=nv0,"
            ),
            "{b}"
        );
        assert!(lines[2]
            .contains("-append 'console=ttyS0 noxsave reboot=k panic=1 quiet -- /tests/pmem-bw.sh 1024 3'"));
        assert!(lines[3].starts_with(&format!("daxvmm_virtio-1\t{grow}/bin/daxvmm --kernel")), "{b}");
        assert!(
            lines[3].ends_with(
                "--pmem 2048M,backing=hugetlb-2m,type=virtio --cmdline 'quiet -- /tests/pmem-bw.sh 1024 3'"
            ),
            "{b}"
        );
        assert!(
            lines[4].starts_with(&format!("qemu_virtio-1\t{grow}qemu-system-x86_64 -machine pc -enable-kvm"))
        );
        assert!(
            lines[4].contains(
                "-m 512M,slots=2,maxmem=3072M -object memory-backend-memfd,id=vp0,size=2048M,hugetlb=on,\
                 hugetlbsize=2M,share=on -device virtio-pmem-pci,memdev=vp0,"
            ),
            "{b}"
        );
        let body = |l: &str| l.split_once('\t').map(|(_, b)| b.to_string());
        for (a, z) in [(0, 9), (1, 8), (2, 7), (3, 6), (4, 5)] {
            assert_eq!(body(lines[a]), body(lines[z]), "a case runs the same command every round");
        }
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
    fn the_table_shows_medians_and_every_rounds_ratios() {
        let bw = |write, read| Some(Bandwidth { write, read });
        let r = PmemReport {
            place: Where::Direct,
            opts: opts(3),
            rounds: vec![
                [bw(10000.0, 12000.0), bw(9000.0, 11400.0), None, bw(8800.0, 11400.0), bw(8000.0, 12000.0)],
                [bw(10000.0, 10000.0), bw(9500.0, 10000.0), None, bw(9500.0, 10000.0), bw(10000.0, 10000.0)],
                [bw(12000.0, 12000.0), bw(9900.0, 12000.0), None, bw(9000.0, 6000.0), bw(9000.0, 12000.0)],
            ],
        };
        let t = r.table();
        assert!(t.contains("a 1024 MiB file, 3 passes each way (MB/s); 3 rounds, every other one"), "{t}");
        assert!(t.contains("in the same run (direct); medians over the rounds\n"), "{t}");
        assert!(t.contains("  host           write     10000  read     12000\n"), "{t}");
        // guest/host per round: write 0.90 0.95 0.825, read 0.95 1.00 1.00.
        assert!(
            t.contains(
                "  daxvmm nfit    write      9500  read     11400   guest/host: write 0.90, read 1.00\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "  qemu nfit      write      none  read      none   guest/host: write n/a, read n/a\n"
            ),
            "{t}"
        );
        assert!(t.contains("  daxvmm/qemu, nfit    write n/a (n/a n/a n/a) read n/a (n/a n/a n/a)"), "{t}");
        assert!(
            t.contains(
                "  daxvmm/qemu, virtio  write 1.00 (1.10 0.95 1.00) read 0.95 (0.95 1.00 0.50)   (goal >= 1;"
            ),
            "{t}"
        );
        assert!(
            t.contains("  daxvmm virtio/nfit   write 0.98 (0.98 1.00 0.91) read 1.00 (1.00 1.00 0.50)"),
            "{t}"
        );
        assert!(!r.complete());
        let mut full = r.clone();
        full.rounds.iter_mut().for_each(|round| round[QEMU] = bw(1.0, 1.0));
        assert!(full.complete());
        assert!(!PmemReport { rounds: Vec::new(), ..full }.complete());
    }

    #[test]
    fn the_report_takes_each_case_of_each_round_by_name() {
        let outputs = |case: &str| match case {
            "host-1" => "write_MBps=100 read_MBps=200\n",
            "qemu_virtio-2" => "pmem-bw: write_MBps=7 read_MBps=8\r\n",
            _ => "mount: wrong fs type\n",
        };
        let o = PmemOpts { mib: 1, passes: 1, rounds: 2 };
        let r = PmemReport::from_cases(Where::Nested, o, |c| bandwidth(outputs(c)));
        assert_eq!(r.rounds.len(), 2);
        assert_eq!(r.rounds[0][HOST], Some(Bandwidth { write: 100.0, read: 200.0 }));
        assert_eq!(r.rounds[1][QEMU_VIRTIO], Some(Bandwidth { write: 7.0, read: 8.0 }));
        assert_eq!(r.rounds[0][QEMU_VIRTIO], None);
        assert_eq!(r.rounds[1][HOST], None);
        assert!(r.table().contains("the ratios are what carries over"));
    }
}
