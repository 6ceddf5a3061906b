//! The main loop of a run: one [`EventManager`] whose subscribers are the guest-event queue, the
//! signalfd, the deadline's timerfd and, for an interactive run, host stdin (crate::console); it turns
//! the first terminal guest event, a termination signal or the timeout into an [`Outcome`].
//!
//! Each subscriber only records what it saw; after every wake-up the loop decides, signals first, then
//! the deadline, then guest events, so a guest that ends itself in the same instant cannot hide a
//! Ctrl-C or a timeout. One wake-up does a bounded amount of work whatever the guest sent (the queue is
//! bounded, marker logging is capped), so no guest can postpone `--timeout` or Ctrl-C.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use daxvmm_devices::debug_port::MARKER_INIT_STARTED;
use daxvmm_devices::events::{EventQueue, GuestEvent, Pending};
use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::timerfd::TimerFd;

use crate::signals::SignalFd;
use crate::vm::{Outcome, VmError};

/// Boot markers logged at info level per run; the rest go to the debug log.
const MARKERS_LOGGED: u32 = 16;

/// What the loop reports as the run goes.
pub trait Progress {
    /// The guest's init started (the first [`MARKER_INIT_STARTED`]).
    fn init_started(&mut self);
}

impl<F: FnMut()> Progress for F {
    fn init_started(&mut self) {
        self()
    }
}

/// When a run times out: at a fixed instant (`--timeout`, counted from the start) and a while after the
/// guest's init started (`--timeout-after-init`, so a slow boot does not eat the guest's own time),
/// whichever comes first. Neither: never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadline {
    /// The fixed instant.
    pub at: Option<Instant>,
    /// How long after init started.
    pub after_init: Option<Duration>,
}

/// What the subscribers saw so far.
#[derive(Debug, Default)]
struct Seen {
    signal: Option<u8>,
    timed_out: bool,
    terminal: Option<(GuestEvent, Option<u8>)>,
    /// The guest's init started in the last wake-up (the loop reports it once, then clears it).
    init_started: bool,
    /// A subscriber could not do its job (its error ends the run).
    failed: Option<VmError>,
}

type Shared = Rc<RefCell<Seen>>;

/// The run's deadline on a timerfd: armed for `--timeout` at the start and moved earlier when the
/// guest's init starts and `--timeout-after-init` says so.
struct DeadlineTimer {
    timer: TimerFd,
    at: Option<Instant>,
    after_init: Option<Duration>,
    seen: Shared,
}

impl DeadlineTimer {
    /// Arms the timer for `at` (or now, if `at` has passed: a zero timerfd would be disarmed).
    fn arm(&mut self, at: Instant) {
        self.at = Some(at);
        let left = at.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1));
        if let Err(e) = self.timer.reset(left, None) {
            self.seen.borrow_mut().failed = Some(VmError::Host("arming the deadline timer", e.into()));
        }
    }

    /// The guest's init started: the time after init counts from now, if that comes first.
    fn init_started(&mut self) {
        if let Some(after) = self.after_init {
            let t = Instant::now() + after;
            self.arm(self.at.map_or(t, |d| d.min(t)));
        }
    }
}

impl MutEventSubscriber for DeadlineTimer {
    fn init(&mut self, ops: &mut EventOps) {
        add(ops, Events::new(&self.timer, EventSet::IN), &self.seen, "the deadline timer");
        if let Some(at) = self.at {
            self.arm(at);
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        // Readable only once it expired; reading clears it.
        let _ = self.timer.wait();
        self.seen.borrow_mut().timed_out = true;
    }
}

/// The termination signals (SIGINT, SIGTERM, SIGHUP).
struct Signals<'a> {
    fd: &'a SignalFd,
    seen: Shared,
}

impl MutEventSubscriber for Signals<'_> {
    fn init(&mut self, ops: &mut EventOps) {
        add(ops, Events::new(self.fd, EventSet::IN), &self.seen, "the signalfd");
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        if let Some(sig) = self.fd.take() {
            self.seen.borrow_mut().signal.get_or_insert(sig);
        }
    }
}

/// What the devices sent: boot markers (logged), the exit status and the terminal event.
struct GuestEvents<'a> {
    queue: &'a EventQueue,
    seen: Shared,
    deadline: Rc<RefCell<DeadlineTimer>>,
    started: Instant,
    logged: u32,
    init_seen: bool,
}

impl MutEventSubscriber for GuestEvents<'_> {
    fn init(&mut self, ops: &mut EventOps) {
        add(ops, Events::new(self.queue, EventSet::IN), &self.seen, "the guest-event queue");
        // Events sent before the loop started have already written the queue's eventfd, so the first
        // wake-up takes them.
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let pending = self.queue.take();
        log_markers(&pending, self.started, &mut self.logged);
        if !self.init_seen && pending.markers.contains(&MARKER_INIT_STARTED) {
            self.init_seen = true;
            log::info!("guest userspace init started {} ms after start", self.started.elapsed().as_millis());
            self.deadline.borrow_mut().init_started();
            self.seen.borrow_mut().init_started = true;
        }
        if let Some(ev) = pending.terminal {
            self.seen.borrow_mut().terminal.get_or_insert((ev, pending.status));
        }
    }
}

