//! The one place vCPU exits are decided: [`handle_exit`] takes an exit (real, from KVM_RUN, or synthetic,
//! from a test) and says whether the vCPU goes on or the run stops, routing port and MMIO accesses to
//! the device buses on the way.

use std::sync::Arc;

use daxvmm_devices::bus::Bus;
use daxvmm_devices::fault::FaultDevice;
use daxvmm_devices::layout::{FAULT_INJECTOR_BASE, FAULT_INJECTOR_LEN};
use kvm_ioctls::VcpuExit;

use crate::pmem::holes::{Access, PoisonHoles};

/// The port and MMIO buses the vCPUs share.
#[derive(Debug, Default)]
pub struct Buses {
    /// Port I/O devices.
    pub pio: Bus,
    /// MMIO devices.
    pub mmio: Bus,
    /// The fault injector's window. Not on `mmio`: its sync reads hold the calling vCPU, which must not
    /// happen under a bus lock that the other vCPUs need to get through.
    pub fault: Option<FaultDevice>,
    /// The poisoned pmem pages, which no memory slot maps (only when the guest can take machine checks).
    pub pmem: Option<Arc<PoisonHoles>>,
}

impl Buses {
    /// The fault device and the offset into its window, when `addr` is in it.
    fn fault_window(&self, addr: u64) -> Option<(&FaultDevice, u64)> {
        let offset = addr.checked_sub(FAULT_INJECTOR_BASE).filter(|o| *o < FAULT_INJECTOR_LEN)?;
        self.fault.as_ref().map(|f| (f, offset))
    }
}

/// A vCPU exit, detached from KVM's run structure so tests can make one.
#[derive(Debug)]
pub enum Exit<'a> {
    /// IN from a port; fill `data`.
    IoIn {
        /// Port.
        port: u16,
        /// Where the value goes.
        data: &'a mut [u8],
    },
    /// OUT to a port.
    IoOut {
        /// Port.
        port: u16,
        /// What was written.
        data: &'a [u8],
    },
    /// Load from unbacked guest-physical memory; fill `data`.
    MmioRead {
        /// Guest-physical address.
        addr: u64,
        /// Where the value goes.
        data: &'a mut [u8],
    },
    /// Store to unbacked guest-physical memory.
    MmioWrite {
        /// Guest-physical address.
        addr: u64,
        /// What was written.
        data: &'a [u8],
    },
    /// HLT reached userspace (only happens without an in-kernel LAPIC).
    Hlt,
    /// Triple fault.
    Shutdown,
    /// KVM_EXIT_SYSTEM_EVENT of this type.
    SystemEvent(u32),
    /// VM entry failed with this hardware reason.
    FailEntry(u64),
    /// KVM could not emulate an instruction.
    InternalError,
    /// Anything else, by name.
    Other(String),
}

impl<'a> From<VcpuExit<'a>> for Exit<'a> {
    fn from(e: VcpuExit<'a>) -> Self {
        match e {
            VcpuExit::IoIn(port, data) => Exit::IoIn { port, data },
            VcpuExit::IoOut(port, data) => Exit::IoOut { port, data },
            VcpuExit::MmioRead(addr, data) => Exit::MmioRead { addr, data },
            VcpuExit::MmioWrite(addr, data) => Exit::MmioWrite { addr, data },
            VcpuExit::Hlt => Exit::Hlt,
            VcpuExit::Shutdown => Exit::Shutdown,
            VcpuExit::SystemEvent(kind, _) => Exit::SystemEvent(kind),
            VcpuExit::FailEntry(reason, _) => Exit::FailEntry(reason),
            VcpuExit::InternalError => Exit::InternalError,
            other => Exit::Other(format!("{other:?}")),
        }
    }
}

/// Why a vCPU stopped the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The guest reset (triple fault or a reset system event).
    Reset,
    /// The guest powered off through KVM (PSCI-like system event).
    PowerOff,
    /// The guest crashed through KVM's crash system event.
    Crash,
    /// Something the VMM cannot continue from.
    Fatal(String),
}

/// What the vCPU loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Enter the guest again.
    Continue,
    /// The vCPU loaded from poisoned pmem at this guest-physical address: it takes a machine check,
    /// then enters the guest again.
    MachineCheck(u64),
    /// Stop the run.
    Stop(Stop),
}

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

