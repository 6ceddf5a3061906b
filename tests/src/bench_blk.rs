//! The virtio-blk benchmark (`bench blk`, scripts/bench-blk.sh): O_DIRECT I/O on a raw disk in a guest
//! (`daxvmm-dax-check blk`, images/guest-tools/src/blk.rs) under daxvmm (`--disk IMG`, virtio-mmio) and
//! under QEMU (`-drive ...,if=none -device virtio-blk-pci`, QEMU's default cache mode, which goes through
//! the host page cache as daxvmm's preadv/pwritev into guest memory do), with the same kernel, initramfs, memory
//! and vCPUs, on one host in one run (one test host VM when nested). Each case makes its own sparse
//! image (truncate) and removes it afterwards, so neither side starts with the other's cached pages.
//!
//! A run is several rounds of one case per side, the side that goes first alternating, because a
//! single pair of runs inside the test host VM moves by more than the differences looked for. The
//! table gives each side's median and the median of the rounds' ratios, with every round's ratio.

use std::fmt::Write as _;

use crate::bench::{
    median, median_present, no_decimals as num, place_note, round_case, two_decimals as two, value_after,
    Paths,
};
use crate::case::shell_quote;
use crate::host::Where;

/// The options of the block benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkOpts {
    /// The image's size and the span measured, in MiB.
    pub mib: u64,
    /// Random 4 KiB requests each way.
    pub rand_ops: u64,
    /// Where the cases put their images (a directory where they run).
    pub img_dir: String,
    /// Rounds of one case per side.
    pub rounds: u32,
}

/// Guest memory and vCPUs of both sides.
const MEM: &str = "512M";
const CPUS: u32 = 1;

/// The sides, in the order of the odd rounds.
pub const SIDES: [&str; 2] = ["daxvmm", "qemu"];

/// The batch: per round one case per side (daxvmm first in odd rounds, qemu first in even ones), each
/// creating its image, running the guest, removing the image and exiting with the VMM's status.
pub fn batch(o: &BlkOpts, p: &Paths) -> String {
    let (k, i) = (shell_quote(&p.kernel), shell_quote(&p.initrd));
    let guest_cmd = format!("quiet -- daxvmm-dax-check blk /dev/vda {} {}", o.mib, o.rand_ops);
    let img = |vmm: &str| shell_quote(&format!("{}/bench-blk-{vmm}.img", o.img_dir));
    let daxvmm = format!(
        "{} --kernel {k} --initrd {i} --cpus {CPUS} --mem {MEM} --timeout 20m --disk {} --cmdline {}",
        shell_quote(&p.daxvmm),
        img("daxvmm"),
        shell_quote(&guest_cmd)
    );
    let qemu = format!(
        "qemu-system-x86_64 -machine pc -enable-kvm -cpu host -smp {CPUS} -m {MEM} \
         -drive file={},if=none,id=d0,format=raw -device virtio-blk-pci,drive=d0 -kernel {k} -initrd {i} \
         -append {} -nographic -no-reboot",
        img("qemu"),
        shell_quote(&format!("console=ttyS0 noxsave reboot=k panic=1 {guest_cmd}"))
    );
    let case = |vmm: &str, round: u32, run: &str| {
        let img = img(vmm);
        format!(
            "{}\t{}rm -f {img}; truncate -s {}M {img} && {run}; s=$?; rm -f {img}; exit $s\n",
            round_case(vmm, round),
            p.before_vmm,
            o.mib
        )
    };
    let mut s = String::new();
    for round in 1..=o.rounds {
        let mut pair = [case(SIDES[0], round, &daxvmm), case(SIDES[1], round, &qemu)];
        if round % 2 == 0 {
            pair.reverse();
        }
        s.extend(pair);
    }
    s
}

/// The figures of one side: `blk-bw: seq_read_MBps=.. seq_write_MBps=.. seq_rewrite_MBps=..
/// rand_read_iops=.. rand_write_iops=..`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlkFigures {
    /// Sequential 1 MiB reads, MB/s.
    pub seq_read: f64,
    /// Sequential 1 MiB writes into the fresh image, MB/s.
    pub seq_write: f64,
    /// The same writes again, over blocks the first pass wrote, MB/s.
    pub seq_rewrite: f64,
    /// Random 4 KiB reads per second.
    pub rand_read: f64,
    /// Random 4 KiB writes per second.
    pub rand_write: f64,
}

/// The metrics in table order: key in the guest's line, row name.
const METRICS: [(&str, &str); 5] = [
    ("seq_read_MBps=", "seq read MB/s"),
    ("seq_write_MBps=", "seq write MB/s"),
    ("seq_rewrite_MBps=", "seq rewrite MB/s"),
    ("rand_read_iops=", "rand read IOPS"),
    ("rand_write_iops=", "rand write IOPS"),
];

