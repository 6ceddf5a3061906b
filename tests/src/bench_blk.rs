//! The virtio-blk benchmark (`bench blk`, scripts/bench-blk.sh): O_DIRECT I/O on a raw disk in a guest
//! (`daxvmm-dax-check blk`, images/guest-tools/src/blk.rs) under daxvmm (`--disk IMG`, virtio-mmio) and
//! under QEMU (`-drive ...,if=none -device virtio-blk-pci`, QEMU's default cache mode, which goes through
//! the host page cache as daxvmm's preadv/pwritev into guest memory do), with the same kernel, initramfs, memory
//! and vCPUs, on one host in one run (one test host VM when nested). Each case makes its own sparse
//! image (truncate) and removes it afterwards, so neither side starts with the other's cached pages.

use std::fmt::Write as _;

use crate::bench::{place_note, ratio, value_after, Paths};
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
}

/// Guest memory and vCPUs of both sides.
const MEM: &str = "512M";
const CPUS: u32 = 1;

/// The batch: `daxvmm` then `qemu`, each creating its image, running the guest, removing the image and
/// exiting with the VMM's status.
pub fn batch(o: &BlkOpts, p: &Paths) -> String {
    let (k, i) = (shell_quote(&p.kernel), shell_quote(&p.initrd));
    let guest_cmd = format!("quiet -- daxvmm-dax-check blk /dev/vda {} {}", o.mib, o.rand_ops);
    let img = |vmm: &str| shell_quote(&format!("{}/bench-blk-{vmm}.img", o.img_dir));
    let case = |vmm: &str, run: String| {
        let img = img(vmm);
        format!(
            "{vmm}\t{}rm -f {img}; truncate -s {}M {img} && {run}; s=$?; rm -f {img}; exit $s\n",
            p.before_vmm, o.mib
        )
    };
    let mut s = case(
        "daxvmm",
        format!(
            "{} --kernel {k} --initrd {i} --cpus {CPUS} --mem {MEM} --timeout 20m --disk {} --cmdline {}",
            shell_quote(&p.daxvmm),
            img("daxvmm"),
            shell_quote(&guest_cmd)
        ),
    );
    s += &case(
        "qemu",
        format!(
            "qemu-system-x86_64 -machine pc -enable-kvm -cpu host -smp {CPUS} -m {MEM} \
             -drive file={},if=none,id=d0,format=raw -device virtio-blk-pci,drive=d0 -kernel {k} -initrd {i} \
             -append {} -nographic -no-reboot",
            img("qemu"),
            shell_quote(&format!("console=ttyS0 noxsave reboot=k panic=1 {guest_cmd}"))
        ),
    );
    s
}

/// The figures of one side: `blk-bw: seq_read_MBps=.. seq_write_MBps=.. rand_read_iops=..
/// rand_write_iops=..`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlkFigures {
    /// Sequential 1 MiB reads, MB/s.
    pub seq_read: f64,
    /// Sequential 1 MiB writes, MB/s.
    pub seq_write: f64,
    /// Random 4 KiB reads per second.
    pub rand_read: f64,
    /// Random 4 KiB writes per second.
    pub rand_write: f64,
}

/// The metrics in table order: key in the guest's line, row name.
const METRICS: [(&str, &str); 4] = [
    ("seq_read_MBps=", "seq read MB/s"),
    ("seq_write_MBps=", "seq write MB/s"),
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
            rand_read: num(METRICS[2].0)?,
            rand_write: num(METRICS[3].0)?,
        })
    }

    fn values(&self) -> [f64; 4] {
        [self.seq_read, self.seq_write, self.rand_read, self.rand_write]
    }
}

/// Everything the block benchmark's table shows.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where it ran.
    pub place: Where,
    /// The options.
    pub opts: BlkOpts,
    /// The guest's under daxvmm.
    pub daxvmm: Option<BlkFigures>,
    /// The guest's under QEMU.
    pub qemu: Option<BlkFigures>,
}

impl Report {
    /// Whether both sides were measured.
    pub fn complete(&self) -> bool {
        self.daxvmm.is_some() && self.qemu.is_some()
    }