/// Registers `events`, or records why not.
fn add(ops: &mut EventOps, events: Events, seen: &Shared, what: &'static str) {
    if let Err(e) = ops.add(events) {
        let err = std::io::Error::from_raw_os_error(e_errno(&e));
        seen.borrow_mut().failed.get_or_insert(VmError::Host(what, err));
    }
}

fn e_errno(e: &event_manager::Error) -> i32 {
    match e {
        event_manager::Error::Epoll(errno) => errno.errno(),
        _ => libc::EINVAL,
    }
}

/// Waits for the run's end: the first terminal event in `queue`, a signal from `signals`, or
/// `deadline`. `extra` are more subscribers for the same loop (host stdin for an interactive run);
/// they are dropped when the run ends.
pub fn wait<'a>(
    queue: &'a EventQueue,
    signals: &'a SignalFd,
    deadline: Deadline,
    started: Instant,
    progress: &mut dyn Progress,
    extra: Vec<Box<dyn MutEventSubscriber + 'a>>,
) -> Result<Outcome, VmError> {
    let seen = Shared::default();
    let mut manager: EventManager<Box<dyn MutEventSubscriber + 'a>> = EventManager::new().map_err(|e| {
        VmError::Host("creating the main loop", std::io::Error::from_raw_os_error(e_errno(&e)))
    })?;
    let timer = TimerFd::new().map_err(|e| VmError::Host("creating the deadline timer", e.into()))?;
    let timer = Rc::new(RefCell::new(DeadlineTimer {
        timer,
        at: deadline.at,
        after_init: deadline.after_init,
        seen: seen.clone(),
    }));
    manager.add_subscriber(Box::new(Signals { fd: signals, seen: seen.clone() }));
    manager.add_subscriber(Box::new(timer.clone()));
    manager.add_subscriber(Box::new(GuestEvents {
        queue,
        seen: seen.clone(),
        deadline: timer,
        started,
        logged: 0,
        init_seen: false,
    }));
    for s in extra {
        manager.add_subscriber(s);
    }
    // A signal that came before the loop existed is already pending on the signalfd; the first
    // wake-up sees it, as it sees events already queued.
    loop {
        {
            let mut s = seen.borrow_mut();
            if let Some(e) = s.failed.take() {
                return Err(e);
            }
            if let Some(sig) = s.signal {
                return Ok(Outcome::Signal(sig));
            }
            if s.timed_out {
                return Ok(Outcome::Timeout);
            }
            if let Some((ev, status)) = s.terminal {
                return outcome(ev, status);
            }
            if std::mem::take(&mut s.init_started) {
                drop(s);
                progress.init_started();
            }
        }
        match manager.run() {
            Ok(_) => {}
            Err(event_manager::Error::Epoll(e)) if e.errno() == libc::EINTR => {}
            Err(e) => {
                let err = std::io::Error::from_raw_os_error(e_errno(&e));
                return Err(VmError::Host("waiting in the main loop", err));
            }
        }
    }
}

fn outcome(ev: GuestEvent, status: Option<u8>) -> Result<Outcome, VmError> {
    Ok(match ev {
        GuestEvent::PowerOff => match status {
            Some(s) if s != 0 => Outcome::GuestFailed(s),
            _ => Outcome::PowerOff,
        },
        GuestEvent::Reset => Outcome::Reset,
        GuestEvent::Panic(v) => Outcome::Panic(v),
        GuestEvent::HostSignal(sig) => Outcome::Signal(sig),
        GuestEvent::VcpuFailed(cpu) => return Err(VmError::VcpuFailed(cpu)),
        // Not terminal; EventSink never stores them as such.
        GuestEvent::ExitStatus(_) | GuestEvent::BootMarker(_) => Outcome::PowerOff,
    })
}

