//! Guest power control: the hardware-reduced ACPI sleep/reset registers the FADT points at, and the
//! i8042 command port whose 0xFE pulse resets the CPU (Linux's `reboot=k` path).

use crate::bus::BusDevice;
use crate::events::{EventSink, GuestEvent};
use crate::layout::{
    ACPI_RESET_OFFSET, ACPI_RESET_VALUE, ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_OFFSET,
    ACPI_SLEEP_STATUS_OFFSET,
};

/// SLP_EN in the hardware-reduced sleep control register (ACPI 6.5, 4.8.3.7).
const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7 << SLP_TYP_SHIFT;

/// The ACPI power-management block: sleep control, sleep status and reset registers, one byte each.
#[derive(Debug)]
pub struct AcpiPm {
    events: EventSink,
}

impl AcpiPm {
    /// A PM block that reports power-off and reset to `events`.
    pub fn new(events: EventSink) -> Self {
        Self { events }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Nothing is ever pending: sleep status reads as "not woken", control as idle.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let [value] = data else {
            log::warn!("ACPI PM block: ignoring {}-byte write at offset {offset}", data.len());
            return;
        };
        match offset as u16 {
            ACPI_SLEEP_CONTROL_OFFSET if value & SLP_EN != 0 => {
                let sleep_type = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
                if sleep_type == ACPI_S5_SLEEP_TYPE {
                    self.events.send(GuestEvent::PowerOff);
                } else {
                    log::warn!(
                        "guest asked for ACPI sleep type {sleep_type}; only S5 (power off) is supported"
                    );
                }
            }
            ACPI_RESET_OFFSET if *value == ACPI_RESET_VALUE => self.events.send(GuestEvent::Reset),
            ACPI_SLEEP_STATUS_OFFSET | ACPI_SLEEP_CONTROL_OFFSET | ACPI_RESET_OFFSET => {}
            _ => log::debug!("ACPI PM block: write {value:#x} to unknown offset {offset}"),
        }
    }
}

/// The command port of an i8042 keyboard controller, reduced to what guests use on a VM: the reset pulse.
#[derive(Debug)]
pub struct I8042 {
    events: EventSink,
}

/// The i8042 command that pulses the CPU reset line.
const I8042_CMD_RESET_CPU: u8 = 0xfe;

impl I8042 {
    /// A controller that reports the reset pulse to `events`.
    pub fn new(events: EventSink) -> Self {
        Self { events }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status: output buffer empty, input buffer empty, so drivers never wait on us.
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if data.first() == Some(&I8042_CMD_RESET_CPU) {
            self.events.send(GuestEvent::Reset);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_and_other_sleep_types_do_not() {
        let (sink, rx) = crate::events::channel().unwrap();
        let mut pm = AcpiPm::new(sink);
        // Exactly what Linux writes for S5 with SLP_TYP 5: (5 << 2) | SLP_EN.
        pm.write(0, &[0x34]);
        assert_eq!(rx.try_next(), Some(GuestEvent::PowerOff));
        // S3 request, SLP_EN clear, a wrong-sized write: nothing.
        pm.write(0, &[(3 << 2) | 0x20]);
        pm.write(0, &[0x14]);
        pm.write(0, &[0x34, 0]);
        assert!(rx.try_next().is_none());
    }

    #[test]
    fn reset_register_needs_the_fadt_value() {
        let (sink, rx) = crate::events::channel().unwrap();
        let mut pm = AcpiPm::new(sink);
        pm.write(2, &[2]);
        assert!(rx.try_next().is_none());
        pm.write(2, &[1]);
        assert_eq!(rx.try_next(), Some(GuestEvent::Reset));
        let mut b = [0xffu8; 1];
        pm.read(1, &mut b);
        assert_eq!(b, [0]);
    }

    #[test]
    fn i8042_reset_pulse() {
        let (sink, rx) = crate::events::channel().unwrap();
        let mut kbd = I8042::new(sink);
        kbd.write(0, &[0xd1]);
        assert!(rx.try_next().is_none());
        kbd.write(0, &[0xfe]);
        assert_eq!(rx.try_next(), Some(GuestEvent::Reset));
    }
}
