//! One guest run from start to end: KVM VM with in-kernel irqchip and PIT, guest RAM, boot images, ACPI,
//! devices on the port bus, vCPU threads, and the main loop that turns guest events (power-off, panic,
//! reset, exit status) and the timeout into an [`Outcome`].

use std::fmt;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daxvmm_devices::bus::{BusError, SharedDevice};
use daxvmm_devices::debug_port::{DebugPort, MARKER_INIT_STARTED};
use daxvmm_devices::events::{EventSink, GuestEvent};
use daxvmm_devices::fault::{
    FaultDevice, FaultInjector, RunObserver, Schedule, Step, StepState, DEFAULT_BOUND, DEFAULT_LOG_CAPACITY,
    DEFAULT_SLICE,
};
use daxvmm_devices::layout::*;
use daxvmm_devices::power::{AcpiPm, I8042};
use daxvmm_devices::pvpanic::PvPanic;
use daxvmm_devices::serial::SerialDevice;
use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;

use crate::acpi::{self, AcpiSetupError};
use crate::boot::cpuid::XsavePolicy;
use crate::boot::loader::{self, BootSpec, LoaderError};
use crate::boot::regs::{self, RegsError};
use crate::console;
use crate::exit::Buses;
use crate::kvm_host::{self, KvmHostError};
use crate::memory::{self, MemoryError};
use crate::pmem::view::PmemView;
use crate::pmem::{self, PmemError, PmemRegion};
use crate::pmem_spec::PmemSpec;
use crate::procfs;
use crate::signals;
use crate::vcpu::{self, VcpuError};

/// Where the host's hugetlb pools are described.
const HUGEPAGES_SYSFS: &str = "/sys/kernel/mm/hugepages";

/// Where KVM puts the TSS it needs on Intel (three pages just below the BIOS area at 4 GiB).
const KVM_TSS_ADDR: usize = 0xfffb_d000;

/// What to run.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// bzImage.
    pub kernel: PathBuf,
    /// Optional initrd.
    pub initrd: Option<PathBuf>,
    /// Full kernel command line.
    pub cmdline: String,
    /// RAM bytes.
    pub mem: u64,
    /// vCPUs.
    pub cpus: u8,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    /// XSAVE state the guest may enable.
    pub xsave: XsavePolicy,
    /// Emulated NVDIMMs.
    pub pmem: Vec<PmemSpec>,
    /// A schedule for the fault injector, armed before the guest starts.
    pub fault_schedule: Option<Schedule>,
    /// `daxvmm test`'s hooks; `None` for an ordinary, interactive run.
    pub race: Option<RaceHooks>,
}

/// What `daxvmm test` hooks into a run: the observer that arms each guest run's schedule and judges it,
/// the pmem window its oracle reads, the captured console, and the hold bound of the fault injector.
#[derive(Clone)]
pub struct RaceHooks {
    /// Gets the guest's run-begin/run-end events.
    pub observer: Arc<dyn RunObserver>,
    /// Attached to the pmem regions while the guest runs.
    pub pmem: Arc<PmemView>,
    /// Receives the guest's console output instead of stdout.
    pub console: console::Capture,
    /// Longest hold of one sync arrival.
    pub bound: Duration,
}

impl fmt::Debug for RaceHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaceHooks").field("bound", &self.bound).finish_non_exhaustive()
    }
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Clean power-off with exit status 0 (or none reported).
    PowerOff,
    /// Power-off after the guest reported a non-zero exit status.
    GuestFailed(u8),
    /// The guest kernel panicked.
    Panic(u8),
    /// The guest reset or triple-faulted.
    Reset,
    /// The timeout expired.
    Timeout,
    /// daxvmm got this termination signal.
    Signal(u8),
}

