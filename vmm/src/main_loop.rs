//! The main loop of a run: sleeps in epoll on the guest-event queue and the signalfd, and turns the
//! first terminal guest event, a termination signal or the timeout into an [`Outcome`].
//!
//! Signals and the deadline are checked before guest events on every wake-up, and one wake-up does a
//! bounded amount of work whatever the guest sent (the queue is bounded, marker logging is capped), so
//! no guest can postpone `--timeout` or Ctrl-C.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use daxvmm_devices::debug_port::MARKER_INIT_STARTED;
use daxvmm_devices::events::{EventQueue, GuestEvent, Pending};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

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

/// Waits for the run's end: the first terminal event in `queue`, a signal from `signals`, or
/// `deadline`.
pub fn wait(
    queue: &EventQueue,
    signals: &SignalFd,
    deadline: Deadline,
    started: Instant,
    progress: &mut dyn Progress,
) -> Result<Outcome, VmError> {
    let epoll = Epoll::new().map_err(|e| VmError::Host("creating the main loop's epoll", e))?;
    for fd in [queue.as_raw_fd(), signals.as_raw_fd()] {
        epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, fd as u64))
            .map_err(|e| VmError::Host("adding to the main loop's epoll", e))?;
    }
    let mut logged = 0u32;
    let mut init_seen = false;
    let mut deadline_at = deadline.at;
    let mut ready = [EpollEvent::default(); 2];
    loop {
        if let Some(sig) = signals.take() {
            return Ok(Outcome::Signal(sig));
        }
        let now = Instant::now();
        if deadline_at.is_some_and(|d| now >= d) {
            return Ok(Outcome::Timeout);
        }
        let pending = queue.take();
        log_markers(&pending, started, &mut logged);
        if !init_seen && pending.markers.contains(&MARKER_INIT_STARTED) {
            init_seen = true;
            log::info!("guest userspace init started {} ms after start", started.elapsed().as_millis());
            progress.init_started();
            if let Some(after) = deadline.after_init {
                let t = now + after;
                deadline_at = Some(deadline_at.map_or(t, |d| d.min(t)));
            }
        }
        if let Some(ev) = pending.terminal {
            return outcome(ev, pending.status);
        }
        let timeout_ms = match deadline_at {
            // Rounded up, so the loop never wakes just before the deadline and spins.
            Some(d) => {
                d.saturating_duration_since(now).as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
            None => -1,
        };
        match epoll.wait(timeout_ms, &mut ready) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(VmError::Host("waiting in the main loop", e)),
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
        wait(&queue, &SignalFd::new().unwrap(), deadline, start, &mut || {})
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
        assert_eq!(wait(&queue, &signals, deadline, start, &mut || inits += 1).unwrap(), Outcome::Timeout);
        assert_eq!(inits, 1);
        assert!(start.elapsed() >= Duration::from_millis(50) && start.elapsed() < Duration::from_secs(30));
        // No init marker: only the fixed deadline ends the run.
        let start = Instant::now();
        sink.send(GuestEvent::BootMarker(MARKER_INIT_STARTED + 1));
        let deadline =
            Deadline { at: Some(start + Duration::from_millis(80)), after_init: Some(Duration::ZERO) };
        assert_eq!(wait(&queue, &signals, deadline, start, &mut || {}).unwrap(), Outcome::Timeout);
        assert!(start.elapsed() >= Duration::from_millis(80));
        // The fixed deadline still wins when it comes first.
        let start = Instant::now();
        sink.send(GuestEvent::BootMarker(MARKER_INIT_STARTED));
        let deadline = Deadline { at: Some(start), after_init: Some(Duration::from_secs(60)) };
        assert_eq!(wait(&queue, &signals, deadline, start, &mut || {}).unwrap(), Outcome::Timeout);
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
        let r = wait(&queue, &SignalFd::new().unwrap(), deadline, start, &mut || {});
        let took = start.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent: u64 = flooders.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(r.unwrap(), Outcome::Timeout);
        assert!(sent > 1000, "the flood was real: {sent} events");
        // Unbounded work per wake-up would never return; the 5 s only absorbs a loaded machine.
        assert!(took < limit + Duration::from_secs(5), "{took:?} for a {limit:?} deadline");
    }
}