/// Decides what an exit of vCPU `cpu` means.
pub fn handle_exit(exit: Exit<'_>, buses: &Buses, cpu: u8) -> Action {
    match exit {
        Exit::IoIn { port, data } => {
            if !buses.pio.read(u64::from(port), data) {
                // Reads from nothing float high on a PC; drivers probing for hardware expect that.
                data.fill(0xff);
                log::trace!("vCPU {cpu}: IN {port:#x} unclaimed");
            }
            Action::Continue
        }
        Exit::IoOut { port, data } => {
            if !buses.pio.write(u64::from(port), data) {
                log::trace!("vCPU {cpu}: OUT {port:#x} {data:x?} unclaimed");
            }
            Action::Continue
        }
        Exit::MmioRead { addr, data } => {
            if let Some((fault, offset)) = buses.fault_window(addr) {
                fault.mmio_read(Some(cpu), offset, data);
            } else if let Some(access) = buses.pmem.as_ref().and_then(|p| p.read(addr, data)) {
                if access == Access::Poisoned {
                    return Action::MachineCheck(addr);
                }
            } else if !buses.mmio.read(addr, data) {
                data.fill(0xff);
                log::debug!("vCPU {cpu}: MMIO read at {addr:#x} unclaimed");
            }
            Action::Continue
        }
        Exit::MmioWrite { addr, data } => {
            if let Some((fault, offset)) = buses.fault_window(addr) {
                fault.mmio_write(Some(cpu), offset, data);
            } else if buses.pmem.as_ref().is_some_and(|p| p.write(addr, data)) {
                // A store into a poisoned page: in the backing now, the poison kept.
            } else if !buses.mmio.write(addr, data) {
                log::debug!("vCPU {cpu}: MMIO write at {addr:#x} unclaimed");
            }
            Action::Continue
        }
        Exit::Shutdown => {
            log::info!("vCPU {cpu}: triple fault (KVM_EXIT_SHUTDOWN); treating it as a reset");
            Action::Stop(Stop::Reset)
        }
        Exit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN) => Action::Stop(Stop::PowerOff),
        Exit::SystemEvent(KVM_SYSTEM_EVENT_RESET) => Action::Stop(Stop::Reset),
        Exit::SystemEvent(KVM_SYSTEM_EVENT_CRASH) => Action::Stop(Stop::Crash),
        Exit::SystemEvent(kind) => Action::Stop(Stop::Fatal(format!("unknown KVM system event {kind}"))),
        Exit::Hlt => Action::Stop(Stop::Fatal("vCPU halted with no in-kernel LAPIC to wake it".into())),
        Exit::FailEntry(reason) => {
            Action::Stop(Stop::Fatal(format!("VM entry failed (hardware reason {reason:#x})")))
        }
        Exit::InternalError => Action::Stop(Stop::Fatal(
            "KVM internal error: it could not emulate a guest instruction (on kvm-pvm this is expected)"
                .into(),
        )),
        Exit::Other(what) => Action::Stop(Stop::Fatal(format!("unexpected vCPU exit {what}"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use daxvmm_devices::events::{self, EventQueue, GuestEvent};
    use daxvmm_devices::fault::{
        FaultInjector, SyncOutcome, DEFAULT_LOG_CAPACITY, EVENT_OFFSET, MAGIC, SYNC_BASE,
    };
    use daxvmm_devices::layout::{ACPI_PM_LEN, ACPI_PM_PORT, DEBUG_PORT};
    use daxvmm_devices::power::AcpiPm;

    use super::*;
    use crate::pmem::holes::{HoleRegion, SlotTable};

    fn buses_with_pm() -> (Buses, EventQueue) {
        let (sink, rx) = events::channel().unwrap();
        let mut b = Buses::default();
        b.pio
            .insert(Arc::new(Mutex::new(AcpiPm::new(sink))), u64::from(ACPI_PM_PORT), u64::from(ACPI_PM_LEN))
            .unwrap();
        (b, rx)
    }

    #[test]
    fn port_write_reaches_device() {
        let (b, rx) = buses_with_pm();
        let a = handle_exit(Exit::IoOut { port: ACPI_PM_PORT, data: &[0x34] }, &b, 0);
        assert_eq!(a, Action::Continue);
        assert_eq!(rx.try_next(), Some(GuestEvent::PowerOff));
    }

    #[test]
    fn unclaimed_reads_float_high() {
        let (b, _rx) = buses_with_pm();
        let mut d = [0u8; 2];
        assert_eq!(handle_exit(Exit::IoIn { port: DEBUG_PORT, data: &mut d }, &b, 1), Action::Continue);
        assert_eq!(d, [0xff, 0xff]);
        let mut m = [0u8; 4];
        assert_eq!(handle_exit(Exit::MmioRead { addr: 0xd000_0000, data: &mut m }, &b, 0), Action::Continue);
        assert_eq!(m, [0xff; 4]);
        assert_eq!(handle_exit(Exit::MmioWrite { addr: 0xd000_0000, data: &[1] }, &b, 0), Action::Continue);
    }

    fn buses_with_fault() -> (Buses, Arc<FaultInjector>) {
        let inj = Arc::new(FaultInjector::new(DEFAULT_LOG_CAPACITY, Duration::from_millis(50)));
        let b = Buses {
            fault: Some(FaultDevice::new(inj.clone(), Duration::from_millis(5))),
            ..Buses::default()
        };
        (b, inj)
    }

    #[test]
    fn fault_window_goes_to_the_injector() {
        let (b, inj) = buses_with_fault();
        let mut magic = [0u8; 8];
        let a = handle_exit(Exit::MmioRead { addr: FAULT_INJECTOR_BASE, data: &mut magic }, &b, 1);
        assert_eq!(a, Action::Continue);
        assert_eq!(u64::from_le_bytes(magic), MAGIC);
        // An event (code 1, thread 0, pfn 0x1234) is logged with the vCPU that sent it.
        let ev = (1u64 << 56) | 0x1234;
        let addr = FAULT_INJECTOR_BASE + EVENT_OFFSET;
        assert_eq!(handle_exit(Exit::MmioWrite { addr, data: &ev.to_le_bytes() }, &b, 1), Action::Continue);
        assert_eq!(inj.stats().events, 1);
        // A sync read with nothing armed proceeds at once.
        let mut v = [0u8; 8];
        let addr = FAULT_INJECTOR_BASE + SYNC_BASE;
        assert_eq!(handle_exit(Exit::MmioRead { addr, data: &mut v }, &b, 0), Action::Continue);
        assert_eq!(u64::from_le_bytes(v), SyncOutcome::NotArmed.code());
        // Just past the window is the ordinary (empty) bus again.
        let mut m = [0u8; 8];
        let addr = FAULT_INJECTOR_BASE + FAULT_INJECTOR_LEN;
        assert_eq!(handle_exit(Exit::MmioRead { addr, data: &mut m }, &b, 0), Action::Continue);
        assert_eq!(m, [0xff; 8]);
    }

    #[test]
    fn without_a_fault_device_its_window_is_unclaimed() {
        let b = Buses::default();
        let mut m = [0u8; 8];
        let a = handle_exit(Exit::MmioRead { addr: FAULT_INJECTOR_BASE, data: &mut m }, &b, 0);
        assert_eq!(a, Action::Continue);
        assert_eq!(m, [0xff; 8]);
    }

    struct NoSlots;
    impl SlotTable for NoSlots {
        unsafe fn set(&self, _: u32, _: u64, _: u64, _: u64) -> Result<(), kvm_ioctls::Error> {
            Ok(())
        }
    }

    #[test]
    fn a_load_from_poisoned_pmem_is_a_machine_check_and_a_store_reaches_the_backing() {
        let mut mem = vec![0x11u8; 0x4000];
        let gpa = 0x2_0000_0000;
        let region = HoleRegion { index: 0, gpa, size: 0x4000, host: mem.as_mut_ptr() as u64, slot: 2 };
        // SAFETY: `mem` outlives the buses, which are dropped at the end of the test.
        let holes = unsafe { PoisonHoles::new(Box::new(NoSlots), vec![region], 5, 10) };
        holes.update(&[(gpa + 0x1000, 512)]).unwrap();
        let b = Buses { pmem: Some(Arc::new(holes)), ..Buses::default() };
        let mut d = [0u8; 8];
        let poisoned = Exit::MmioRead { addr: gpa + 0x1100, data: &mut d };
        assert_eq!(handle_exit(poisoned, &b, 0), Action::MachineCheck(gpa + 0x1100));
        assert_eq!(handle_exit(Exit::MmioRead { addr: gpa + 0x1200, data: &mut d }, &b, 0), Action::Continue);
        assert_eq!(d, [0x11; 8], "the clean part of a poisoned page reads the backing");
        let store = Exit::MmioWrite { addr: gpa + 0x1000, data: &[0x22; 4] };
        assert_eq!(handle_exit(store, &b, 1), Action::Continue);
        let mut m = [0u8; 4];
        assert_eq!(handle_exit(Exit::MmioRead { addr: gpa + 0x4000, data: &mut m }, &b, 0), Action::Continue);
        assert_eq!(m, [0xff; 4], "past the region: unclaimed");
        drop(b);
        assert_eq!(mem[0x1000..0x1004], [0x22; 4]);
    }

    #[test]
    fn terminal_exits() {
        let b = Buses::default();
        assert_eq!(handle_exit(Exit::Shutdown, &b, 0), Action::Stop(Stop::Reset));
        assert_eq!(handle_exit(Exit::SystemEvent(1), &b, 0), Action::Stop(Stop::PowerOff));
        assert_eq!(handle_exit(Exit::SystemEvent(2), &b, 0), Action::Stop(Stop::Reset));
        assert_eq!(handle_exit(Exit::SystemEvent(3), &b, 0), Action::Stop(Stop::Crash));
        for e in [
            Exit::SystemEvent(99),
            Exit::Hlt,
            Exit::FailEntry(0x21),
            Exit::InternalError,
            Exit::Other("X".into()),
        ] {
            assert!(matches!(handle_exit(e, &b, 0), Action::Stop(Stop::Fatal(_))));
        }
    }
}
