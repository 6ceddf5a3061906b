//! Arbitrary guest port I/O against the port devices wired as daxvmm wires them (COM1, pvpanic, the ACPI
//! PM block, the i8042 command port, the debug port, all on one port bus), plus host input to the UART.
//! It must never panic; the bus must claim exactly the accesses that lie inside one device window and
//! leave an unclaimed read's buffer alone; a claimed read fills the whole buffer (zeros past the one
//! register byte a device answers); and the events the guest causes (power-off, reset, panic, exit
//! status, boot markers) must be exactly those of a model of the devices and the event queue.
#![no_main]

use std::io;
use std::sync::{Arc, Mutex};

use daxvmm_devices::bus::{lock, Bus, SharedDevice};
use daxvmm_devices::debug_port::DebugPort;
use daxvmm_devices::events::{channel, EventSink, GuestEvent, Pending, MARKER_QUEUE};
use daxvmm_devices::layout::{
    ACPI_PM_LEN, ACPI_PM_PORT, COM1_LEN, COM1_PORT, DEBUG_PORT, DEBUG_PORT_LEN, I8042_COMMAND_PORT,
    PVPANIC_PORT,
};
use daxvmm_devices::power::{AcpiPm, I8042};
use daxvmm_devices::pvpanic::PvPanic;
use daxvmm_devices::serial::SerialDevice;
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::EventFd;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dev {
    Com1,
    PvPanic,
    AcpiPm,
    I8042,
    Debug,
}

/// (device, base port, window length), as `vmm/src/machine.rs` wires them.
const WINDOWS: [(Dev, u16, u16); 5] = [
    (Dev::Com1, COM1_PORT, COM1_LEN),
    (Dev::PvPanic, PVPANIC_PORT, 1),
    (Dev::AcpiPm, ACPI_PM_PORT, ACPI_PM_LEN),
    (Dev::I8042, I8042_COMMAND_PORT, 1),
    (Dev::Debug, DEBUG_PORT, DEBUG_PORT_LEN),
];

/// What the event queue should hold: `Pending` as the sinks fill it.
#[derive(Default)]
struct Model {
    pending: Pending,
}

impl Model {
    fn send(&mut self, ev: GuestEvent) {
        let p = &mut self.pending;
        if p.terminal.is_some() {
            return;
        }
        match ev {
            GuestEvent::BootMarker(c) if p.markers.len() < MARKER_QUEUE => p.markers.push_back(c),
            GuestEvent::BootMarker(_) => p.markers_dropped += 1,
            GuestEvent::ExitStatus(s) => p.status = Some(s),
            t => p.terminal = Some(t),
        }
    }

    fn take(&mut self) -> Pending {
        let p = &mut self.pending;
        Pending {
            markers: std::mem::take(&mut p.markers),
            markers_dropped: std::mem::take(&mut p.markers_dropped),
            status: p.status,
            terminal: p.terminal,
        }
    }

    /// The event a claimed write of `data` at `offset` into `dev` causes.
    fn write(&mut self, dev: Dev, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match dev {
            Dev::Com1 => {}
            Dev::PvPanic if v & 0b11 != 0 => self.send(GuestEvent::Panic(v)),
            Dev::PvPanic => {}
            // Only one-byte writes count; SLP_EN with SLP_TYP 5 is S5, value 1 at +2 the reset.
            Dev::AcpiPm if data.len() == 1 && offset == 0 && v & 0x20 != 0 && (v >> 2) & 7 == 5 => {
                self.send(GuestEvent::PowerOff)
            }
            Dev::AcpiPm if data.len() == 1 && offset == 2 && v == 1 => self.send(GuestEvent::Reset),
            Dev::AcpiPm => {}
            Dev::I8042 if v == 0xfe => self.send(GuestEvent::Reset),
            Dev::I8042 => {}
            Dev::Debug if offset == 0 => self.send(GuestEvent::BootMarker(v)),
            Dev::Debug if offset == 1 => self.send(GuestEvent::ExitStatus(v)),
            Dev::Debug => {}
        }
    }
}

