//! One guest run from start to end: what to run ([`VmConfig`]), how it ended ([`Outcome`], [`VmError`]),
//! and [`run`], which sets up pmem, has a [`Machine`] boot the guest, waits in the main loop, and tears
//! the machine down (vCPUs joined before memory is unmapped) before flushing or discarding pmem files.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use daxvmm_devices::bus::BusError;
use daxvmm_devices::events::{self, EventQueue, EventSink};
use daxvmm_devices::fault::{RunObserver, Schedule};
use thiserror::Error;

use crate::acpi_setup::AcpiSetupError;
use crate::boot::cpuid::XsavePolicy;
use crate::boot::loader::LoaderError;
use crate::boot::regs::RegsError;
use crate::console;
use crate::kvm_host::KvmHostError;
use crate::machine::Machine;
use crate::main_loop;
use crate::memory::MemoryError;
use crate::pmem::spec::PmemSpec;
use crate::pmem::view::PmemView;
use crate::pmem::{self, PmemError, PmemRegion};
use crate::privileges;
use crate::procfs;
use crate::seccomp::{self, Filters, SeccompError, SeccompMode};
use crate::signals::{self, SignalFd};
use crate::vcpu::{VcpuError, STOP_LIMIT};
use crate::vcpu_end;
use crate::virtio::disk::{Disk, DiskError, DiskSpec};

/// Where the host's hugetlb pools are described.
const HUGEPAGES_SYSFS: &str = "/sys/kernel/mm/hugepages";

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
    /// Stop the guest this long after its init started.
    pub timeout_after_init: Option<Duration>,
    /// XSAVE state the guest may enable.
    pub xsave: XsavePolicy,
    /// Emulated NVDIMMs.
    pub pmem: Vec<PmemSpec>,
    /// virtio-blk disks (`--disk`).
    pub disks: Vec<DiskSpec>,
    /// A schedule for the fault injector, armed before the guest starts.
    pub fault_schedule: Option<Schedule>,
    /// Seccomp filters for the threads that handle guest input.
    pub seccomp: SeccompMode,
    /// The last run of the process: once the guest runs, the main thread drops the capabilities it
    /// kept for opening files (crate::privileges).
    pub last_run: bool,
    /// `daxvmm test`'s hooks; `None` for an ordinary, interactive run.
    pub race: Option<RaceHooks>,
    /// Receives the guest's console instead of stdout, for commands that read it after the run
    /// (`test`, `repro`, `fstests`); `None`: stdout, and stdin goes to the guest's serial port.
    pub console: Option<crate::capture::Capture>,
}

impl VmConfig {
    /// Checks of a run that need no KVM: the kernel image, and pmem placement (overlaps, alignment, too
    /// many), so these errors come before KVM or any file is touched.
    pub fn check(&self) -> anyhow::Result<()> {
        crate::boot::image::check_kernel(&self.kernel)?;
        pmem::place(self.mem, &self.pmem, pmem::host_phys_bits())?;
        Ok(())
    }
}

/// What `daxvmm test` hooks into a run: the observer that arms each guest run's schedule and judges it,
/// the pmem window its oracle reads, and the hold bound of the fault injector.
#[derive(Clone)]
pub struct RaceHooks {
    /// Gets the guest's run-begin/run-end events.
    pub observer: Arc<dyn RunObserver>,
    /// Attached to the pmem regions while the guest runs.
    pub pmem: Arc<PmemView>,
    /// Longest hold of one sync arrival.
    pub bound: Duration,
}

impl fmt::Debug for RaceHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaceHooks").field("bound", &self.bound).finish_non_exhaustive()
    }
}

/// How the run ended (the race runner's name for it is `GuestEnd`).
pub use daxvmm_race::GuestEnd as Outcome;

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
    /// virtio devices.
    #[error(transparent)]
    Virtio(#[from] crate::virtio::VirtioError),
    /// A `--disk` image.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Seccomp filters.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// A vCPU failed while the guest ran.
    #[error("vCPU {0} stopped on an error (see the log line above)")]
    VcpuFailed(u8),
    /// vCPU threads that did not leave the guest when the run ended.
    #[error("vCPU(s) {0} did not stop at the end of the run; their guest memory stays mapped")]
    VcpuStuck(String),
    /// A termination signal came while the guest was being set up (it never ran).
    #[error("stopped by signal {0} before the guest started")]
    Interrupted(u8),
    /// [`Machine::start`] without [`Machine::prepare`]: a bug in daxvmm.
    #[error("internal error: the vCPUs were started before they were created")]
    NotPrepared,
}

