//! The boot benchmark of `bench boot` (scripts/bench-boot.sh): its batch, reading each boot's figures
//! out of what the case printed, and the tables. Each boot is timed from the VMM's process start to the
//! console line `daxvmm-guest: init reached` (daxvmm-boot-timer); the guest then prints its kernel log,
//! whose timestamps split the boot into phases on the guest's own clock: the /init writes the same
//! marker into the kernel log, so the part before the kernel's clock started (VMM set-up, firmware,
//! decompression, early kernel) is the total minus the marker's timestamp.

use std::fmt::Write as _;

use crate::bench::{median, no_decimals, place_note, ratio, value_after, Paths};
use crate::case::shell_quote;
use crate::host::Where;

/// The options of the boot benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOpts {
    /// Boots of each side.
    pub runs: usize,
    /// Guest memory, like `512M`.
    pub mem: String,
    /// Guest vCPUs.
    pub cpus: usize,
    /// QEMU's `-machine`: pc or microvm.
    pub machine: String,
    /// Where the vmlinux is for the `vmlinux` side (daxvmm booting the uncompressed kernel), if any.
    pub vmlinux: Option<String>,
}

/// What each side boots, in the order the runs alternate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// daxvmm with the bzImage.
    Daxvmm,
    /// daxvmm with the same kernel as a vmlinux (no decompression).
    Vmlinux,
    /// daxvmm with the bzImage, `--mem 8G --pmem 16G`: set-up cost against size.
    Big,
    /// QEMU with the bzImage.
    Qemu,
}

impl Side {
    /// The case name prefix and table label.
    pub fn name(self) -> &'static str {
        match self {
            Side::Daxvmm => "daxvmm",
            Side::Vmlinux => "vmlinux",
            Side::Big => "big",
            Side::Qemu => "qemu",
        }
    }

    fn label(self, machine: &str) -> String {
        match self {
            Side::Daxvmm => "daxvmm bzImage".into(),
            Side::Vmlinux => "daxvmm vmlinux".into(),
            Side::Big => "daxvmm 8G+16G".into(),
            Side::Qemu => format!("qemu {machine}"),
        }
    }
}

/// The sides these options measure, in batch order.
pub fn sides(o: &BootOpts) -> Vec<Side> {
    let mut s = vec![Side::Daxvmm];
    if o.vmlinux.is_some() {
        s.push(Side::Vmlinux);
    }
    s.extend([Side::Qemu, Side::Big]);
    s
}

/// The first boots in a test host VM, run before the measured ones and kept out of the medians: the
/// first guest booted in a fresh test host VM was much faster than every later one whichever VMM booted
/// it, an effect of the emulator that [`crate::bench::launder`] (run before every boot, untimed) now
/// takes out; they stay to show whether it does (QEMU goes first).
pub const WARMUP: [Side; 2] = [Side::Qemu, Side::Daxvmm];

/// The marker /init prints on the console and writes into the kernel log (images/init).
const INIT_REACHED: &str = "daxvmm-guest: init reached";

/// The guest's command: print the kernel log, whose timestamps give the phases. It runs after the
/// marker, so it does not change the time measured.
const GUEST_CMD: &str = "quiet -- dmesg";

/// The case that counts daxvmm's exits by kind (`--log-level debug` makes each vCPU log them at its end);
/// a boot of its own so the debug log does not touch the timed ones.
const EXITS_CASE: &str = "exits";

/// The boot benchmark's batch: `warmup_qemu` and `warmup_daxvmm`, then per run one boot of each side
/// (`daxvmm_N`, `vmlinux_N`, `qemu_N`, `big_N`) alternating, so that drift in the host's speed hits all
/// alike, each timed by daxvmm-boot-timer (`paths.tool`). The QEMU guest gets `noxsave` (a 7.2 guest
/// needs it under nested KVM); daxvmm turns XSAVE off itself when nested. Last, [`EXITS_CASE`].
pub fn boot_batch(o: &BootOpts, p: &Paths) -> String {
    let mut s = String::new();
    for side in WARMUP {
        let _ = writeln!(s, "warmup_{}\t{}", side.name(), command(o, p, side));
    }
    for n in 1..=o.runs {
        for side in sides(o) {
            let _ = writeln!(s, "{}_{n}\t{}", side.name(), command(o, p, side));
        }
    }
    let _ = writeln!(s, "{EXITS_CASE}\t{} --log-level debug", command(o, p, Side::Daxvmm));
    s
}

