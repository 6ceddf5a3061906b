//! [`Machine`]: the one owner of everything a running guest can reach: the KVM VM, guest RAM, the pmem
//! mappings and the vCPU threads. It is the only place guest memory is unmapped, and it unmaps only
//! after every vCPU thread has been kicked out of KVM_RUN and joined; a thread that will not stop keeps
//! the memory mapped (leaked, never reused by daxvmm) rather than let the guest reach freed host memory.

use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use daxvmm_devices::bus::{lock, SharedDevice};
use daxvmm_devices::debug_port::DebugPort;
use daxvmm_devices::events::EventSink;
use daxvmm_devices::fault::{FaultDevice, FaultInjector, DEFAULT_BOUND, DEFAULT_LOG_CAPACITY, DEFAULT_SLICE};
use daxvmm_devices::flush_hint::FlushHints;
use daxvmm_devices::layout::*;
use daxvmm_devices::nvdimm_dsm::NvdimmDsm;
use daxvmm_devices::pci_host::PciHostBridge;
use daxvmm_devices::power::{AcpiPm, I8042};
use daxvmm_devices::pvpanic::PvPanic;
use daxvmm_devices::serial::SerialDevice;
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::acpi_setup;
use crate::boot::loader::{self, BootSpec};
use crate::boot::regs;
use crate::console;
use crate::exit::Buses;
use crate::kvm_host;
use crate::mce::{self, MceSupport};
use crate::memory;
use crate::pmem::holes::PoisonHoles;
use crate::pmem::view::PmemView;
use crate::pmem::{self, PmemRegion};
use crate::seccomp::Filters;
use crate::vcpu::{self, Vcpus, STOP_LIMIT};
use crate::vcpu_end::VcpuEnd;
use crate::virtio::disk::Disk;
use crate::virtio::{self, VirtioDevices};
use crate::vm::{VmConfig, VmError};

/// Where KVM puts the TSS it needs on Intel (three pages just below the BIOS area at 4 GiB).
const KVM_TSS_ADDR: usize = 0xfffb_d000;

/// A guest, from its pmem regions to its running vCPUs. Drop order matters and is explicit in `drop`.
#[derive(Debug)]
pub struct Machine {
    vcpus: Option<Vcpus>,
    /// Created but not started yet: the vCPUs, the buses they share and where they send events.
    pending: Option<(Vec<VcpuFd>, Arc<Buses>, EventSink)>,
    injector: Option<Arc<FaultInjector>>,
    vm: Option<VmFd>,
    kvm: Option<Kvm>,
    memory: ManuallyDrop<Option<GuestMemoryMmap>>,
    pmem: ManuallyDrop<Vec<PmemRegion>>,
    /// The oracle's view of pmem, detached before pmem is unmapped.
    view: Option<Arc<PmemView>>,
    /// The NVDIMM flush hints' device, for the flush counts at the end.
    flush_hints: Option<Arc<Mutex<FlushHints>>>,
    /// The `--disk` images, until [`Machine::prepare`] gives them to their devices.
    disks: Vec<Disk>,
    /// The virtio devices (virtio-pmem, virtio-blk) and their workers.
    virtio: Option<VirtioDevices>,
    started: bool,
    /// Set when a vCPU thread did not stop: the memory above must then never be unmapped.
    leak: bool,
}

/// Everything a run needs besides the machine: where events go, the serial port (for stdin), and the
/// fault injector.
#[derive(Debug)]
pub struct Wiring {
    /// The console UART, for the stdin forwarder.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// The fault injector (shared with the device on the MMIO path).
    pub injector: Arc<FaultInjector>,
}

impl Machine {
    /// A machine that owns `pmem` and the opened `disks` and nothing else yet; `view` (the race
    /// oracle's) sees pmem while the vCPUs run.
    pub fn new(pmem: Vec<PmemRegion>, disks: Vec<Disk>, view: Option<Arc<PmemView>>) -> Self {
        Machine {
            vcpus: None,
            pending: None,
            injector: None,
            vm: None,
            kvm: None,
            memory: ManuallyDrop::new(None),
            pmem: ManuallyDrop::new(pmem),
            view,
            flush_hints: None,
            disks,
            virtio: None,
            started: false,
            leak: false,
        }
    }