/// The device window holding all of `port..port+size`, and the offset into it.
fn claimed(port: u64, size: usize) -> Option<(Dev, u64)> {
    WINDOWS.iter().find_map(|&(dev, base, len)| {
        let (base, len) = (u64::from(base), u64::from(len));
        (port >= base && port - base + size as u64 <= len).then(|| (dev, port - base))
    })
}

struct Machine {
    bus: Bus,
    serial: Arc<Mutex<SerialDevice>>,
    sink: EventSink,
    queue: daxvmm_devices::events::EventQueue,
}

fn machine() -> Option<Machine> {
    let (sink, queue) = channel().ok()?;
    let irq = EventFd::new(libc::EFD_NONBLOCK).ok()?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(irq, Box::new(io::sink())).ok()?));
    let mut bus = Bus::new();
    for (dev, base, len) in WINDOWS {
        let d: SharedDevice = match dev {
            Dev::Com1 => serial.clone(),
            Dev::PvPanic => Arc::new(Mutex::new(PvPanic::new(sink.clone()))),
            Dev::AcpiPm => Arc::new(Mutex::new(AcpiPm::new(sink.clone()))),
            Dev::I8042 => Arc::new(Mutex::new(I8042::new(sink.clone()))),
            Dev::Debug => Arc::new(Mutex::new(DebugPort::new(sink.clone()))),
        };
        bus.insert(d, u64::from(base), u64::from(len)).expect("the machine's port windows do not overlap");
    }
    Some(Machine { bus, serial, sink, queue })
}

fn check(m: &Machine, model: &mut Model) {
    let got = m.queue.take();
    let want = model.take();
    assert_eq!(got, want, "the event queue differs from the model");
    assert_eq!(m.sink.stopping(), want.terminal.is_some(), "stopping() is not 'a terminal event came'");
}

fuzz_target!(|data: &[u8]| {
    let Some(m) = machine() else { return };
    let mut model = Model::default();
    let mut ops = data;
    // Each op: kind (bits 0-2: target, bit 3: write, bits 4-7: size 0..=8), then two bytes (offset into
    // the target, or a raw port), then the bytes written.
    while let [kind, a, b, rest @ ..] = ops {
        ops = rest;
        let size = usize::from(kind >> 4) % 9;
        let write = kind & 8 != 0;
        let port = match kind & 7 {
            t @ 0..=4 => u64::from(WINDOWS[usize::from(t)].1) + u64::from(*a % 16),
            5 => u64::from(u16::from_le_bytes([*a, *b])),
            6 => {
                // Host input to the UART.
                let n = usize::from(*a % 32).min(ops.len());
                let (bytes, rest) = ops.split_at(n);
                ops = rest;
                let taken = lock(&m.serial).enqueue_input(bytes);
                assert!(taken <= bytes.len(), "the UART took more input than it was given");
                continue;
            }
            _ => {
                check(&m, &mut model);
                continue;
            }
        };
        if write {
            let n = size.min(ops.len());
            let (bytes, rest) = ops.split_at(n);
            ops = rest;
            let expect = claimed(port, n);
            assert_eq!(
                m.bus.write(port, bytes),
                expect.is_some(),
                "write claim of {n} bytes at port {port:#x}"
            );
            if let Some((dev, off)) = expect {
                model.write(dev, off, bytes);
            }
        } else {
            let mut buf = [0xa5u8; 8];
            let buf = &mut buf[..size];
            let expect = claimed(port, size);
            let hit = m.bus.read(port, buf);
            assert_eq!(hit, expect.is_some(), "read claim of {size} bytes at port {port:#x}");
            match expect {
                None => assert!(buf.iter().all(|&b| b == 0xa5), "an unclaimed read changed its buffer"),
                Some((Dev::Com1, _)) => {
                    assert!(buf.iter().skip(1).all(|&b| b == 0), "COM1 read: bytes past the register")
                }
                Some((Dev::PvPanic, _)) => assert!(buf == [0b111] || buf.is_empty(), "pvpanic caps {buf:?}"),
                Some(_) => assert!(buf.iter().all(|&b| b == 0), "a status port read non-zero: {buf:?}"),
            }
        }
    }
    check(&m, &mut model);
});