    /// The table: a row per metric with both sides and the ratio daxvmm/qemu.
    pub fn table(&self) -> String {
        let o = &self.opts;
        let mut s = format!(
            "\nvirtio-blk: O_DIRECT on the raw disk in the guest, over a {} MiB image: sequential 1 MiB \
             requests, {} random 4 KiB ones each way\n",
            o.mib, o.rand_ops
        );
        let _ = writeln!(
            s,
            "daxvmm --disk (virtio-mmio) vs qemu -device virtio-blk-pci (default cache: host page cache, \
             like daxvmm); {CPUS} vCPU, {MEM} each"
        );
        let _ = writeln!(
            s,
            "both measured on the same host in the same run ({})",
            place_note(self.place, "inside one test host VM")
        );
        let _ = writeln!(s, "  {:<16} {:>9} {:>9}   daxvmm/qemu (goal >= 1)", "", "daxvmm", "qemu");
        let vals = |f: Option<BlkFigures>| f.map(|f| f.values());
        let (d, q) = (vals(self.daxvmm), vals(self.qemu));
        for (n, (_, row)) in METRICS.iter().enumerate() {
            let (dv, qv) = (d.map(|v| v[n]), q.map(|v| v[n]));
            let num = |v: Option<f64>| v.map_or_else(|| "none".into(), |v| v.to_string());
            let _ = writeln!(s, "  {row:<16} {:>9} {:>9}   {}", num(dv), num(qv), ratio(dv, qv));
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
        BlkOpts { mib: 256, rand_ops: 4096, img_dir: "/tmp".into() }
    }

    #[test]
    fn the_batch_runs_daxvmm_then_qemu_on_fresh_images() {
        let b = batch(&opts(), &Paths::nested(""));
        assert_eq!(crate::test_host::check_batch(&b).expect("a valid batch"), 2);
        let lines: Vec<&str> = b.lines().collect();
        let launder = crate::bench::launder(crate::bench::LAUNDER_MIB);
        assert_eq!(
            lines[0].replacen(&launder, "", 1),
            "daxvmm\trm -f /tmp/bench-blk-daxvmm.img; truncate -s 256M /tmp/bench-blk-daxvmm.img && /bin/daxvmm \
             --kernel /guest/bzImage --initrd /guest/initrd.cpio.lz4 --cpus 1 --mem 512M --timeout 20m \
             --disk /tmp/bench-blk-daxvmm.img --cmdline 'quiet -- daxvmm-dax-check blk /dev/vda 256 4096'; \
             s=$?; rm -f /tmp/bench-blk-daxvmm.img; exit $s"
        );
        assert!(lines[1].replacen(&launder, "", 1).starts_with(
            "qemu\trm -f /tmp/bench-blk-qemu.img; truncate -s 256M /tmp/bench-blk-qemu.img && qemu-system-x86_64 \
             -machine pc -enable-kvm -cpu host -smp 1 -m 512M -drive file=/tmp/bench-blk-qemu.img,if=none,id=d0,\
             format=raw -device virtio-blk-pci,drive=d0 -kernel /guest/bzImage"
        ));
        assert!(lines[1].contains(
            "-append 'console=ttyS0 noxsave reboot=k panic=1 quiet -- daxvmm-dax-check blk /dev/vda 256 4096'"
        ));
        assert!(lines[1].ends_with("; s=$?; rm -f /tmp/bench-blk-qemu.img; exit $s"));
        assert!(
            lines.iter().all(|l| l.contains(&format!("\t{launder}rm -f"))),
            "both sides launder first: {b}"
        );
    }

    #[test]
    fn the_guest_line_is_read() {
        let out = "[    0.9] virtio_blk virtio0: [vda] 524288 512-byte logical blocks\r\n\
                   blk-bw: seq_read_MBps=812 seq_write_MBps=640.5 rand_read_iops=20311 rand_write_iops=18000\r\n";
        let f = BlkFigures::parse(out).expect("figures");
        assert_eq!(
            f,
            BlkFigures { seq_read: 812.0, seq_write: 640.5, rand_read: 20311.0, rand_write: 18000.0 }
        );
        assert_eq!(BlkFigures::parse("error: daxvmm-dax-check: open /dev/vda with O_DIRECT: ...\n"), None);
        assert_eq!(BlkFigures::parse("blk-bw: seq_read_MBps=1 seq_write_MBps=2\n"), None);
    }

    #[test]
    fn the_table_shows_both_sides_and_the_ratios() {
        let f = |a, b, c, d| Some(BlkFigures { seq_read: a, seq_write: b, rand_read: c, rand_write: d });
        let r = Report {
            place: Where::Nested,
            opts: opts(),
            daxvmm: f(900.0, 600.0, 2000.0, 1500.0),
            qemu: f(1000.0, 500.0, 1000.0, 1500.0),
        };
        let t = r.table();
        assert!(t.contains("over a 256 MiB image: sequential 1 MiB requests, 4096 random 4 KiB ones"), "{t}");
        assert!(t.contains("same run (nested: inside one test host VM)\n"), "{t}");
        assert!(t.contains("  seq read MB/s          900      1000   0.90\n"), "{t}");
        assert!(t.contains("  seq write MB/s         600       500   1.20\n"), "{t}");
        assert!(t.contains("  rand read IOPS        2000      1000   2.00\n"), "{t}");
        assert!(t.contains("  rand write IOPS       1500      1500   1.00\n"), "{t}");
        assert!(r.complete());
        let half = Report { qemu: None, ..r };
        assert!(half.table().contains("  seq read MB/s          900      none   n/a\n"), "{}", half.table());
        assert!(!half.complete());
    }
}