/// Errors that prevent or abort a run.
#[derive(Debug, Error)]
pub enum VmError {
    /// KVM unusable.
    #[error(transparent)]
    Kvm(#[from] KvmHostError),
    /// A VM-level KVM ioctl failed.
    #[error("KVM {0} failed: {1}")]
    Ioctl(&'static str, kvm_ioctls::Error),
    /// Guest RAM.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Kernel/initrd loading.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Boot page tables.
    #[error(transparent)]
    Regs(#[from] RegsError),
    /// ACPI tables.
    #[error(transparent)]
    Acpi(#[from] AcpiSetupError),
    /// vCPUs.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// Device wiring.
    #[error("device setup: {0}")]
    Bus(#[from] BusError),
    /// Host resources (eventfds, threads).
    #[error("{0}: {1}")]
    Host(&'static str, std::io::Error),
    /// Persistent memory.
    #[error(transparent)]
    Pmem(#[from] PmemError),
    /// A vCPU failed while the guest ran.
    #[error("vCPU {0} stopped on an error (see the log line above)")]
    VcpuFailed(u8),
}

/// Boots the guest and waits for it to end.
pub fn run(cfg: &VmConfig, started: Instant) -> Result<Outcome, VmError> {
    // pmem first: its errors (pool too small, a file of the wrong size) need no KVM to be reported.
    let pmem = pmem::setup(cfg.mem, &cfg.pmem, std::path::Path::new(HUGEPAGES_SYSFS))?;
    let result = run_with(cfg, started, &pmem);
    match &result {
        // The guest never ran: leave no file behind that this start created.
        Err(e) if !matches!(e, VmError::VcpuFailed(_)) => {
            pmem.iter().for_each(|r| r.mapping.discard_if_created())
        }
        _ => pmem::flush_all(&pmem),
    }
    result
}

fn run_with(cfg: &VmConfig, started: Instant, pmem: &[PmemRegion]) -> Result<Outcome, VmError> {
    let step = |what: &str| log::debug!("{:>5} ms  {what}", started.elapsed().as_millis());
    step("opening KVM");
    let kvm = kvm_host::open()?;
    let vm = kvm.create_vm().map_err(|e| VmError::Ioctl("KVM_CREATE_VM", e))?;
    vm.set_tss_address(KVM_TSS_ADDR).map_err(|e| VmError::Ioctl("KVM_SET_TSS_ADDR", e))?;
    vm.create_irq_chip().map_err(|e| VmError::Ioctl("KVM_CREATE_IRQCHIP", e))?;
    let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
    vm.create_pit2(pit).map_err(|e| VmError::Ioctl("KVM_CREATE_PIT2", e))?;

    step("VM created");
    let gm = memory::create(cfg.mem)?;
    let next_slot = memory::register(&vm, &gm, 0)?;
    pmem::register(&vm, pmem, next_slot)?;
    step("memory and pmem mapped");
    regs::write_boot_tables(&gm)?;
    acpi::write_tables(&gm, cfg.cpus, &pmem::acpi_regions(pmem))?;
    step("ACPI tables written");
    let boot = loader::load(
        &gm,
        &BootSpec {
            kernel: &cfg.kernel,
            initrd: cfg.initrd.as_deref(),
            cmdline: &cfg.cmdline,
            mem: cfg.mem,
            rsdp: ACPI_RSDP_ADDR,
        },
    )?;

    step("kernel and initrd loaded");
    let (tx, rx) = mpsc::channel();
    let sink = EventSink::new(tx);
    signals::block();
    signals::spawn_waiter(sink.clone()).map_err(|e| VmError::Host("starting the signal thread", e))?;
    let serial_irq =
        EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmError::Host("creating the serial eventfd", e))?;
    vm.register_irqfd(&serial_irq, COM1_IRQ).map_err(|e| VmError::Ioctl("KVM_IRQFD", e))?;
    let out = match &cfg.race {
        Some(r) => r.console.writer(),
        None => Box::new(console::RawStdout),
    };
    let serial = Arc::new(Mutex::new(SerialDevice::new(serial_irq, out)));

    let mut buses = Buses::default();
    let port_devices: [(SharedDevice, u16, u16); 5] = [
        (serial.clone(), COM1_PORT, COM1_LEN),
        (Arc::new(Mutex::new(PvPanic::new(sink.clone()))), PVPANIC_PORT, 1),
        (Arc::new(Mutex::new(AcpiPm::new(sink.clone()))), ACPI_PM_PORT, ACPI_PM_LEN),
        (Arc::new(Mutex::new(I8042::new(sink.clone()))), I8042_COMMAND_PORT, 1),
        (Arc::new(Mutex::new(DebugPort::new(sink.clone()))), DEBUG_PORT, DEBUG_PORT_LEN),
    ];
    for (dev, port, len) in port_devices {
        buses.pio.insert(dev, u64::from(port), u64::from(len))?;
    }
    // With nothing armed, sync reads proceed at once.
    let bound = cfg.race.as_ref().map_or(DEFAULT_BOUND, |r| r.bound);
    let injector = Arc::new(FaultInjector::new(DEFAULT_LOG_CAPACITY, bound));
    if let Some(schedule) = &cfg.fault_schedule {
        injector.arm(schedule);
    }
    if let Some(race) = &cfg.race {
        race.pmem.attach(pmem);
        injector.set_observer(race.observer.clone());
    }
    buses.fault = Some(FaultDevice::new(injector.clone(), DEFAULT_SLICE));
    let buses = Arc::new(buses);

    let vcpus = (0..cfg.cpus)
        .map(|cpu| vcpu::create(&kvm, &vm, cpu, cfg.cpus, boot.entry.0, cfg.xsave))
        .collect::<Result<Vec<_>, _>>()?;
    step("vCPUs configured");
    if cfg.race.is_none() {
        console::enter_raw_mode();
        console::spawn_stdin_forwarder(serial).map_err(|e| VmError::Host("starting the stdin thread", e))?;
    }
    log::info!(
        "booting {} with {} vCPU(s), {} MiB RAM; setup took {} ms",
        cfg.kernel.display(),
        cfg.cpus,
        cfg.mem >> 20,
        started.elapsed().as_millis()
    );
    for (cpu, fd) in vcpus.into_iter().enumerate() {
        vcpu::spawn(fd, cpu as u8, buses.clone(), sink.clone(), started)?;
    }
    let outcome = wait(&rx, cfg.timeout, started, pmem);
    // Guest RAM is unmapped when this returns; vCPUs still in the guest must stop without complaint, and
    // none may stay held at a sync point.
    sink.mark_stopping();
    log_fault_stats(&injector);
    if let Some(progress) = injector.disarm() {
        log_schedule_progress(&progress);
    }
    // The oracle must not read pmem once it is unmapped (vCPU threads outlive this function).
    if let Some(race) = &cfg.race {
        race.pmem.detach();
    }
    outcome
}

/// The main loop: the first terminal guest event (or the timeout) decides the outcome.
fn wait(
    rx: &mpsc::Receiver<GuestEvent>,
    timeout: Option<Duration>,
    started: Instant,
    pmem: &[PmemRegion],
) -> Result<Outcome, VmError> {
    let deadline = timeout.map(|t| started + t);
    let mut status = None;
    loop {
        let ev = match deadline {
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => return Ok(Outcome::Timeout),
                Err(RecvTimeoutError::Disconnected) => return Ok(Outcome::PowerOff),
            },
            None => match rx.recv() {
                Ok(ev) => ev,
                Err(_) => return Ok(Outcome::PowerOff),
            },
        };
        match ev {
            GuestEvent::PowerOff => {
                return Ok(match status {
                    Some(s) if s != 0 => Outcome::GuestFailed(s),
                    _ => Outcome::PowerOff,
                })
            }
            GuestEvent::Reset => return Ok(Outcome::Reset),
            GuestEvent::Panic(v) => return Ok(Outcome::Panic(v)),
            GuestEvent::VcpuFailed(cpu) => return Err(VmError::VcpuFailed(cpu)),
            GuestEvent::HostSignal(sig) => return Ok(Outcome::Signal(sig)),
            GuestEvent::ExitStatus(s) => status = Some(s),
            GuestEvent::BootMarker(MARKER_INIT_STARTED) => {
                log::info!("guest userspace init started {} ms after start", started.elapsed().as_millis());
                log_memory(pmem);
            }
            GuestEvent::BootMarker(code) => {
                log::info!("guest boot marker {code:#04x} at {} ms", started.elapsed().as_millis());
            }
        }
    }
}

/// What the guest told the fault injector, for the debug log.
fn log_fault_stats(injector: &FaultInjector) {
    let s = injector.stats();
    if s.events + s.arrivals > 0 || !s.protocol_errors.is_empty() {
        log::debug!(
            "fault injector: {} events, {} sync arrivals ({} held, {} timed out), protocol errors {:?}",
            s.events,
            s.arrivals,
            s.held,
            s.timeouts,
            s.protocol_errors
        );
    }
}

/// How far the armed schedule got: every step's state, and one line saying whether it ran in order.
fn log_schedule_progress(progress: &[(Step, StepState)]) {
    let passed = progress.iter().filter(|(_, st)| *st == StepState::Passed).count();
    let steps: Vec<String> = progress.iter().map(|(step, st)| format!("{step}:{st:?}")).collect();
    if passed == progress.len() {
        log::info!("fault schedule: complete, all {passed} steps in order ({})", steps.join(" "));
    } else {
        log::warn!(
            "fault schedule: incomplete, {passed} of {} steps in order ({})",
            progress.len(),
            steps.join(" ")
        );
    }
}

/// daxvmm's own footprint, and what really backs each pmem region (the smaps page size).
fn log_memory(pmem: &[PmemRegion]) {
    if let Some(rss) = procfs::vm_rss() {
        log::info!("daxvmm RSS {} MiB", rss >> 20);
    }
    for (i, r) in pmem.iter().enumerate() {
        if let Some(e) = procfs::smaps_for(r.mapping.host_addr()) {
            log::info!(
                "pmem{i}: smaps KernelPageSize {} KiB, Rss {} MiB, AnonHugePages {} MiB",
                e.kernel_page_size >> 10,
                e.rss >> 20,
                e.anon_huge >> 20
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn outcome(events: &[GuestEvent], timeout: Option<Duration>) -> Result<Outcome, VmError> {
        let (tx, rx) = mpsc::channel();
        for e in events {
            tx.send(*e).unwrap();
        }
        // Keep the sender alive so that only the events (or the timeout) decide.
        let r = wait(&rx, timeout, Instant::now(), &[]);
        drop(tx);
        r
    }

    #[test]
    fn status_then_poweroff() {
        let t = Some(Duration::from_secs(5));
        assert_eq!(
            outcome(&[GuestEvent::BootMarker(1), GuestEvent::PowerOff], t).unwrap(),
            Outcome::PowerOff
        );
        assert_eq!(
            outcome(&[GuestEvent::ExitStatus(0), GuestEvent::PowerOff], t).unwrap(),
            Outcome::PowerOff
        );
        assert_eq!(
            outcome(&[GuestEvent::ExitStatus(7), GuestEvent::PowerOff], t).unwrap(),
            Outcome::GuestFailed(7)
        );
        assert_eq!(outcome(&[GuestEvent::Panic(1), GuestEvent::PowerOff], t).unwrap(), Outcome::Panic(1));
        assert_eq!(outcome(&[GuestEvent::Reset], t).unwrap(), Outcome::Reset);
        assert!(matches!(outcome(&[GuestEvent::VcpuFailed(1)], t), Err(VmError::VcpuFailed(1))));
        assert_eq!(outcome(&[GuestEvent::HostSignal(15)], t).unwrap(), Outcome::Signal(15));
    }

    #[test]
    fn timeout_expires() {
        let start = Instant::now();
        assert_eq!(
            outcome(&[GuestEvent::BootMarker(1)], Some(Duration::from_millis(50))).unwrap(),
            Outcome::Timeout
        );
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
