//! The pvpanic device (ACPI `_HID` QEMU0001, one I/O port): the guest kernel's panic notifier writes
//! here, which lets the VMM tell a crash from a clean power-off.

use crate::bus::BusDevice;
use crate::events::{EventSink, GuestEvent};

/// Bit 0: the guest panicked.
pub const PVPANIC_PANICKED: u8 = 1 << 0;
/// Bit 1: the guest loaded a crash kernel (kdump); reported but not fatal.
pub const PVPANIC_CRASH_LOADED: u8 = 1 << 1;
/// Bit 2: the guest shut down cleanly (newer Linux writes it on power-off).
pub const PVPANIC_SHUTDOWN: u8 = 1 << 2;

/// The pvpanic port.
#[derive(Debug)]
pub struct PvPanic {
    events: EventSink,
}

impl PvPanic {
    /// A pvpanic device reporting to `events`.
    pub fn new(events: EventSink) -> Self {
        Self { events }
    }
}

impl BusDevice for PvPanic {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // The guest reads the capabilities it may use.
        let caps = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED | PVPANIC_SHUTDOWN;
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = caps;
        }
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        if value & (PVPANIC_PANICKED | PVPANIC_CRASH_LOADED) != 0 {
            self.events.send(GuestEvent::Panic(value));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reports_panic_but_not_shutdown() {
        let (sink, rx) = crate::events::channel().unwrap();
        let mut p = PvPanic::new(sink);
        let mut caps = [0u8; 1];
        p.read(0, &mut caps);
        assert_eq!(caps[0], 0b111);
        p.write(0, &[PVPANIC_SHUTDOWN]);
        p.write(0, &[]);
        assert!(rx.try_next().is_none());
        p.write(0, &[PVPANIC_PANICKED]);
        assert_eq!(rx.try_next(), Some(GuestEvent::Panic(1)));
    }
}
