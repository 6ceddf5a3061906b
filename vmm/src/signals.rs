//! The process's signals. SIGINT, SIGTERM and SIGHUP end a run cleanly: they are blocked in every
//! thread (before any pmem file is touched) and read from a signalfd by the main loop, so pmem files get
//! flushed and the terminal restored before daxvmm exits. A real-time signal with an empty handler kicks
//! vCPU threads out of KVM_RUN when a run ends.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write into the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the termination signals in the calling thread and every thread it starts afterwards; one
/// that arrives stays pending until a [`SignalFd`] reads it.
pub fn block() {
    let set = signal_set();
    // SAFETY: changes only this thread's signal mask, with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// A non-blocking signalfd for the termination signals (which must be blocked, see [`block`]).
#[derive(Debug)]
pub struct SignalFd(OwnedFd);

impl SignalFd {
    /// Opens it; signals that arrived before are read from it too.
    pub fn new() -> io::Result<Self> {
        let set = signal_set();
        // SAFETY: a valid set; -1 asks for a new descriptor, which we own from here on.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The next pending termination signal, if any.
    pub fn take(&self) -> Option<u8> {
        // SAFETY: signalfd_siginfo is plain data; zero is a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into `info`, which is that large.
        let n = unsafe {
            libc::read(self.0.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), size)
        };
        (n == size as isize).then_some(info.ssi_signo as u8)
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn vcpu_kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: being interrupted is the point (KVM_RUN returns EINTR).
}

/// Installs the empty handler for [`vcpu_kick_signal`]; without one the signal would kill the process.
pub fn install_vcpu_kick_handler() -> io::Result<()> {
    register_signal_handler(vcpu_kick_signal(), kick_handler)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_sent_before_the_fd_exists_is_read_from_it() {
        // The mask is per thread: run on a thread of our own so the test harness is not affected.
        std::thread::spawn(|| {
            block();
            // SAFETY: sends SIGHUP to this thread only, where it is blocked.
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGHUP) };
            let fd = SignalFd::new().unwrap();
            assert_eq!(fd.take(), Some(libc::SIGHUP as u8));
            assert_eq!(fd.take(), None);
        })
        .join()
        .unwrap();
    }
}
