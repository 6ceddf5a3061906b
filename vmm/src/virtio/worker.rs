//! The thread behind one virtio device: it sleeps until the device's queue notification (an ioeventfd
//! that KVM signals on the guest's QueueNotify write) or its stop eventfd, and on each notification runs
//! the device's serve step, which counts the requests it answered and how many failed.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::VirtioError;
use crate::seccomp::{Filters, ThreadKind};

/// A device's requests so far, and how many of them failed (the guest was told so).
#[derive(Debug, Default)]
pub(super) struct Counts {
    requests: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    /// Adds `n` answered requests, `failed` of them with an error.
    pub(super) fn add(&self, n: usize, failed: usize) {
        self.requests.fetch_add(n as u64, Ordering::Relaxed);
        self.failed.fetch_add(failed as u64, Ordering::Relaxed);
    }
}

/// A running worker.
#[derive(Debug)]
pub(super) struct Worker {
    name: String,
    /// What one request is, for the summary ("flush requests (msync of its file)").
    what: String,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
}

impl Worker {
    /// Starts thread `name` under the virtio seccomp filter; it calls `serve` once per wake-up by
    /// `notified` until [`Worker::stop`].
    pub(super) fn spawn(
        name: String,
        what: String,
        filters: &Filters,
        notified: EventFd,
        mut serve: impl FnMut(&Counts) + Send + 'static,
    ) -> Result<Self, VirtioError> {
        let host = |what: &'static str| {
            let name = name.clone();
            move |e| VirtioError::Host(name, what, e)
        };
        let stop = EventFd::new(EFD_NONBLOCK).map_err(host("creating its stop eventfd"))?;
        let stopped = stop.try_clone().map_err(host("cloning its stop eventfd"))?;
        let counts = Arc::new(Counts::default());
        let (mine, filters, thread_name) = (counts.clone(), filters.clone(), name.clone());
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Err(e) = filters.install(ThreadKind::Virtio) {
                    log::error!("{thread_name}: {e}; its requests will not be answered");
                    return;
                }
                while wait(&thread_name, &notified, &stopped) {
                    serve(&mine);
                }
            })
            .map_err(|e| VirtioError::Thread(name.clone(), e))?;
        Ok(Worker { name, what, stop, thread: Some(thread), counts })
    }

    /// Tells the thread to stop; [`Worker::join`] waits for it.
    pub(super) fn stop(&self) {
        if let Err(e) = self.stop.write(1) {
            log::error!("{}: cannot stop its thread: {e}", self.name);
        }
    }

    /// Waits for the stopped thread and logs what the device served, and how many of its queue
    /// notifications were VM exits (`exits`: the ioeventfd takes the others).
    pub(super) fn join(&mut self, exits: u64) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let (n, failed) =
            (self.counts.requests.load(Ordering::Relaxed), self.counts.failed.load(Ordering::Relaxed));
        log::info!(
            "{}: the guest sent {n} {}, {failed} failed; {exits} queue notifications were VM exits",
            self.name,
            self.what
        );
    }
}

/// Sleeps until `notified` (true, the notification consumed) or `stop` (false) fires.
fn wait(name: &str, notified: &EventFd, stop: &EventFd) -> bool {
    loop {
        let mut fds = [
            libc::pollfd { fd: notified.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: fds is a live array of two pollfds; poll writes only their revents.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("{name}: poll failed: {e}; its requests will not be answered");
            return false;
        }
        if fds[1].revents != 0 {
            return false;
        }
        // Non-blocking: a notification already consumed by an earlier round reads EAGAIN.
        let _ = notified.read();
        return true;
    }
}
