//! The hang watchdog of the pinned races: once every releasing thread has dropped its reference and the
//! operation of thread 0 (truncate, punch, unlink, unmount) has started, that operation has a few
//! seconds to return. One that does not slept through its wake-up (the lost-wake mutants do this). The
//! watchdog reports it as a finding, then gives the wake-up back so the plan goes on: through the mutants
//! kernel's wake file when there is one, and with a signal (an interruptible wait returns EINTR). A task
//! that neither frees stays blocked, and the guest powers off: nothing after it could be trusted.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ctx::{finding, note};

/// How long the operation has after the last release and its own start.
pub const GRACE: Duration = Duration::from_secs(3);
/// The mutants' wake-up file (guest-kernel/patches/0008): a thread id written wakes that task.
pub const WAKE_FILE: &str = "/sys/module/dax_mutant/parameters/wake";

extern "C" fn on_usr1(_: libc::c_int) {}

/// What thread 0 and the releasing threads tell the watchdog.
#[derive(Debug, Default)]
pub struct Progress {
    /// Thread 0's kernel thread id once its operation starts; 0 before.
    tid: AtomicI32,
    /// Thread 0's voluntary context switches just before its operation (see [`Progress::wait_asleep`]).
    switches: AtomicU64,
    returned: AtomicBool,
    released: AtomicUsize,
}

impl Progress {
    /// Thread 0 is about to start its operation; installs the signal handler the watchdog may use.
    pub fn start(&self) {
        // SAFETY: a zeroed sigaction with a plain handler and no SA_RESTART, so a blocked syscall
        // returns EINTR; on_usr1 does nothing and is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        self.switches.store(voluntary_switches(tid).unwrap_or(0), Ordering::Relaxed);
        self.tid.store(tid, Ordering::Release);
    }

    /// Waits until thread 0 has gone to sleep inside its operation (its count of voluntary context
    /// switches, which the kernel bumps when the task leaves the CPU to sleep, passed the one before
    /// the operation), or its operation returned; at most `limit`. For a schedule that lets thread 0
    /// go from a sleep point before another thread acts: a hold point cannot say when the task is
    /// really asleep (it is let go just before schedule()), the kernel's own count can. `false` when
    /// it was not seen asleep in time.
    pub fn wait_asleep(&self, limit: Duration) -> bool {
        let t = Instant::now();
        loop {
            let tid = self.tid.load(Ordering::Acquire);
            let asleep = tid != 0
                && voluntary_switches(tid).is_some_and(|n| n > self.switches.load(Ordering::Relaxed));
            if asleep || self.returned.load(Ordering::Acquire) {
                return true;
            }
            if t.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends thread 0 the signal whose handler [`Progress::start`] installed (no SA_RESTART: an
    /// interruptible wait in its operation ends with EINTR), waiting up to `limit` for thread 0 to
    /// start. The errno when it cannot.
    pub fn interrupt(&self, limit: Duration) -> Result<(), i32> {
        let t = Instant::now();
        while self.tid.load(Ordering::Acquire) == 0 {
            if t.elapsed() >= limit {
                return Err(libc::ESRCH);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        signal(self.tid.load(Ordering::Acquire))
    }

    /// Thread 0's operation returned.
    pub fn returned(&self) {
        self.returned.store(true, Ordering::Release);
    }

    /// A releasing thread dropped its reference.
    pub fn released(&self) {
        self.released.fetch_add(1, Ordering::AcqRel);
    }

    /// Runs until thread 0's operation returns (or the guest is powered off). `releasers` threads
    /// release; `what` names the operation in findings.
    pub fn watch(&self, run: u64, releasers: usize, what: &str) {
        // Until the operation has started and every reference is gone, a slow one is not a hang.
        while self.tid.load(Ordering::Acquire) == 0 || self.released.load(Ordering::Acquire) < releasers {
            if self.returned.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.returned_within(GRACE) {
            return;
        }
        finding(
            run,
            &format!(
                "{what} had not returned {} s after the last reference to the page was released: it slept through its wake-up",
                GRACE.as_secs()
            ),
        );
        self.rescue(run, what);
    }

    /// Whether thread 0's operation returns within `limit`.
    fn returned_within(&self, limit: Duration) -> bool {
        let t = Instant::now();
        while !self.returned.load(Ordering::Acquire) && t.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.returned.load(Ordering::Acquire)
    }

    fn rescue(&self, run: u64, what: &str) {
        let tid = self.tid.load(Ordering::Acquire);
        let mut how = match std::fs::write(WAKE_FILE, tid.to_string()) {
            Ok(()) => "woken through the mutants' wake file".to_string(),
            Err(e) => format!("not woken (no wake file: {e})"),
        };
        if self.returned_within(GRACE) {
            note(run, &format!("{what} returned once {how}"));
            return;
        }
        let r = signal(tid);
        how.push_str(&format!(", then signalled ({})", if r.is_ok() { "sent" } else { "failed" }));
        if self.returned_within(GRACE) {
            note(run, &format!("{what} returned once {how}"));
            return;
        }
        finding(run, &format!("{what} is still blocked after it was {how}; powering the guest off"));
        // SAFETY: sync and reboot take no pointers; the guest cannot go on with a task stuck in the kernel.
        unsafe {
            libc::sync();
            libc::reboot(libc::RB_POWER_OFF);
        }
    }
}

/// Sends SIGUSR1 to our thread `tid` (thread 0, whose handler [`Progress::start`] installed).
fn signal(tid: i32) -> Result<(), i32> {
    // SAFETY: tgkill sends a signal to a thread of our own process; no memory is passed.
    match unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) } {
        0 => Ok(()),
        _ => Err(daxvmm_refcount_test::sys::errno()),
    }
}

/// `voluntary_ctxt_switches` of our thread `tid`, from /proc.
fn voluntary_switches(tid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:")?.trim().parse().ok())
}
