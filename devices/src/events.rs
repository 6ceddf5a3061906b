//! Events the guest causes that end or mark the run (power-off, reset, panic, exit status, boot markers).
//! Devices send them; the VMM's main loop decides what they mean for the process.

use std::sync::mpsc::Sender;

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
}

/// Where devices deliver [`GuestEvent`]s.
#[derive(Debug, Clone)]
pub struct EventSink(Sender<GuestEvent>);

impl EventSink {
    /// Wraps the sending half of the VMM's event channel.
    pub fn new(tx: Sender<GuestEvent>) -> Self {
        Self(tx)
    }

    /// Delivers an event. The receiver is gone only while the VMM is exiting, when nobody cares.
    pub fn send(&self, ev: GuestEvent) {
        if self.0.send(ev).is_err() {
            log::debug!("guest event {ev:?} after the VMM stopped listening");
        }
    }
}
