//! COM1: vm-superio's 16550A model on the bus, its interrupt signalled through an eventfd (which the VMM
//! registers as a KVM irqfd), its output to any writer and its input from the host's stdin. When the
//! guest has read the last byte of the receive FIFO, the device writes its "room" eventfd, so whoever
//! feeds it input waits for that instead of polling a full FIFO.

use std::io::{self, Write};

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Raises the serial interrupt by writing to an eventfd.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Wraps an eventfd that KVM (or a test) watches.
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }
}

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Signals that the guest emptied the receive FIFO.
#[derive(Debug)]
pub struct RoomEvents(EventFd);

impl SerialEvents for RoomEvents {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        // A counter write fails only at its maximum, when a wake-up is pending anyway.
        let _ = self.0.write(1);
    }
}

/// A writer the serial device owns.
pub type SerialOut = Box<dyn Write + Send>;

/// The COM1 UART.
pub struct SerialDevice {
    uart: Serial<EventFdTrigger, RoomEvents, SerialOut>,
    room: EventFd,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART that interrupts through `irq` and writes the guest's output to `out`.
    pub fn new(irq: EventFd, out: SerialOut) -> io::Result<Self> {
        let room = EventFd::new(libc::EFD_NONBLOCK)?;
        let events = RoomEvents(room.try_clone()?);
        Ok(Self { uart: Serial::with_events(EventFdTrigger::new(irq), events, out), room })
    }

    /// Written each time the guest empties the receive FIFO: there is room for more input.
    pub fn room_evt(&self) -> &EventFd {
        &self.room
    }

    /// Queues host input for the guest; returns how many bytes fit in the receive FIFO (0 when full).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        // 16550 registers are bytes; a wider access reads the register at its start.
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *b = self.uart.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        if let Err(e) = self.uart.write(off, value) {
            // Losing console output is bad but must not stop the guest.
            log::warn!("serial: {e}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const IER: u64 = 1;
    const LSR: u64 = 5;

    #[test]
    fn output_reaches_the_writer() {
        let out = Shared::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = SerialDevice::new(irq, Box::new(out.clone())).unwrap();
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn input_sets_data_ready_and_interrupts() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let probe = irq.try_clone().unwrap();
        let mut s = SerialDevice::new(irq, Box::new(io::sink())).unwrap();
        // Enable the received-data interrupt as a driver would.
        s.write(IER, &[0x01]);
        assert_eq!(s.enqueue_input(b"ab"), 2);
        assert!(probe.read().unwrap() >= 1);
        let mut lsr = [0u8];
        s.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready bit");
        let mut c = [0u8];
        s.read(0, &mut c);
        assert_eq!(c[0], b'a');
        // A full FIFO takes nothing more instead of failing.
        let big = [b'x'; 128];
        let taken = s.enqueue_input(&big);
        assert!(taken > 0 && taken < big.len());
        assert_eq!(s.enqueue_input(&big), 0);
    }

    #[test]
    fn the_room_eventfd_fires_when_the_guest_empties_the_fifo() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = SerialDevice::new(irq, Box::new(io::sink())).unwrap();
        let room = s.room_evt().try_clone().unwrap();
        assert_eq!(s.enqueue_input(b"ab"), 2);
        let mut c = [0u8];
        s.read(0, &mut c);
        assert!(room.read().is_err(), "one byte is still in the FIFO");
        s.read(0, &mut c);
        assert_eq!((c[0], room.read().unwrap()), (b'b', 1), "the last byte read leaves room");
    }
}
