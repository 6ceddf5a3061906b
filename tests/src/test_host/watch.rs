//! The console reader and stall watchdog of one running test host VM ([`Watch`]), and the diagnostics it
//! gathers when the VM hangs or resets; see [`super`].

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::error::{io_err, TestHostError};
use super::{log, Config, End, Fault, OnLine};
use crate::console::ConsoleParser;
use crate::markers::{self, L1_HOST_LOG};

/// The console reader and stall watchdog of one running QEMU.
pub(super) struct Watch<'a> {
    cfg: &'a Config,
    child: Child,
    log: File,
    pub(super) parser: ConsoleParser,
    stalled: bool,
    timed_out: bool,
    /// The last test host kernel panic line not followed by a case's or daxvmm's own line: a guest's
    /// panic is followed by daxvmm's lines ("daxvmm: guest kernel panicked"), the test host kernel's
    /// is not.
    l1_panic: Option<String>,
    powered_down: bool,
    start: Instant,
    rx: mpsc::Receiver<Vec<u8>>,
    /// The run directory: QEMU's monitor socket and debug log.
    dir: PathBuf,
}

impl<'a> Watch<'a> {
    pub(super) fn new(
        cfg: &'a Config,
        mut child: Child,
        log: &Path,
        dir: &Path,
    ) -> Result<Watch<'a>, TestHostError> {
        let (tx, rx) = mpsc::channel();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            thread::spawn(move || pump(stream, tx));
        }
        let log = File::create(log).map_err(io_err("create", log))?;
        Ok(Watch {
            cfg,
            child,
            log,
            parser: ConsoleParser::new(),
            stalled: false,
            timed_out: false,
            l1_panic: None,
            powered_down: false,
            start: Instant::now(),
            rx,
            dir: dir.to_path_buf(),
        })
    }

    fn line(&mut self, line: &str, on_line: OnLine<'_>) {
        let _ = self.log.write_all(line.as_bytes());
        let _ = self.log.write_all(b"\n");
        let clean = line.trim_end_matches('\r');
        if let Some(i) = clean.find("Kernel panic - not syncing") {
            self.l1_panic = Some(clean[i..].to_string());
        }
        if clean.starts_with("daxvmm") || clean.contains(markers::CASE_END) {
            self.l1_panic = None;
        }
        self.powered_down |= clean.contains("reboot: Power down");
        let ended = self.parser.feed(line, self.start.elapsed());
        let log = ended.as_deref().and_then(|n| self.parser.finished.get_key_value(n));
        on_line(line, log.map(|(n, l)| (n.as_str(), l)));
    }

    /// Reads the console until QEMU exits (or the watchdog kills it); QEMU's exit status.
    pub(super) fn read(&mut self, on_line: OnLine<'_>) -> Option<i32> {
        let mut pending: Vec<u8> = Vec::new();
        let mut last = Instant::now();
        let mut term_at: Option<Instant> = None;
        loop {
            match self.rx.recv_timeout(Duration::from_millis(500)) {
                Ok(chunk) => {
                    last = Instant::now();
                    pending.extend_from_slice(&chunk);
                    while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=nl).collect();
                        let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                        self.line(&text, on_line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if !self.stalled && !self.timed_out && last.elapsed() >= self.cfg.stall {
                self.stalled = true;
                self.stall_report(on_line);
                let _ = self.child.kill();
            }
            if !self.timed_out && !self.stalled && self.start.elapsed() >= self.cfg.timeout {
                self.timed_out = true;
                log(&format!(
                    "the test host VM ran into its timeout ({}s); killing it",
                    self.cfg.timeout.as_secs()
                ));
                // SAFETY: a signal to our own child, which has not been reaped yet (no pid reuse).
                unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
                term_at = Some(Instant::now());
            }
            if term_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                let _ = self.child.kill();
                term_at = None;
            }
        }
        if !pending.is_empty() {
            let text = String::from_utf8_lossy(&pending).into_owned();
            self.line(&text, on_line);
        }
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// The diagnostics of a stalled VM: the stall marker, then each CPU's registers and local APIC, and
    /// QEMU's threads; on the console stream, in the console log and on stderr.
    fn stall_report(&mut self, on_line: OnLine<'_>) {
        let sock = self.dir.join("monitor.sock");
        let mut report: Vec<String> = monitor_dump(&sock, self.cfg.cpus)
            .lines()
            .filter(|l| is_register_line(l))
            .map(|l| format!("{L1_HOST_LOG} {}", l.trim_end()))
            .collect();
        report.extend(qemu_threads(self.child.id()));
        self.line("", on_line);
        self.line(markers::L1_STALL, on_line);
        for l in &report {
            let _ = writeln!(self.log, "{l}");
            log(l);
        }
        log(&format!(
            "the test host VM's console was silent for {}s: it hung; killed it",
            self.cfg.stall.as_secs()
        ));
    }

    pub(super) fn end(&mut self, rc: Option<i32>) -> End {
        if self.stalled {
            return End::Fault(Fault::Stall);
        }
        if let Some(why) = &self.parser.no_kvm {
            return End::NoKvm(why.clone());
        }
        if self.parser.done {
            return End::Done;
        }
        if self.timed_out {
            return End::Fault(Fault::Timeout);
        }
        if let Some(p) = &self.l1_panic {
            return End::Fault(Fault::Panic(p.clone()));
        }
        if rc == Some(0) && !self.powered_down {
            // QEMU exits 0 on a guest reset (-no-reboot); -d cpu_reset logged each CPU's state at it.
            let debug = fs::read_to_string(self.dir.join("qemu-debug.log")).unwrap_or_default();
            let lines = reset_lines(&debug, self.cfg.cpus);
            log("the test host VM reset itself with no panic message (a triple fault?); QEMU's CPU state at that reset:");
            if lines.is_empty() {
                log("(no QEMU CPU reset log)");
            }
            for l in lines {
                let _ = writeln!(self.log, "{l}");
                log(&l);
            }
            return End::Fault(Fault::Reset);
        }
        End::Fault(Fault::Died(rc))
    }
}

fn pump(mut r: Box<dyn Read + Send>, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        }
    }
}

