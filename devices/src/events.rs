//! Events the guest causes that end or mark the run (power-off, reset, panic, exit status, boot markers).
//! Devices send them; the VMM's main loop decides what they mean for the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

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

/// Where devices deliver [`GuestEvent`]s. It also remembers whether a terminal event was sent, so vCPUs
/// stop entering a guest that has already powered off, reset or crashed.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Sender<GuestEvent>,
    stopping: Arc<AtomicBool>,
}

impl EventSink {
    /// Wraps the sending half of the VMM's event channel.
    pub fn new(tx: Sender<GuestEvent>) -> Self {
        Self { tx, stopping: Arc::new(AtomicBool::new(false)) }
    }

    /// Delivers an event. The receiver is gone only while the VMM is exiting, when nobody cares.
    pub fn send(&self, ev: GuestEvent) {
        if ev.is_terminal() {
            self.stopping.store(true, Ordering::SeqCst);
        }
        if self.tx.send(ev).is_err() {
            log::debug!("guest event {ev:?} after the VMM stopped listening");
        }
    }

    /// Ends the run from the VMM's side (e.g. a timeout): vCPUs stop quietly from now on.
    pub fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// True once any clone of this sink delivered a terminal event.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::mpsc::channel;

    use super::*;

    #[test]
    fn terminal_events_set_stopping_for_all_clones() {
        let (tx, rx) = channel();
        let a = EventSink::new(tx);
        let b = a.clone();
        a.send(GuestEvent::BootMarker(1));
        a.send(GuestEvent::ExitStatus(3));
        assert!(!b.stopping());
        a.send(GuestEvent::Reset);
        assert!(b.stopping());
        assert_eq!(rx.try_iter().count(), 3);
    }
}
