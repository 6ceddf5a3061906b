//! The debug port: guest userspace writes boot progress markers (+0) and its exit status (+1) here, so
//! the VMM can time the boot and hand the guest's result to whoever started it.

use crate::bus::BusDevice;
use crate::events::{EventSink, GuestEvent};

/// Marker code for "guest userspace init started".
pub const MARKER_INIT_STARTED: u8 = 0x01;

/// The two-byte debug port block.
#[derive(Debug)]
pub struct DebugPort {
    events: EventSink,
}

impl DebugPort {
    /// A debug port reporting to `events`.
    pub fn new(events: EventSink) -> Self {
        Self { events }
    }
}

impl BusDevice for DebugPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            0 => self.events.send(GuestEvent::BootMarker(value)),
            1 => self.events.send(GuestEvent::ExitStatus(value)),
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn marker_and_status() {
        let (sink, rx) = crate::events::channel().unwrap();
        let mut d = DebugPort::new(sink);
        d.write(0, &[MARKER_INIT_STARTED]);
        d.write(1, &[7]);
        d.write(1, &[]);
        assert_eq!(rx.try_next(), Some(GuestEvent::BootMarker(1)));
        assert_eq!(rx.try_next(), Some(GuestEvent::ExitStatus(7)));
        assert!(rx.try_next().is_none());
    }
}