/// The monitor lines worth keeping at a stall: where each CPU is, and its local APIC timer and pending
/// interrupts (is a timer armed, an interrupt pending?).
pub fn is_register_line(l: &str) -> bool {
    ["RIP=", "CPU#", "local APIC state"].iter().any(|k| l.contains(k))
        || ["LVTT", "Timer", "ISR", "IRR", "PPR"].iter().any(|k| l.starts_with(k))
}

/// QEMU's CPU state at a reset, from its `-d cpu_reset` log: the last `4 * cpus + 1` lines of interest.
/// (The power-on resets at start log the same way, with RIP=fff0.)
pub fn reset_lines(debug_log: &str, cpus: usize) -> Vec<String> {
    let keep = |l: &&str| {
        l.contains("CPU Reset")
            || l.contains("Triple fault")
            || ["RIP=", "EIP=", "CR0=", "EFER="].iter().any(|k| l.starts_with(k))
    };
    let v: Vec<&str> = debug_log.lines().filter(keep).collect();
    v[v.len().saturating_sub(4 * cpus + 1)..].iter().map(|l| format!("{L1_HOST_LOG} {l}")).collect()
}

/// Asks QEMU's monitor for every CPU's registers and local APIC state.
fn monitor_dump(sock: &Path, cpus: usize) -> String {
    let Ok(mut s) = UnixStream::connect(sock) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut cmds = vec!["info registers -a".to_string()];
    for cpu in 0..cpus {
        cmds.push(format!("cpu {cpu}"));
        cmds.push("info lapic".into());
    }
    let _ = s.write_all(format!("{}\n", cmds.join("\n")).as_bytes());
    let (mut out, end) = (Vec::new(), Instant::now() + Duration::from_secs(3));
    let mut buf = [0u8; 65536];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One thread's state and CPU ticks (user + system) from its `/proc/.../stat` (the fields after the
/// name: a thread name like "CPU 0/TCG" has spaces).
pub fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((fields.first()?.to_string(), ticks))
}

/// Each QEMU thread's name, state, kernel wait channel and CPU ticks used during one second: vCPU
/// threads burning CPU mean the test host (or TCG) spins, sleeping ones a wait inside QEMU.
fn qemu_threads(pid: u32) -> Vec<String> {
    let task = PathBuf::from(format!("/proc/{pid}/task"));
    let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let tids = |_: ()| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            fs::read_dir(&task).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        v.sort();
        v
    };
    let before: BTreeMap<PathBuf, u64> = tids(())
        .into_iter()
        .filter_map(|t| Some((t.clone(), parse_stat(&read(t.join("stat")))?.1)))
        .collect();
    thread::sleep(Duration::from_secs(1));
    tids(())
        .into_iter()
        .filter_map(|t| {
            let (state, ticks) = parse_stat(&read(t.join("stat")))?;
            let tid = t.file_name()?.to_string_lossy().into_owned();
            Some(format!(
                "{L1_HOST_LOG} qemu thread {tid} ({}) state {state} wchan {}, {} ticks of CPU in 1 s",
                read(t.join("comm")),
                read(t.join("wchan")),
                ticks.saturating_sub(before.get(&t).copied().unwrap_or(0))
            ))
        })
        .collect()
}
