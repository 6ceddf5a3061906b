//! What a run's threads share: the open /dev/dax_refcount (when the kernel has the driver), the fault
//! injector's sync points and events through it, the run number, CPU placement, and the console lines the
//! host parses (`@@race ...`).

use std::time::Duration;

use daxvmm_refcount_test::sys::{ename, Dev};

/// Event codes of the fault-injection protocol (daxvmm's docs/fault-injection.md).
pub mod code {
    pub const PIN: u8 = 0x01;
    pub const UNPIN: u8 = 0x02;
    pub const TRUNCATE_START: u8 = 0x03;
    pub const TRUNCATE_RETURNED: u8 = 0x04;
    pub const PUNCH_START: u8 = 0x05;
    pub const PUNCH_RETURNED: u8 = 0x06;
    pub const MUNMAP: u8 = 0x0a;
    pub const WRITE_THROUGH_PIN: u8 = 0x0b;
    pub const RUN_BEGIN: u8 = 0x0c;
    pub const RUN_END: u8 = 0x0d;
    pub const MARKER: u8 = 0x0e;
}

const PFN_BITS: u32 = 36;
const PFN_MASK: u64 = (1 << PFN_BITS) - 1;

/// One run's context.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The driver, when the kernel has it.
    pub dev: Option<&'a Dev>,
    /// Whether the fault injector answers (the driver bound DAXF0001).
    pub fault: bool,
    /// Global run number (the host's plan index).
    pub run: u64,
    /// Online CPUs; thread `t` runs on CPU `t % cpus`.
    pub cpus: usize,
    /// Baseline mode: random sleeps before every sync point instead of a schedule.
    pub sleeps: bool,
    /// `mount` arguments that bring the run's filesystem back after a scenario unmounted it:
    /// (type, device).
    pub mount: (&'a str, &'a str),
}

impl Ctx<'_> {
    /// Sends an event (no-op without the fault injector). Failures are reported, not fatal.
    pub fn event(&self, code: u8, thread: u8, pfn: u64, detail: u16) {
        let Some(dev) = self.dev.filter(|_| self.fault) else { return };
        let value = u64::from(code) << 56
            | u64::from(thread) << 48
            | (u64::from(detail) & 0xfff) << PFN_BITS
            | (pfn & PFN_MASK);
        if let Err(e) = dev.event(value) {
            note(self.run, &format!("EVENT {code:#x} failed: {}", ename(e)));
        }
    }

    /// Thread `thread` arrives at sync point `point` (held by the host until its schedule says go). In
    /// baseline mode it first sleeps a random 0-2 ms, as a sleep-based test would.
    pub fn sync(&self, thread: u8, point: u16) {
        if self.sleeps {
            let mut x =
                self.run.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(thread) << 8 ^ u64::from(point);
            x ^= x >> 31;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            std::thread::sleep(Duration::from_micros((x >> 33) % 2000));
        }
        let Some(dev) = self.dev.filter(|_| self.fault) else { return };
        match dev.sync(thread, point) {
            Ok(0 | 2) => {}
            Ok(1) => {
                note(self.run, &format!("thread {thread} point {point}: released by the host's hold bound"))
            }
            Ok(v) => note(self.run, &format!("thread {thread} point {point}: outcome {v}")),
            Err(e) => note(self.run, &format!("SYNC {thread}.{point} failed: {}", ename(e))),
        }
    }

    /// Tags the calling thread as scenario thread `thread` for the kernel hold points in `points` (a
    /// [`daxvmm_scenarios::kernel_point`] mask; 0 untags). No-op without the fault injector or points,
    /// and in baseline mode: a sleep-based test has no hold points, and even an unarmed one costs the
    /// thread a round trip to the host there, which would widen the very windows the baseline is
    /// measured on.
    pub fn tag(&self, thread: u8, points: u32) {
        if self.sleeps {
            return;
        }
        let Some(dev) = self.dev.filter(|_| self.fault) else { return };
        if let Err(e) = dev.tag(thread, points) {
            note(self.run, &format!("TAG {thread} {points:#x} failed: {}", ename(e)));
        }
    }

    /// Puts the calling thread on the CPU of scenario thread `thread`.
    pub fn place(&self, thread: u8) {
        let cpu = usize::from(thread) % self.cpus.max(1);
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it; sched_setaffinity reads
        // exactly size_of::<cpu_set_t>() bytes of it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                note(self.run, &format!("sched_setaffinity(cpu {cpu}): {}", std::io::Error::last_os_error()));
            }
        }
    }
}

// The `@@race` lines are this program's output protocol with the host (daxvmm test parses them).
#[allow(clippy::print_stdout)]
fn line(kind: &str, run: u64, text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "@@race {kind} run={run} {text}");
    let _ = out.flush();
}

/// Something worth knowing that is not a violation.
pub fn note(run: u64, text: &str) {
    line("note", run, text);
}

/// A violation the guest saw itself.
pub fn finding(run: u64, text: &str) {
    line("finding", run, text);
}

/// The run was not done, and why.
pub fn skip(run: u64, text: &str) {
    line("skip", run, text);
}

/// Run bracket lines.
pub fn bracket(kind: &str, run: u64, text: &str) {
    line(kind, run, text);
}