    /// Whether [`Machine::start`] started the vCPUs (the guest may have written to pmem since).
    pub fn started(&self) -> bool {
        self.started
    }

    /// The pmem regions.
    pub fn pmem(&self) -> &[PmemRegion] {
        &self.pmem
    }

    /// Creates the VM, maps guest RAM and pmem into it, writes the boot tables, loads the kernel, wires
    /// the devices to `sink` and creates the vCPUs; [`Machine::start`] runs them.
    pub fn prepare(&mut self, cfg: &VmConfig, sink: &EventSink, started: Instant) -> Result<Wiring, VmError> {
        let step = |what: &str| log::debug!("{:>5} ms  {what}", started.elapsed().as_millis());
        step("opening KVM");
        let kvm = self.kvm.insert(kvm_host::open()?);
        let vm = self.vm.insert(kvm.create_vm().map_err(|e| VmError::Ioctl("KVM_CREATE_VM", e))?);
        vm.set_tss_address(KVM_TSS_ADDR).map_err(|e| VmError::Ioctl("KVM_SET_TSS_ADDR", e))?;
        vm.create_irq_chip().map_err(|e| VmError::Ioctl("KVM_CREATE_IRQCHIP", e))?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        vm.create_pit2(pit).map_err(|e| VmError::Ioctl("KVM_CREATE_PIT2", e))?;

        step("VM created");
        let gm = self.memory.insert(memory::create(cfg.mem)?);
        let pmem_slot = memory::register(vm, gm, 0)?;
        pmem::register(vm, &self.pmem, pmem_slot)?;
        step("memory and pmem mapped");
        regs::write_boot_tables(gm)?;
        let virtio_pmem = pmem::virtio_regions(&self.pmem);
        let virtio_acpi: Vec<_> =
            (0..virtio_pmem.len() + self.disks.len()).map(virtio::acpi_device).collect();
        acpi_setup::write_tables(gm, cfg.cpus, &pmem::acpi_regions(&self.pmem), &virtio_acpi)?;
        step("ACPI tables written");
        let boot = loader::load(
            gm,
            &BootSpec {
                kernel: &cfg.kernel,
                initrd: cfg.initrd.as_deref(),
                cmdline: &cfg.cmdline,
                mem: cfg.mem,
                rsdp: ACPI_RSDP_ADDR,
                e820_pmem: &pmem::e820_ranges(&self.pmem),
            },
        )?;
        step("kernel and initrd loaded");

        let (mut buses, wiring) = wire_devices(vm, cfg, sink)?;
        let hints = Arc::new(Mutex::new(pmem::flush_hints(&self.pmem)));
        buses.mmio.insert(hints.clone(), FLUSH_HINT_BASE, FLUSH_HINT_LEN)?;
        self.flush_hints = Some(hints);
        let disks = std::mem::take(&mut self.disks);
        self.virtio = Some(VirtioDevices::wire(vm, gm, &virtio_pmem, disks, &mut buses.mmio)?);
        // The NVDIMM _DSM mailbox; it keeps its own handle on guest memory, so that memory stays mapped
        // while any vCPU can still reach the device.
        let mut dsm =
            NvdimmDsm::new(gm.clone(), pmem::label_stores(&self.pmem), pmem::dimm_ranges(&self.pmem));
        let holes = poison_holes(kvm, vm, &self.pmem, pmem_slot)?;
        for (address, length) in pmem::host_poison(&self.pmem) {
            // The spec was checked against the region's size; a refusal here would be a daxvmm bug.
            if !dsm.inject(address, length) {
                log::warn!("poison={:#x}+{length} was not accepted by the NVDIMM root device", address);
            }
        }
        let poisoned = dsm.poison().len();
        if poisoned > 0 {
            log::info!(
                "NVDIMM poison from the start: {poisoned} range(s), reported by the guest's first scrub"
            );
        }
        if let Some((holes, _)) = &holes {
            if let Err(e) = holes.update(&dsm.poison()) {
                log::warn!("{e}");
            }
            let h = holes.clone();
            dsm.on_poison_change(Box::new(move |poison: &[(u64, u64)]| {
                if let Err(e) = h.update(poison) {
                    log::warn!("{e}");
                }
            }));
            buses.pmem = Some(holes.clone());
        }
        let mce = holes.map(|(_, support)| support);
        buses.pio.insert(
            Arc::new(Mutex::new(dsm)),
            u64::from(NVDIMM_DSM_PORT),
            u64::from(NVDIMM_DSM_PORT_LEN),
        )?;
        self.injector = Some(wiring.injector.clone());
        let fds = (0..cfg.cpus)
            .map(|cpu| vcpu::create(kvm, vm, (cpu, cfg.cpus), boot.entry.0, cfg.xsave, mce))
            .collect::<Result<Vec<VcpuFd>, _>>()?;
        step("vCPUs configured");
        self.pending = Some((fds, Arc::new(buses), sink.clone()));
        Ok(wiring)
    }