fn log_markers(p: &Pending, started: Instant, logged: &mut u32) {
    for &code in &p.markers {
        if code == MARKER_INIT_STARTED {
            continue;
        }
        let at = started.elapsed().as_millis();
        if *logged < MARKERS_LOGGED {
            *logged += 1;
            log::info!("guest boot marker {code:#04x} at {at} ms");
            if *logged == MARKERS_LOGGED {
                log::info!("further guest boot markers go to the debug log");
            }
        } else {
            log::debug!("guest boot marker {code:#04x} at {at} ms");
        }
    }
    if p.markers_dropped > 0 {
        log::debug!("{} guest boot markers dropped (queue full)", p.markers_dropped);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use daxvmm_devices::events::{channel, EventSink};

    use super::*;

    fn run(events: &[GuestEvent], timeout: Option<Duration>) -> Result<Outcome, VmError> {
        let (sink, queue) = channel().unwrap();
        for e in events {
            sink.send(*e);
        }
        let start = Instant::now();
        let deadline = Deadline { at: timeout.map(|t| start + t), after_init: None };
        wait(&queue, &SignalFd::new().unwrap(), deadline, start, &mut || {}, Vec::new())
    }

    #[test]
    fn status_then_poweroff() {
        let t = Some(Duration::from_secs(5));
        let cases = [
            (vec![GuestEvent::BootMarker(1), GuestEvent::PowerOff], Outcome::PowerOff),
            (vec![GuestEvent::ExitStatus(0), GuestEvent::PowerOff], Outcome::PowerOff),
            (vec![GuestEvent::ExitStatus(7), GuestEvent::PowerOff], Outcome::GuestFailed(7)),
            (vec![GuestEvent::Panic(1), GuestEvent::PowerOff], Outcome::Panic(1)),
            (vec![GuestEvent::Reset], Outcome::Reset),
            (vec![GuestEvent::HostSignal(15)], Outcome::Signal(15)),
        ];
        for (events, want) in cases {
            assert_eq!(run(&events, t).unwrap(), want, "{events:?}");
        }
        assert!(matches!(run(&[GuestEvent::VcpuFailed(1)], t), Err(VmError::VcpuFailed(1))));
    }

    /// A subscriber of the same loop (as host stdin is) is dispatched while the run waits.
    #[test]
    fn extra_subscribers_share_the_loop() {
        struct PowerOffOn(vmm_sys_util::eventfd::EventFd, EventSink);
        impl MutEventSubscriber for PowerOffOn {
            fn init(&mut self, ops: &mut EventOps) {
                ops.add(Events::new(&self.0, EventSet::IN)).unwrap();
            }
            fn process(&mut self, _: Events, _: &mut EventOps) {
                let _ = self.0.read();
                self.1.send(GuestEvent::PowerOff);
            }
        }
        let (sink, queue) = channel().unwrap();
        let evt = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let poke = evt.try_clone().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            poke.write(1).unwrap();
        });
        let start = Instant::now();
        let deadline = Deadline { at: Some(start + Duration::from_secs(30)), after_init: None };
        let extra: Vec<Box<dyn MutEventSubscriber>> = vec![Box::new(PowerOffOn(evt, sink))];
        let r = wait(&queue, &SignalFd::new().unwrap(), deadline, start, &mut || {}, extra);
        t.join().unwrap();
        assert_eq!(r.unwrap(), Outcome::PowerOff);
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn timeout_expires() {
        let start = Instant::now();
        assert_eq!(
            run(&[GuestEvent::BootMarker(1)], Some(Duration::from_millis(50))).unwrap(),
            Outcome::Timeout
        );
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn the_time_after_init_counts_from_the_init_marker() {
        let (sink, queue) = channel().unwrap();
        let signals = SignalFd::new().unwrap();
        let start = Instant::now();
        let long = Some(start + Duration::from_secs(60));
        // The guest's init started: 50 ms from then, well before the fixed deadline.
        sink.send(GuestEvent::BootMarker(MARKER_INIT_STARTED));
        let mut inits = 0;
        let deadline = Deadline { at: long, after_init: Some(Duration::from_millis(50)) };
        assert_eq!(
            wait(&queue, &signals, deadline, start, &mut || inits += 1, Vec::new()).unwrap(),
            Outcome::Timeout
        );
        assert_eq!(inits, 1);
        assert!(start.elapsed() >= Duration::from_millis(50) && start.elapsed() < Duration::from_secs(30));
        // No init marker: only the fixed deadline ends the run.
        let start = Instant::now();
        sink.send(GuestEvent::BootMarker(MARKER_INIT_STARTED + 1));
        let deadline =
            Deadline { at: Some(start + Duration::from_millis(80)), after_init: Some(Duration::ZERO) };
        assert_eq!(
            wait(&queue, &signals, deadline, start, &mut || {}, Vec::new()).unwrap(),
            Outcome::Timeout
        );
        assert!(start.elapsed() >= Duration::from_millis(80));
        // The fixed deadline still wins when it comes first.
        let start = Instant::now();
        sink.send(GuestEvent::BootMarker(MARKER_INIT_STARTED));
        let deadline = Deadline { at: Some(start), after_init: Some(Duration::from_secs(60)) };
        assert_eq!(
            wait(&queue, &signals, deadline, start, &mut || {}, Vec::new()).unwrap(),
            Outcome::Timeout
        );
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_guest_flooding_events_does_not_postpone_the_deadline() {
        let (sink, queue) = channel().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flooders: Vec<_> = (0..2)
            .map(|_| {
                let (sink, stop): (EventSink, _) = (sink.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        sink.send(GuestEvent::BootMarker((n % 250) as u8 + 2));
                        sink.send(GuestEvent::ExitStatus(n as u8));
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let start = Instant::now();
        let limit = Duration::from_millis(200);
        let deadline = Deadline { at: Some(start + limit), after_init: None };
        let r = wait(&queue, &SignalFd::new().unwrap(), deadline, start, &mut || {}, Vec::new());
        let took = start.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent: u64 = flooders.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(r.unwrap(), Outcome::Timeout);
        assert!(sent > 1000, "the flood was real: {sent} events");
        // Unbounded work per wake-up would never return; the 5 s only absorbs a loaded machine.
        assert!(took < limit + Duration::from_secs(5), "{took:?} for a {limit:?} deadline");
    }
}