/// What the exits case's vCPUs logged: `vCPU N exits before the init marker: ...; after: ...`.
pub fn exit_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.find("vCPU ").map(|at| &l[at..]))
        .filter(|l| l.contains(" exits before the init marker: "))
        .map(|l| l.trim_end().to_string())
        .collect()
}

fn command(o: &BootOpts, p: &Paths, side: Side) -> String {
    // The console goes to stderr as well (by /proc: a test host VM has no /dev/stderr), which the case's
    // output keeps: the kernel log is in it.
    let timing = format!(
        "{}{} --timeout 300 --grace 60 --console /proc/self/fd/2 --",
        p.before_vmm,
        shell_quote(&p.tool)
    );
    let (bz, i) = (shell_quote(&p.kernel), shell_quote(&p.initrd));
    let daxvmm = |kernel: &str, mem: &str| {
        format!(
            "{timing} {} --kernel {kernel} --initrd {i} --cpus {} --mem {mem} --cmdline {}",
            shell_quote(&p.daxvmm),
            o.cpus,
            shell_quote(GUEST_CMD)
        )
    };
    match side {
        Side::Daxvmm => daxvmm(&bz, &o.mem),
        Side::Vmlinux => daxvmm(&shell_quote(o.vmlinux.as_deref().unwrap_or_default()), &o.mem),
        Side::Big => daxvmm(&bz, "8G --pmem 16G"),
        Side::Qemu => format!(
            "{timing} qemu-system-x86_64 -machine {} -enable-kvm -cpu host -smp {} -m {} -kernel {bz} \
             -initrd {i} -append {} -nographic -no-reboot",
            o.machine,
            o.cpus,
            o.mem,
            shell_quote(&format!("console=ttyS0 noxsave {GUEST_CMD}"))
        ),
    }
}

/// One boot's figures, all in milliseconds; each `None` when its line is missing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Boot {
    /// Process start to the console marker (daxvmm-boot-timer).
    pub total: Option<f64>,
    /// Process start to the first entry into the guest (daxvmm's own log; not for QEMU).
    pub entry: Option<f64>,
    /// Kernel clock at "Unpacking initramfs...".
    pub unpack_start: Option<f64>,
    /// Kernel clock at "Freeing initrd memory".
    pub unpack_end: Option<f64>,
    /// Kernel clock at "Run /init as init process".
    pub run_init: Option<f64>,
    /// Kernel clock at the marker /init writes into the kernel log.
    pub marker: Option<f64>,
}

/// The kernel-log timestamp of the first line of `out` whose text after the timestamp starts with
/// `text`, in milliseconds.
fn stamp(out: &str, text: &str) -> Option<f64> {
    out.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix('[')?;
        let (secs, msg) = rest.split_once(']')?;
        msg.trim_start().starts_with(text).then(|| secs.trim().parse::<f64>().ok().map(|s| s * 1000.0))?
    })
}

impl Boot {
    /// Reads a case's output.
    pub fn parse(out: &str) -> Boot {
        Boot {
            total: boot_marker_ms(out).flatten(),
            entry: out
                .lines()
                .find_map(|l| value_after(l, "entering the guest kernel ", |c| !c.is_ascii_digit()))
                .and_then(|v| v.parse().ok()),
            unpack_start: stamp(out, "Unpacking initramfs"),
            unpack_end: stamp(out, "Freeing initrd memory"),
            run_init: stamp(out, "Run /init as init process"),
            marker: stamp(out, INIT_REACHED),
        }
    }

    /// The phases, in [`PHASES`] order.
    pub fn phases(&self) -> [Option<f64>; 7] {
        let sub = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        let before_clock = sub(self.total, self.marker);
        [
            self.entry,
            sub(before_clock, self.entry),
            before_clock,
            self.unpack_start,
            sub(self.unpack_end, self.unpack_start),
            sub(self.run_init, self.unpack_end),
            sub(self.marker, self.run_init),
        ]
    }
}

/// The rows of the phase table. The first two split the third where daxvmm says when it entered the
/// guest; the last four add up to the kernel clock at the marker.
pub const PHASES: [&str; 7] = [
    "  VMM start -> guest kernel entry",
    "  entry -> kernel clock (decompress, early)",
    "VMM start -> kernel clock starts",
    "kernel clock -> initramfs unpack starts",
    "initramfs unpack (async, 1 CPU shared)",
    "unpack done -> /init",
    "/init -> marker",
];