    /// Starts the vCPUs [`Machine::prepare`] created.
    pub fn start(&mut self, started: Instant, filters: Filters) -> Result<(), VmError> {
        let (fds, buses, sink) = self.pending.take().ok_or(VmError::NotPrepared)?;
        if let Some(view) = &self.view {
            view.attach(&self.pmem);
        }
        self.started = true;
        if let Some(v) = &mut self.virtio {
            v.start(&filters)?;
        }
        self.vcpus = Some(Vcpus::spawn(fds, buses, sink, started, filters)?);
        Ok(())
    }

    /// Ends the run: releases any vCPU held at a sync point, stops and joins every vCPU thread, and
    /// detaches the oracle's view of pmem. After this no thread of the run touches guest memory, unless
    /// a vCPU would not stop (then the memory stays mapped for good and this says which). Returns where
    /// each vCPU ended.
    pub fn stop(&mut self, limit: Duration) -> Result<Vec<VcpuEnd>, VmError> {
        if let Some(injector) = &self.injector {
            log_fault_stats(injector);
            if let Some(progress) = injector.disarm() {
                log_schedule_progress(&progress);
            }
        }
        let stopped = self.vcpus.take().map(|mut v| v.stop(limit)).unwrap_or_default();
        if !stopped.stuck.is_empty() {
            self.leak = true;
            let list: Vec<String> = stopped.stuck.iter().map(u8::to_string).collect();
            return Err(VmError::VcpuStuck(list.join(", ")));
        }
        if let Some(v) = &mut self.virtio {
            v.stop();
        }
        if let Some(view) = &self.view {
            view.detach();
        }
        if let Some(hints) = &self.flush_hints {
            pmem::log_flushes(&lock(hints));
        }
        Ok(stopped.ends)
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut vcpus) = self.vcpus.take() {
            self.leak |= !vcpus.stop(STOP_LIMIT).stuck.is_empty();
        }
        // The virtio workers are joined when their devices go.
        self.virtio = None;
        // Buses of a machine never started: their poison holes hold a handle on the VM.
        self.pending = None;
        // The vCPU fds closed with their threads; closing the VM's lets KVM drop the memory slots.
        self.vm = None;
        self.kvm = None;
        if self.leak {
            log::error!("guest memory stays mapped until daxvmm exits, because a vCPU thread still runs");
            return;
        }
        if let Some(view) = &self.view {
            view.detach();
        }
        // SAFETY: every vCPU thread has been joined (or none was started) and the VM is closed, so nothing
        // can reach these mappings any more; each field is dropped exactly once, here.
        unsafe {
            ManuallyDrop::drop(&mut self.memory);
            ManuallyDrop::drop(&mut self.pmem);
        }
    }
}