/// Boots the guest and waits for it to end. Every vCPU thread has stopped and been joined, and guest
/// memory unmapped, when this returns (unless a vCPU would not stop: [`VmError::VcpuStuck`]).
pub fn run(cfg: &VmConfig, started: Instant) -> Result<Outcome, VmError> {
    // Before pmem: a Ctrl-C during a slow start stays pending, and the start is undone below.
    signals::block();
    let signal_fd = SignalFd::new().map_err(|e| VmError::Host("creating the signalfd", e))?;
    // pmem first: its errors (pool too small, a file of the wrong size) need no KVM to be reported.
    let pmem = pmem::setup(cfg.mem, &cfg.pmem, std::path::Path::new(HUGEPAGES_SYSFS))?;
    let disks = cfg.disks.iter().map(Disk::open).collect::<Result<Vec<_>, _>>()?;
    let mut machine = Machine::new(pmem, disks, cfg.race.as_ref().map(|r| r.pmem.clone()));
    let (sink, queue) = events::channel().map_err(|e| VmError::Host("creating the event queue", e))?;
    let result = boot_and_wait(&mut machine, cfg, (&sink, &queue), &signal_fd, started);
    sink.mark_stopping();
    let result = match (result, machine.stop(STOP_LIMIT)) {
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(outcome), Ok(ends)) => {
            if outcome == Outcome::Timeout {
                vcpu_end::log_timeout(&ends);
            }
            Ok(outcome)
        }
    };
    match result {
        // The guest never ran: leave no file behind that this start created.
        Err(e) if !machine.started() => {
            machine.pmem().iter().for_each(|r| r.mapping.discard_if_created());
            match e {
                VmError::Interrupted(sig) => Ok(Outcome::Signal(sig)),
                e => Err(e),
            }
        }
        result => {
            pmem::flush_all(machine.pmem());
            result
        }
    }
}

fn boot_and_wait(
    machine: &mut Machine,
    cfg: &VmConfig,
    (sink, queue): (&EventSink, &EventQueue),
    signal_fd: &SignalFd,
    started: Instant,
) -> Result<Outcome, VmError> {
    let wiring = machine.prepare(cfg, sink, started)?;
    if let Some(sig) = signal_fd.take() {
        log::info!("signal {sig} during setup: not starting the guest");
        return Err(VmError::Interrupted(sig));
    }
    signals::install_vcpu_kick_handler().map_err(|e| VmError::Host("installing the vCPU kick handler", e))?;
    let filters = Filters::new(cfg.seccomp)?;
    if cfg.seccomp != SeccompMode::Off {
        seccomp::install_sigsys_handler()?;
    }
    // Host stdin feeds the guest's console only in an interactive run.
    let mut extra: Vec<Box<dyn event_manager::MutEventSubscriber>> = Vec::new();
    if cfg.console.is_none() {
        console::enter_raw_mode();
        let input = console::StdinInput::new(wiring.serial)
            .map_err(|e| VmError::Host("setting up console input", e))?;
        extra.push(Box::new(input));
    }
    log::info!(
        "booting {} with {} vCPU(s), {} MiB RAM; setup took {} ms",
        cfg.kernel.display(),
        cfg.cpus,
        cfg.mem >> 20,
        started.elapsed().as_millis()
    );
    machine.start(started, filters)?;
    if cfg.last_run {
        privileges::drop_all_on_this_thread().map_err(SeccompError::Privileges)?;
    }
    let deadline =
        main_loop::Deadline { at: cfg.timeout.map(|t| started + t), after_init: cfg.timeout_after_init };
    let mut on_init = || log_memory(machine.pmem());
    main_loop::wait(queue, signal_fd, deadline, started, &mut on_init, extra)
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