/// What daxvmm-boot-timer's line (`daxvmm-boot-timer: marker_ms=M exit_ms=E exit=X`) in a case's output
/// says: `None` without such a line, `Some(None)` when the marker never came (`marker_ms=none`),
/// `Some(Some(ms))` when it came after `ms` milliseconds.
pub fn boot_marker_ms(output: &str) -> Option<Option<f64>> {
    let line = output.lines().find(|l| l.contains("daxvmm-boot-timer: marker_ms="))?;
    Some(value_after(line, "marker_ms=", char::is_whitespace).and_then(|v| v.parse().ok()))
}

/// One side's boots, in run order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Boots(pub Vec<Boot>);

impl Boots {
    /// The median of `f` over the boots that have it.
    pub fn median_of(&self, f: impl Fn(&Boot) -> Option<f64>) -> Option<f64> {
        median(&self.0.iter().filter_map(f).collect::<Vec<_>>())
    }

    /// The median total.
    pub fn median(&self) -> Option<f64> {
        self.median_of(|b| b.total)
    }

    /// How many boots reached the marker, and how many of those are within 10% of the median.
    pub fn spread(&self) -> (usize, usize) {
        let totals: Vec<f64> = self.0.iter().filter_map(|b| b.total).collect();
        let m = median(&totals).unwrap_or(0.0);
        (totals.len(), totals.iter().filter(|t| (*t - m).abs() <= m * 0.1).count())
    }

    fn runs(&self) -> String {
        self.0.iter().map(|b| no_decimals(b.total)).collect::<Vec<_>>().join(" ")
    }
}

/// Everything the boot benchmark's tables show.
#[derive(Debug, Clone)]
pub struct BootReport {
    /// Where it ran.
    pub place: Where,
    /// The options.
    pub opts: BootOpts,
    /// The file names of the guest kernel and initramfs.
    pub guest: (String, String),
    /// The warm-up boots, in [`WARMUP`] order.
    pub warmup: Vec<Boot>,
    /// Each side's measured boots, in [`sides`] order.
    pub sides: Vec<(Side, Boots)>,
    /// daxvmm's exits by kind, a line per vCPU ([`exit_lines`]).
    pub exits: Vec<String>,
}