/// The poison holes of the NFIT regions (registered from `first_slot` on) and the machine checks the
/// vCPUs get, when there are NFIT regions and the guest can take machine checks ([`mce::probe`]).
fn poison_holes(
    kvm: &Kvm,
    vm: &VmFd,
    regions: &[PmemRegion],
    first_slot: u32,
) -> Result<Option<(Arc<PoisonHoles>, MceSupport)>, VmError> {
    let nfit = pmem::hole_regions(regions, first_slot);
    if nfit.is_empty() {
        return Ok(None);
    }
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| VmError::Ioctl("KVM_GET_SUPPORTED_CPUID", e))?;
    let support = match mce::probe(kvm, cpuid.as_slice()) {
        Ok(s) => s,
        Err(why) => {
            log::info!("a guest load from poisoned NVDIMM memory reads its bytes: no machine checks ({why})");
            return Ok(None);
        }
    };
    // The holes' own handle on the VM, so that vCPU threads (where the root device's calls run) can
    // change slots.
    // SAFETY: dup() touches no memory; it returns a new descriptor or -1.
    let fd = unsafe { libc::dup(vm.as_raw_fd()) };
    if fd < 0 {
        return Err(VmError::Host("duplicating the VM descriptor", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh duplicate of the VM's descriptor that nothing else owns.
    let table = unsafe { kvm.create_vmfd_from_rawfd(fd) }.map_err(|e| {
        // SAFETY: `fd` was not taken over; closing it here is its only close.
        unsafe { libc::close(fd) };
        VmError::Ioctl("KVM_GET_VCPU_MMAP_SIZE", e)
    })?;
    let limit = u32::try_from(kvm.get_nr_memslots()).unwrap_or(u32::MAX);
    let first_spare = first_slot + regions.len() as u32;
    // SAFETY: the regions' mappings are owned by the Machine, which unmaps them only after every
    // vCPU thread (the only users of the holes besides the root device on those threads) has been
    // joined and the buses holding the holes are dropped.
    let holes = unsafe { PoisonHoles::new(Box::new(table), nfit, first_spare, limit) };
    log::debug!("poisoned NVDIMM pages become holes; loads from poison are machine checks");
    Ok(Some((Arc::new(holes), support)))
}

/// The serial port, power and debug ports, pvpanic and the fault injector, on their buses.
fn wire_devices(vm: &VmFd, cfg: &VmConfig, sink: &EventSink) -> Result<(Buses, Wiring), VmError> {
    let serial_irq =
        EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmError::Host("creating the serial eventfd", e))?;
    vm.register_irqfd(&serial_irq, COM1_IRQ).map_err(|e| VmError::Ioctl("KVM_IRQFD", e))?;
    let out = match &cfg.console {
        Some(c) => c.writer(),
        None => Box::new(console::RawStdout),
    };
    let serial =
        SerialDevice::new(serial_irq, out).map_err(|e| VmError::Host("creating the serial port", e))?;
    let serial = Arc::new(Mutex::new(serial));

    let mut buses = Buses::default();
    let port_devices: [(SharedDevice, u16, u16); 6] = [
        (serial.clone(), COM1_PORT, COM1_LEN),
        (Arc::new(Mutex::new(PvPanic::new(sink.clone()))), PVPANIC_PORT, 1),
        (Arc::new(Mutex::new(AcpiPm::new(sink.clone()))), ACPI_PM_PORT, ACPI_PM_LEN),
        (Arc::new(Mutex::new(I8042::new(sink.clone()))), I8042_COMMAND_PORT, 1),
        (Arc::new(Mutex::new(DebugPort::new(sink.clone()))), DEBUG_PORT, DEBUG_PORT_LEN),
        (Arc::new(Mutex::new(PciHostBridge::new())), PCI_CONFIG_PORT, PCI_CONFIG_LEN),
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
        injector.set_observer(race.observer.clone());
    }
    buses.fault = Some(FaultDevice::new(injector.clone(), DEFAULT_SLICE));
    Ok((buses, Wiring { serial, injector }))
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
fn log_schedule_progress(progress: &[(daxvmm_devices::fault::Step, daxvmm_devices::fault::StepState)]) {
    use daxvmm_devices::fault::StepState;
    let passed = progress.iter().filter(|(_, st)| *st == StepState::Passed).count();
    let steps: Vec<String> = progress.iter().map(|(step, st)| format!("{step}:{st}")).collect();
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
