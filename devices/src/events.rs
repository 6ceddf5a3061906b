//! Events the guest causes that end or mark the run (power-off, reset, panic, exit status, boot markers).
//! Devices send them through an [`EventSink`]; the VMM's main loop takes them from the [`EventQueue`].
//!
//! The guest decides how often these are sent, so what they cost the VMM is bounded: the first terminal
//! event is kept and later ones are ignored, the exit status is one slot, and boot markers queue up to
//! [`MARKER_QUEUE`] with a count of the ones that did not fit. Sending never blocks on the main loop, and
//! the main loop's work per wake-up does not grow with how much the guest sent.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::bus::lock;

/// Boot markers kept until the main loop takes them.
pub const MARKER_QUEUE: usize = 64;

/// Something the guest did that the VMM must know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestEvent {
    /// ACPI S5: the guest powered off.
    PowerOff,
    /// The guest asked for a reset (ACPI reset register, i8042, or a triple fault).
    Reset,
    /// pvpanic reported a panic; the byte is what the guest wrote (bit 0 panicked, bit 1 crash loaded).
    Panic(u8),
    /// The guest's init recorded its exit status on the debug port.
    ExitStatus(u8),
    /// The guest wrote a progress code to the debug port.
    BootMarker(u8),
    /// A vCPU hit an error the VMM cannot continue from (already logged by the vCPU thread).
    VcpuFailed(u8),
    /// The host asked daxvmm to stop (SIGINT, SIGTERM, SIGHUP: the signal number).
    HostSignal(u8),
}

impl GuestEvent {
    /// Whether this event ends the run.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::PowerOff | Self::Reset | Self::Panic(_) | Self::VcpuFailed(_) | Self::HostSignal(_)
        )
    }
}

/// What the sinks have delivered and the main loop has not taken yet.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Boot markers in the order sent, at most [`MARKER_QUEUE`].
    pub markers: VecDeque<u8>,
    /// Markers that did not fit, since the last take.
    pub markers_dropped: u64,
    /// The last exit status sent before the run ended.
    pub status: Option<u8>,
    /// The first terminal event; it stays until the queue is dropped.
    pub terminal: Option<GuestEvent>,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// Written whenever something is delivered, so the main loop can sleep in epoll.
    wake: EventFd,
    /// Set by the first terminal event, or by the VMM ending the run.
    stopping: AtomicBool,
}

/// Where devices deliver [`GuestEvent`]s. It also remembers whether the run is ending, so vCPUs stop
/// entering a guest that has already powered off, reset or crashed.
#[derive(Debug, Clone)]
pub struct EventSink {
    shared: Arc<Shared>,
}

/// The main loop's side of the events: a file descriptor that becomes readable when something arrives,
/// and what arrived.
#[derive(Debug)]
pub struct EventQueue {
    shared: Arc<Shared>,
}

/// A connected sink and queue.
pub fn channel() -> std::io::Result<(EventSink, EventQueue)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        wake: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
        stopping: AtomicBool::new(false),
    });
    Ok((EventSink { shared: shared.clone() }, EventQueue { shared }))
}

impl EventSink {
    /// Delivers an event; never blocks for longer than the queue's lock is held by a take.
    pub fn send(&self, ev: GuestEvent) {
        {
            let mut p = lock(&self.shared.pending);
            if p.terminal.is_some() {
                log::debug!("guest event {ev:?} after the run ended");
                return;
            }
            match ev {
                GuestEvent::BootMarker(code) if p.markers.len() < MARKER_QUEUE => p.markers.push_back(code),
                GuestEvent::BootMarker(_) => p.markers_dropped += 1,
                GuestEvent::ExitStatus(s) => p.status = Some(s),
                terminal => {
                    p.terminal = Some(terminal);
                    self.shared.stopping.store(true, Ordering::SeqCst);
                }
            }
        }
        // A full counter (2^64 - 2 writes unread) only means a wake-up is already pending.
        let _ = self.shared.wake.write(1);
    }

    /// Ends the run from the VMM's side (a timeout, a signal): vCPUs stop quietly from now on.
    pub fn mark_stopping(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
    }

    /// True once the run is ending.
    pub fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }
}

impl EventQueue {
    /// Takes what arrived since the last call (the terminal event stays for later calls too).
    pub fn take(&self) -> Pending {
        // Read the counter first: anything sent after this read writes it again, so no wake-up is lost.
        let _ = self.shared.wake.read();
        let mut p = lock(&self.shared.pending);
        Pending {
            markers: std::mem::take(&mut p.markers),
            markers_dropped: std::mem::take(&mut p.markers_dropped),
            status: p.status,
            terminal: p.terminal,
        }
    }

    /// One event at a time in a fixed order (markers, then the status, then the terminal event), for
    /// tests that check what a device sent; `None` when nothing (more) is there.
    pub fn try_next(&self) -> Option<GuestEvent> {
        let mut p = lock(&self.shared.pending);
        if let Some(m) = p.markers.pop_front() {
            return Some(GuestEvent::BootMarker(m));
        }
        if let Some(s) = p.status.take() {
            return Some(GuestEvent::ExitStatus(s));
        }
        p.terminal.take()
    }

    /// A sink feeding this queue.
    pub fn sink(&self) -> EventSink {
        EventSink { shared: self.shared.clone() }
    }
}

impl AsRawFd for EventQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.shared.wake.as_raw_fd()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn terminal_events_set_stopping_for_all_clones() {
        let (a, q) = channel().unwrap();
        let b = a.clone();
        a.send(GuestEvent::BootMarker(1));
        a.send(GuestEvent::ExitStatus(3));
        assert!(!b.stopping());
        a.send(GuestEvent::Reset);
        assert!(b.stopping());
        let p = q.take();
        assert_eq!((p.markers.len(), p.status, p.terminal), (1, Some(3), Some(GuestEvent::Reset)));
    }

    #[test]
    fn the_first_terminal_event_wins_and_later_events_are_ignored() {
        let (s, q) = channel().unwrap();
        s.send(GuestEvent::ExitStatus(0));
        s.send(GuestEvent::PowerOff);
        s.send(GuestEvent::ExitStatus(9));
        s.send(GuestEvent::Panic(1));
        s.send(GuestEvent::BootMarker(2));
        let p = q.take();
        assert_eq!((p.status, p.terminal), (Some(0), Some(GuestEvent::PowerOff)));
        assert!(p.markers.is_empty());
        assert_eq!(q.take().terminal, Some(GuestEvent::PowerOff), "it stays");
    }

    #[test]
    fn a_marker_flood_is_bounded_and_counted_and_keeps_the_status() {
        let (s, q) = channel().unwrap();
        s.send(GuestEvent::ExitStatus(4));
        for i in 0..100_000u32 {
            s.send(GuestEvent::BootMarker(i as u8));
        }
        let p = q.take();
        assert_eq!(p.markers.len(), MARKER_QUEUE);
        assert_eq!(p.markers_dropped, 100_000 - MARKER_QUEUE as u64);
        assert_eq!(p.status, Some(4));
        assert_eq!(q.take().markers_dropped, 0, "counted once");
    }

    #[test]
    fn the_wake_fd_is_readable_after_a_send_and_not_after_a_take() {
        let (s, q) = channel().unwrap();
        let readable = |q: &EventQueue| {
            let mut pfd = libc::pollfd { fd: q.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, no wait.
            unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
        };
        assert!(!readable(&q));
        s.send(GuestEvent::BootMarker(1));
        assert!(readable(&q));
        q.take();
        assert!(!readable(&q));
    }
}