impl BlkFigures {
    /// The first `blk-bw:` line in a case's output.
    pub fn parse(output: &str) -> Option<BlkFigures> {
        let line = output.lines().find(|l| l.contains("blk-bw: "))?;
        let num = |key| -> Option<f64> {
            value_after(line, key, |c: char| !(c.is_ascii_digit() || c == '.'))?.parse().ok()
        };
        Some(BlkFigures {
            seq_read: num(METRICS[0].0)?,
            seq_write: num(METRICS[1].0)?,
            seq_rewrite: num(METRICS[2].0)?,
            rand_read: num(METRICS[3].0)?,
            rand_write: num(METRICS[4].0)?,
        })
    }

    fn values(&self) -> [f64; 5] {
        [self.seq_read, self.seq_write, self.seq_rewrite, self.rand_read, self.rand_write]
    }
}

/// One round's figures of both sides; `None` for a side that printed none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    /// Under daxvmm.
    pub daxvmm: Option<BlkFigures>,
    /// Under QEMU.
    pub qemu: Option<BlkFigures>,
}

impl Round {
    /// Metric `n`'s daxvmm/qemu ratio, when both sides have it and QEMU's is not 0.
    fn ratio(&self, n: usize) -> Option<f64> {
        let (d, q) = (self.daxvmm?.values()[n], self.qemu?.values()[n]);
        (q != 0.0).then(|| d / q)
    }
}

/// Everything the block benchmark's table shows.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where it ran.
    pub place: Where,
    /// The options.
    pub opts: BlkOpts,
    /// The rounds, in order.
    pub rounds: Vec<Round>,
}

impl Report {
    /// Whether both sides were measured in every round.
    pub fn complete(&self) -> bool {
        !self.rounds.is_empty() && self.rounds.iter().all(|r| r.daxvmm.is_some() && r.qemu.is_some())
    }

