//! SIGINT, SIGTERM and SIGHUP end a run cleanly: they are blocked in every thread and taken by one
//! thread with sigwait, which reports them like any other run-ending event, so pmem files get flushed
//! and the terminal restored before daxvmm exits.

use daxvmm_devices::events::{EventSink, GuestEvent};

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

/// Blocks the termination signals in the calling thread and every thread it starts afterwards.
pub fn block() {
    let set = signal_set();
    // SAFETY: changes only this thread's signal mask, with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Starts the thread that turns a termination signal into [`GuestEvent::HostSignal`].
pub fn spawn_waiter(sink: EventSink) -> std::io::Result<()> {
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let set = signal_set();
        let mut sig: libc::c_int = 0;
        // SAFETY: the set is valid and `sig` is writable; the signals are blocked in all threads, so
        // sigwait is the only place they are delivered.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            sink.send(GuestEvent::HostSignal(sig as u8));
        }
    })?;
    Ok(())
}
