//! The thread behind one virtio device: an `event-manager` loop whose subscriber is the device's queue
//! notification (an ioeventfd that KVM signals on the guest's QueueNotify write) and its stop eventfd;
//! each notification runs the device's serve step, which counts the requests it answered and how many
//! failed. The device's I/O stays off the main loop, so a long msync or disk write never delays a
//! Ctrl-C or the timeout there.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
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
        serve: impl FnMut(&Counts) + Send + 'static,
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
                let done = Rc::new(Cell::new(false));
                run(Queue { notified, stopped, serve, counts: mine, done, name: thread_name });
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

/// The worker's loop, until it is stopped.
fn run<F: FnMut(&Counts) + 'static>(queue: Queue<F>) {
    let name = queue.name.clone();
    let done = queue.done.clone();
    let mut manager: EventManager<Box<dyn MutEventSubscriber>> = match EventManager::new() {
        Ok(m) => m,
        Err(e) => {
            log::error!("{name}: cannot create its event loop: {e}; its requests will not be answered");
            return;
        }
    };
    manager.add_subscriber(Box::new(queue));
    while !done.get() {
        if let Err(e) = manager.run() {
            log::error!("{name}: its event loop failed: {e}; its requests will not be answered");
            return;
        }
    }
}

/// The device's queue notification and its stop, as one subscriber of the worker's loop.
struct Queue<F> {
    notified: EventFd,
    stopped: EventFd,
    serve: F,
    counts: Arc<Counts>,
    /// Set when the loop should end (stopped, or an fd could not be watched).
    done: Rc<Cell<bool>>,
    name: String,
}

impl<F: FnMut(&Counts)> MutEventSubscriber for Queue<F> {
    fn init(&mut self, ops: &mut EventOps) {
        for fd in [&self.notified, &self.stopped] {
            if let Err(e) = ops.add(Events::new(fd, EventSet::IN)) {
                log::error!(
                    "{}: cannot watch its eventfds: {e}; its requests will not be answered",
                    self.name
                );
                self.done.set(true);
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.stopped.as_raw_fd() {
            self.done.set(true);
            return;
        }
        // Non-blocking: a notification already consumed by an earlier round reads EAGAIN.
        let _ = self.notified.read();
        if !self.done.get() {
            (self.serve)(&self.counts);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Each notification runs the serve step on the worker's thread, under the real virtio filter (a
    /// call outside it would end this test process); the stop ends it, and join returns.
    #[test]
    fn notifications_run_the_serve_step_until_stopped() {
        let notify = EventFd::new(EFD_NONBLOCK).unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let mine = served.clone();
        let serve = move |c: &Counts| {
            mine.fetch_add(1, Ordering::SeqCst);
            c.add(2, 1);
        };
        let mut w = Worker::spawn(
            "t".into(),
            "x".into(),
            &Filters::new(crate::seccomp::SeccompMode::On).unwrap(),
            notify.try_clone().unwrap(),
            serve,
        )
        .unwrap();
        let wait_for = |n: u64| {
            let start = Instant::now();
            while served.load(Ordering::SeqCst) < n && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
            served.load(Ordering::SeqCst)
        };
        notify.write(1).unwrap();
        assert_eq!(wait_for(1), 1);
        notify.write(1).unwrap();
        assert_eq!(wait_for(2), 2);
        w.stop();
        w.join(0);
        assert!(w.thread.is_none());
        assert_eq!(
            (w.counts.requests.load(Ordering::SeqCst), w.counts.failed.load(Ordering::SeqCst)),
            (4, 2)
        );
        notify.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(served.load(Ordering::SeqCst), 2, "nothing is served after the stop");
    }
}