    /// The table: a row per metric with each side's median, the median of the rounds' daxvmm/qemu
    /// ratios and every round's ratio.
    pub fn table(&self) -> String {
        let o = &self.opts;
        let mut s = format!(
            "\nvirtio-blk: O_DIRECT on the raw disk in the guest, over a {} MiB image: sequential 1 MiB \
             requests, {} random 4 KiB ones each way; {} rounds, the side that goes first alternating\n",
            o.mib,
            o.rand_ops,
            self.rounds.len()
        );
        let _ = writeln!(
            s,
            "daxvmm --disk (virtio-mmio) vs qemu -device virtio-blk-pci (default cache: host page cache, \
             like daxvmm); {CPUS} vCPU, {MEM} each"
        );
        s.push_str(
            "seq write: the first pass, into the fresh sparse image (the host allocates every block); \
             seq rewrite: the same writes again, over those blocks\n",
        );
        let _ = writeln!(
            s,
            "both measured on the same host in the same run ({})",
            place_note(self.place, "inside one test host VM")
        );
        let _ = writeln!(
            s,
            "  {:<16} {:>9} {:>9}   {:<11}  each round's daxvmm/qemu (goal: median >= 1)",
            "(medians)", "daxvmm", "qemu", "daxvmm/qemu"
        );
        for (n, (_, row)) in METRICS.iter().enumerate() {
            let side = |f: fn(&Round) -> Option<BlkFigures>| {
                median(&self.rounds.iter().filter_map(|r| f(r).map(|f| f.values()[n])).collect::<Vec<_>>())
            };
            let ratios: Vec<Option<f64>> = self.rounds.iter().map(|r| r.ratio(n)).collect();
            let each: Vec<String> = ratios.iter().map(|&r| two(r)).collect();
            let _ = writeln!(
                s,
                "  {row:<16} {:>9} {:>9}   {:<11}  {}",
                num(side(|r| r.daxvmm)),
                num(side(|r| r.qemu)),
                two(median_present(&ratios)),
                each.join(" ")
            );
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

    fn opts() -> BlkOpts {
        BlkOpts { mib: 256, rand_ops: 4096, img_dir: "/tmp".into(), rounds: 3 }
    }

    #[test]
    fn the_batch_runs_both_sides_on_fresh_images_each_round_first_in_turn() {
        let b = batch(&opts(), &Paths::nested(""));
        assert_eq!(crate::test_host::check_batch(&b).expect("a valid batch"), 6);
        let lines: Vec<&str> = b.lines().collect();
        let names: Vec<&str> = lines.iter().map(|l| l.split('\t').next().unwrap_or_default()).collect();
        assert_eq!(names, ["daxvmm-1", "qemu-1", "qemu-2", "daxvmm-2", "daxvmm-3", "qemu-3"]);
        let launder = crate::bench::launder(crate::bench::LAUNDER_MIB);
        assert_eq!(
            lines[0].replacen(&launder, "", 1),
            "daxvmm-1\trm -f /tmp/bench-blk-daxvmm.img; truncate -s 256M /tmp/bench-blk-daxvmm.img && /bin/daxvmm \
             --kernel /guest/bzImage --initrd /guest/initrd.cpio.lz4 --cpus 1 --mem 512M --timeout 20m \
             --disk /tmp/bench-blk-daxvmm.img --cmdline 'quiet -- daxvmm-dax-check blk /dev/vda 256 4096'; \
             s=$?; rm -f /tmp/bench-blk-daxvmm.img; exit $s"
        );
        assert!(lines[1].replacen(&launder, "", 1).starts_with(
            "qemu-1\trm -f /tmp/bench-blk-qemu.img; truncate -s 256M /tmp/bench-blk-qemu.img && qemu-system-x86_64 \
             -machine pc -enable-kvm -cpu host -smp 1 -m 512M -drive file=/tmp/bench-blk-qemu.img,if=none,id=d0,\
             format=raw -device virtio-blk-pci,drive=d0 -kernel /guest/bzImage"
        ));
        assert!(lines[1].contains(
            "-append 'console=ttyS0 noxsave reboot=k panic=1 quiet -- daxvmm-dax-check blk /dev/vda 256 4096'"
        ));
        assert!(lines[1].ends_with("; s=$?; rm -f /tmp/bench-blk-qemu.img; exit $s"));
        for (a, b) in [(0, 3), (1, 2), (0, 4), (1, 5)] {
            let body = |l: &str| l.split_once('\t').map(|(_, b)| b.to_string());
            assert_eq!(body(lines[a]), body(lines[b]), "a side runs the same command every round");
        }
        assert!(
            lines.iter().all(|l| l.contains(&format!("\t{launder}rm -f"))),
            "every case launders first: {b}"
        );
    }

    #[test]
    fn the_guest_line_is_read() {
        let out = "[    0.9] virtio_blk virtio0: [vda] 524288 512-byte logical blocks\r\n\
                   blk-bw: seq_read_MBps=812 seq_write_MBps=640.5 seq_rewrite_MBps=700 rand_read_iops=20311 \
                   rand_write_iops=18000\r\n";
        let f = BlkFigures::parse(out).expect("figures");
        assert_eq!(
            f,
            BlkFigures {
                seq_read: 812.0,
                seq_write: 640.5,
                seq_rewrite: 700.0,
                rand_read: 20311.0,
                rand_write: 18000.0
            }
        );
        // A guest from before the rewrite pass: no figures rather than a wrong row.
        assert_eq!(
            BlkFigures::parse(
                "blk-bw: seq_read_MBps=812 seq_write_MBps=640 rand_read_iops=20311 rand_write_iops=18000\n"
            ),
            None
        );
        assert_eq!(BlkFigures::parse("error: daxvmm-dax-check: open /dev/vda with O_DIRECT: ...\n"), None);
        assert_eq!(BlkFigures::parse("blk-bw: seq_read_MBps=1 seq_write_MBps=2\n"), None);
    }

    #[test]
    fn the_table_shows_medians_and_every_rounds_ratio() {
        let f = |a, b, c, d, e| {
            Some(BlkFigures { seq_read: a, seq_write: b, seq_rewrite: c, rand_read: d, rand_write: e })
        };
        let rounds = vec![
            Round {
                daxvmm: f(900.0, 600.0, 800.0, 2000.0, 1500.0),
                qemu: f(1000.0, 500.0, 1000.0, 1000.0, 1500.0),
            },
            Round {
                daxvmm: f(1000.0, 400.0, 1100.0, 2000.0, 1500.0),
                qemu: f(1000.0, 500.0, 1000.0, 1000.0, 3000.0),
            },
            Round {
                daxvmm: f(1200.0, 450.0, 1000.0, 2000.0, 1500.0),
                qemu: f(1000.0, 500.0, 1000.0, 1000.0, 0.0),
            },
        ];
        let r = Report { place: Where::Nested, opts: opts(), rounds };
        let t = r.table();
        assert!(t.contains("over a 256 MiB image: sequential 1 MiB requests, 4096 random 4 KiB ones"), "{t}");
        assert!(t.contains("3 rounds, the side that goes first alternating\n"), "{t}");
        assert!(t.contains("seq rewrite: the same writes again, over those blocks\n"), "{t}");
        assert!(t.contains("same run (nested: inside one test host VM)\n"), "{t}");
        assert!(t.contains("  seq read MB/s         1000      1000   1.00         0.90 1.00 1.20\n"), "{t}");
        assert!(t.contains("  seq write MB/s         450       500   0.90         1.20 0.80 0.90\n"), "{t}");
        assert!(t.contains("  seq rewrite MB/s      1000      1000   1.00         0.80 1.10 1.00\n"), "{t}");
        assert!(t.contains("  rand read IOPS        2000      1000   2.00         2.00 2.00 2.00\n"), "{t}");
        // A round whose QEMU figure is 0 has no ratio; the median is over the others.
        assert!(t.contains("  rand write IOPS       1500      1500   0.75         1.00 0.50 n/a\n"), "{t}");
        assert!(r.complete());
        let mut half = r.clone();
        half.rounds[1].qemu = None;
        assert!(
            half.table().contains("  seq read MB/s         1000      1000   1.05         0.90 n/a 1.20\n"),
            "{}",
            half.table()
        );
        assert!(!half.complete());
        assert!(!Report { rounds: Vec::new(), ..r }.complete());
    }
}