impl BootReport {
    /// Reads every case's output through `out` (case name to output).
    pub fn from_cases<'a>(
        place: Where,
        opts: BootOpts,
        guest: (String, String),
        out: impl Fn(&str) -> &'a str,
    ) -> BootReport {
        let warmup = WARMUP.iter().map(|s| Boot::parse(out(&format!("warmup_{}", s.name())))).collect();
        let sides = sides(&opts)
            .into_iter()
            .map(|s| {
                (s, Boots((1..=opts.runs).map(|n| Boot::parse(out(&format!("{}_{n}", s.name())))).collect()))
            })
            .collect();
        let exits = exit_lines(out(EXITS_CASE));
        BootReport { place, opts, guest, warmup, sides, exits }
    }

    fn side(&self, side: Side) -> Option<&Boots> {
        self.sides.iter().find(|(s, _)| *s == side).map(|(_, b)| b)
    }

    /// The measured cases that never printed the marker (or no timer line at all).
    pub fn failed(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (side, boots) in &self.sides {
            for (n, b) in boots.0.iter().enumerate() {
                if b.total.is_none() {
                    v.push(format!("{}_{}", side.name(), n + 1));
                }
            }
        }
        v
    }

    /// The tables: totals with their runs and spread, the ratios, then the phases.
    pub fn table(&self) -> String {
        let o = &self.opts;
        let m = &o.machine;
        let mut s = String::from(
            "\nBoot time, VMM process start -> guest console 'daxvmm-guest: init reached' (guest: quiet, then dmesg)\n",
        );
        let _ = writeln!(
            s,
            "all sides were measured on the same host, in the same run, alternating ({})",
            place_note(self.place, "inside one test host VM, QEMU TCG + nested SVM")
        );
        let _ = writeln!(
            s,
            "guest: {} + {}, {} vCPU(s), {}; qemu -machine {m}",
            self.guest.0, self.guest.1, o.cpus, o.mem
        );
        let warm: Vec<String> = WARMUP
            .iter()
            .zip(&self.warmup)
            .map(|(side, b)| {
                format!("{} {}", side.name(), b.total.map_or_else(|| "none".into(), |t| format!("{t:.0} ms")))
            })
            .collect();
        let _ =
            writeln!(s, "warm-up, the test host VM's first boots (not in the medians): {}", warm.join(", "));
        for (side, boots) in &self.sides {
            let med = no_decimals(boots.median());
            let (n, near) = boots.spread();
            let _ = writeln!(
                s,
                "  {:<16} median {med:>6} ms, {near}/{n} runs within 10%   runs (ms): {}",
                side.label(m),
                boots.runs()
            );
        }
        let q = self.side(Side::Qemu).and_then(Boots::median);
        for side in [Side::Daxvmm, Side::Vmlinux] {
            if let Some(b) = self.side(side) {
                let _ = writeln!(s, "  ratio {}/qemu {m}: {}", side.label(m), ratio(b.median(), q));
            }
        }
        s.push_str(&self.phase_table());
        let _ =
            writeln!(s, "daxvmm's exits to user space by kind (one more boot, bzImage, --log-level debug):");
        match self.exits.is_empty() {
            true => s.push_str("  none logged\n"),
            false => self.exits.iter().for_each(|l| {
                let _ = writeln!(s, "  {l}");
            }),
        }
        if self.place == Where::Nested {
            s.push_str(
                "  (times inside the test host VM are emulated and slow; the ratios are what carry over)\n",
            );
        }
        let failed = self.failed();
        if !failed.is_empty() {
            let _ = writeln!(s, "  runs that never printed the marker: {}", failed.join(" "));
        }
        s
    }

    fn phase_table(&self) -> String {
        let m = &self.opts.machine;
        let mut s = String::from(
            "\nPhases, median ms of each (medians need not add up); kernel clock = the guest's printk time\n",
        );
        let _ = write!(s, "{:<44}", "phase");
        for (side, _) in &self.sides {
            let _ = write!(s, " {:>16}", side.label(m));
        }
        s.push('\n');
        for (row, name) in PHASES.iter().enumerate() {
            let _ = write!(s, "{name:<44}");
            for (_, boots) in &self.sides {
                let v =
                    boots.median_of(|b| b.phases()[row]).map_or_else(|| "-".into(), |v| format!("{v:.0}"));
                let _ = write!(s, " {v:>16}");
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DAXVMM_OUT: &str = "daxvmm: entering the guest kernel 209 ms after start\n\
        daxvmm-guest: init reached\n\
        [    0.000000] Linux version 7.2.12\n\
        [    0.676680] Unpacking initramfs...\n\
        [    3.689132] Freeing initrd memory: 8276K\n\
        [    3.957039] Run /init as init process\n\
        [    4.101000] daxvmm-guest: init reached\n\
        daxvmm-boot-timer: marker_ms=5299.0 exit_ms=5500.0 exit=0\n";

    #[test]
    fn the_boot_timer_line_is_read() {
        let out = "daxvmm: booting\r\ndaxvmm-boot-timer: marker_ms=3217.4 exit_ms=3301.0 exit=0\n";
        assert_eq!(boot_marker_ms(out), Some(Some(3217.4)));
        let none = "daxvmm-boot-timer: marker_ms=none exit_ms=300000.2 exit=killed\nlater\n";
        assert_eq!(boot_marker_ms(none), Some(None));
        assert_eq!(boot_marker_ms("qemu-system-x86_64: cannot open /dev/kvm\n"), None);
    }

    #[test]
    fn a_boot_splits_into_phases_that_add_up() {
        let b = Boot::parse(DAXVMM_OUT);
        assert_eq!(b.total, Some(5299.0));
        assert_eq!(b.entry, Some(209.0));
        let p = b.phases();
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-6;
        assert!(close(p[0], 209.0) && close(p[1], 5299.0 - 4101.0 - 209.0) && close(p[2], 5299.0 - 4101.0));
        assert!(close(p[3], 676.68) && close(p[4], 3689.132 - 676.68));
        assert!(close(p[5], 3957.039 - 3689.132) && close(p[6], 4101.0 - 3957.039));
        let sum: f64 = p[2..].iter().map(|v| v.unwrap()).sum();
        assert!((sum - 5299.0).abs() < 1e-6, "{sum}");

        // QEMU says nothing of its kernel entry; a boot without a kernel log has only its total.
        let q =
            Boot::parse(&DAXVMM_OUT.replace("daxvmm: entering the guest kernel 209 ms after start\n", ""));
        assert_eq!((q.entry, q.phases()[0], q.phases()[1]), (None, None, None));
        assert!(q.phases()[2].is_some());
        let bare = Boot::parse("daxvmm-boot-timer: marker_ms=none exit_ms=1.0 exit=1\n");
        assert_eq!(bare, Boot::default());
    }

    #[test]
    fn the_batch_warms_up_with_qemu_first_then_alternates_every_side() {
        let o = BootOpts {
            runs: 2,
            mem: "512M".into(),
            cpus: 1,
            machine: "microvm".into(),
            vmlinux: Some("/v l".into()),
        };
        let p = Paths {
            daxvmm: "/bin/daxvmm".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            tool: "/t".into(),
            before_vmm: "launder; ".into(),
        };
        let b = boot_batch(&o, &p);
        let names: Vec<&str> = b.lines().map(|l| l.split('\t').next().unwrap()).collect();
        assert_eq!(
            names,
            [
                "warmup_qemu",
                "warmup_daxvmm",
                "daxvmm_1",
                "vmlinux_1",
                "qemu_1",
                "big_1",
                "daxvmm_2",
                "vmlinux_2",
                "qemu_2",
                "big_2",
                "exits"
            ]
        );
        assert!(b.lines().all(|l| l.contains("\tlaunder; ")), "every boot launders first, untimed: {b}");
        assert!(b.lines().last().unwrap().ends_with("--log-level debug"), "{b}");
        assert!(
            b.contains("--kernel '/v l'")
                && b.contains("--mem 8G --pmem 16G")
                && b.contains("-machine microvm")
        );
        assert!(
            b.lines().all(|l| l.contains("-- dmesg") && l.contains("--console /proc/self/fd/2 --")),
            "{b}"
        );
        assert_eq!(crate::test_host::check_batch(&b).expect("a valid batch"), 11);
        let none = BootOpts { vmlinux: None, ..o };
        assert!(!boot_batch(&none, &p).contains("vmlinux_"));
    }

    const EXITS_OUT: &str = "[2026-12-04T10:00:00Z DEBUG daxvmm::vcpu] vCPU 0 exits before the init marker: \
        serial port 9, other port I/O 80, MMIO 3, other 0; after: serial port 2, other port I/O 1, MMIO 0, other 0\n";

    #[test]
    fn the_report_reads_every_case_and_flags_missing_and_spread_runs() {
        let o = BootOpts { runs: 3, mem: "512M".into(), cpus: 1, machine: "pc".into(), vmlinux: None };
        let qemu = DAXVMM_OUT.replace("5299.0", "10598.0");
        let slow = DAXVMM_OUT.replace("5299.0", "9000.0");
        let r =
            BootReport::from_cases(
                Where::Nested,
                o,
                ("bzImage".into(), "initrd".into()),
                |name| match name {
                    "qemu_1" | "qemu_2" | "qemu_3" => qemu.as_str(),
                    "daxvmm_3" => slow.as_str(),
                    "big_2" => "",
                    "exits" => EXITS_OUT,
                    _ => DAXVMM_OUT,
                },
            );
        assert_eq!(r.failed(), ["big_2"]);
        let d = r.side(Side::Daxvmm).unwrap();
        assert_eq!((d.median(), d.spread()), (Some(5299.0), (3, 2)));
        let t = r.table();
        assert!(t.contains("ratio daxvmm bzImage/qemu pc: 0.50"), "{t}");
        assert!(
            t.contains(
                "warm-up, the test host VM's first boots (not in the medians): qemu 5299 ms, daxvmm 5299 ms"
            ),
            "{t}"
        );
        assert!(t.contains("2/3 runs within 10%"), "{t}");
        assert!(t.contains("runs that never printed the marker: big_2"), "{t}");
        assert!(
            t.contains("\n  vCPU 0 exits before the init marker: serial port 9, other port I/O 80, MMIO 3"),
            "{t}"
        );
        // The phase rows: daxvmm's entry row has a figure; QEMU's has the same lines, so the same phases.
        let entry_row = t.lines().find(|l| l.starts_with(PHASES[0])).unwrap();
        assert!(entry_row.contains("209"), "{entry_row}");
    }
}
