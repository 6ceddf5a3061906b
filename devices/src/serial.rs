//! COM1: vm-superio's 16550A model on the bus, its interrupt signalled through an eventfd (which the VMM
//! registers as a KVM irqfd), its output to any writer and its input from the host's stdin.

use std::io::{self, Write};

use vm_superio::serial::NoEvents;
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

/// A writer the serial device owns.
pub type SerialOut = Box<dyn Write + Send>;

/// The COM1 UART.
pub struct SerialDevice {
    uart: Serial<EventFdTrigger, NoEvents, SerialOut>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART that interrupts through `irq` and writes the guest's output to `out`.
    pub fn new(irq: EventFd, out: SerialOut) -> Self {
        Self { uart: Serial::new(EventFdTrigger::new(irq), out) }
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
        let mut s = SerialDevice::new(irq, Box::new(out.clone()));
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn input_sets_data_ready_and_interrupts() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let probe = irq.try_clone().unwrap();
        let mut s = SerialDevice::new(irq, Box::new(io::sink()));
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
}
