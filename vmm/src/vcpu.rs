//! vCPU creation, boot-state setup and the vCPU threads: one thread per vCPU, every exit handed to
//! [`crate::exit::handle_exit`], the end of the run reported to the VMM's main loop, and [`Vcpus::stop`],
//! which gets every thread out of the guest and joins it before guest memory may be unmapped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use daxvmm_devices::events::{EventSink, GuestEvent};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vmm_sys_util::signal::Killable;

use crate::boot::cpuid::{apply_xsave_policy, patch_cpuid, XsavePolicy};
use crate::boot::regs::{self, RegsError};
use crate::exit::{handle_exit, Action, Buses, Stop};
use crate::mce::{self, MceError, MceSupport};
use crate::seccomp::{Filters, ThreadKind};
use crate::signals;
use crate::vcpu_end::{ExitCounter, VcpuEnd};

/// Errors creating vCPUs.
#[derive(Debug, Error)]
pub enum VcpuError {
    /// KVM refused an ioctl.
    #[error("KVM {what} failed for vCPU {cpu}: {source}")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The vCPU.
        cpu: u8,
        /// What KVM said.
        source: kvm_ioctls::Error,
    },
    /// Register setup failed.
    #[error(transparent)]
    Regs(#[from] RegsError),
    /// The machine-check banks could not be set up.
    #[error("vCPU {0}: {1}")]
    Mce(u8, MceError),
    /// The thread could not be started.
    #[error("cannot start the thread for vCPU {0}: {1}")]
    Thread(u8, std::io::Error),
}

/// Creates vCPU `cpu` of `cpus` with its CPUID, MSRs and LAPIC set; the boot vCPU (0) also gets the
/// registers that enter the kernel at `entry`. The others wait for the guest's INIT/SIPI. With `mce`,
/// the vCPU gets machine-check banks and is told it can recover from uncorrected errors.
pub fn create(
    kvm: &Kvm,
    vm: &VmFd,
    (cpu, cpus): (u8, u8),
    entry: u64,
    xsave: XsavePolicy,
    mce: Option<MceSupport>,
) -> Result<VcpuFd, VcpuError> {
    let err = |what| move |source| VcpuError::Kvm { what, cpu, source };
    let vcpu = vm.create_vcpu(u64::from(cpu)).map_err(err("KVM_CREATE_VCPU"))?;
    let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(err("KVM_GET_SUPPORTED_CPUID"))?;
    patch_cpuid(cpuid.as_mut_slice(), cpu, cpus, kvm.check_extension(Cap::TscDeadlineTimer));
    apply_xsave_policy(cpuid.as_mut_slice(), xsave);
    if mce.is_some() {
        mce::advertise(cpuid.as_mut_slice());
    }
    vcpu.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;
    if let Some(support) = mce {
        mce::setup(&vcpu, support).map_err(|e| VcpuError::Mce(cpu, e))?;
    }
    regs::setup_msrs(&vcpu, cpu)?;
    regs::setup_lapic(&vcpu, cpu)?;
    if cpu == 0 {
        regs::setup_sregs(&vcpu, cpu)?;
        regs::setup_regs(&vcpu, cpu, entry)?;
        regs::setup_fpu(&vcpu, cpu)?;
    }
    Ok(vcpu)
}

/// How long [`Vcpus::stop`] keeps kicking a vCPU thread before it gives up on it.
pub const STOP_LIMIT: Duration = Duration::from_secs(10);
/// How often a vCPU thread is kicked while it has not stopped: a kick that lands just before the thread
/// enters KVM_RUN is lost (the handler runs, then KVM_RUN blocks), so kicks repeat until it has stopped.
const KICK_EVERY: Duration = Duration::from_millis(1);

/// The running vCPU threads of one guest run, and the flag that tells them to stop.
#[derive(Debug)]
pub struct Vcpus {
    threads: Vec<(u8, JoinHandle<VcpuEnd>)>,
    stop: Arc<AtomicBool>,
}

impl Vcpus {
    /// Starts one thread per vCPU. The kick handler must be installed ([`signals::install_vcpu_kick_handler`]).
    pub fn spawn(
        fds: Vec<VcpuFd>,
        buses: Arc<Buses>,
        events: EventSink,
        started: Instant,
        filters: Filters,
    ) -> Result<Self, VcpuError> {
        let mut vcpus =
            Vcpus { threads: Vec::with_capacity(fds.len()), stop: Arc::new(AtomicBool::new(false)) };
        for (cpu, fd) in fds.into_iter().enumerate() {
            let cpu = cpu as u8;
            let (buses, events, stop) = (buses.clone(), events.clone(), vcpus.stop.clone());
            let filters = filters.clone();
            let handle = std::thread::Builder::new()
                .name(format!("vcpu{cpu}"))
                .spawn(move || run_loop(fd, cpu, &buses, &events, &stop, started, &filters))
                // Threads started so far are stopped when `vcpus` drops.
                .map_err(|e| VcpuError::Thread(cpu, e))?;
            vcpus.threads.push((cpu, handle));
        }
        Ok(vcpus)
    }

    /// Stops every vCPU thread and joins it: sets the stop flag, then kicks each thread out of KVM_RUN
    /// (or out of a held sync point's slice) until it has returned, for at most `limit` in all. Returns
    /// where each vCPU that stopped ended, and the vCPUs that did not stop: their threads may still use
    /// guest memory, which must then stay mapped.
    pub fn stop(&mut self, limit: Duration) -> Stopped {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + limit;
        let sig = signals::vcpu_kick_signal();
        let mut stopped = Stopped::default();
        for (cpu, handle) in self.threads.drain(..) {
            while !handle.is_finished() && Instant::now() < deadline {
                if let Err(e) = handle.kill(sig) {
                    log::debug!("kicking vCPU {cpu}: {e}");
                }
                std::thread::sleep(KICK_EVERY);
            }
            if handle.is_finished() {
                match handle.join() {
                    Ok(end) => stopped.ends.push(end),
                    Err(_) => log::error!("vCPU {cpu}'s thread panicked"),
                }
            } else {
                log::error!(
                    "vCPU {cpu} did not leave the guest within {} s of the run's end",
                    limit.as_secs()
                );
                stopped.stuck.push(cpu);
            }
        }
        stopped
    }
}

/// What [`Vcpus::stop`] found.
#[derive(Debug, Default)]
pub struct Stopped {
    /// Where each joined vCPU ended.
    pub ends: Vec<VcpuEnd>,
    /// The vCPUs whose threads did not stop.
    pub stuck: Vec<u8>,
}

impl Drop for Vcpus {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop(STOP_LIMIT);
        }
    }
}

/// One vCPU's thread: enters the guest until the run stops or its exit handler says stop; a stop the
/// guest caused goes to `events`. Returns where the vCPU ended.
fn run_loop(
    mut vcpu: VcpuFd,
    cpu: u8,
    buses: &Buses,
    events: &EventSink,
    stop: &AtomicBool,
    started: Instant,
    filters: &Filters,
) -> VcpuEnd {
    let mut exits = ExitCounter::new(started);
    // Before the guest runs: every exit it causes is handled on this thread.
    if let Err(e) = filters.install(ThreadKind::Vcpu) {
        log::error!("vCPU {cpu}: {e}");
        events.send(GuestEvent::VcpuFailed(cpu));
        return exits.end(cpu, &vcpu);
    }
    if cpu == 0 {
        log::info!("entering the guest kernel {} ms after start", started.elapsed().as_millis());
    }
    // Once the guest has powered off, reset or crashed, nothing it does afterwards matters.
    while !stop.load(Ordering::SeqCst) && !events.stopping() {
        let action = match vcpu.run() {
            Ok(exit) => {
                let exit = exit.into();
                exits.exit(&exit);
                handle_exit(exit, buses, cpu)
            }
            // A kick (EINTR) or a pending signal: the loop condition decides.
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Action::Continue,
            Err(e) => Action::Stop(Stop::Fatal(format!("KVM_RUN failed: {e}"))),
        };
        let why = match action {
            Action::Continue => continue,
            Action::MachineCheck(gpa) => match mce::deliver(&mut vcpu, gpa) {
                Ok(()) => {
                    log::info!("vCPU {cpu}: machine check for a load from poisoned pmem at {gpa:#x}");
                    continue;
                }
                Err(e) => Stop::Fatal(format!("machine check for poisoned pmem at {gpa:#x}: {e}")),
            },
            Action::Stop(why) => why,
        };
        let event = match why {
            Stop::Reset => GuestEvent::Reset,
            Stop::PowerOff => GuestEvent::PowerOff,
            Stop::Crash => GuestEvent::Panic(1),
            // A guest that asked for a reset may fault on its way there (e.g. jumping to the BIOS reset
            // vector we do not have); that is not an error of ours.
            Stop::Fatal(why) if events.stopping() || stop.load(Ordering::SeqCst) => {
                log::debug!("vCPU {cpu} after the guest stopped: {why}");
                break;
            }
            Stop::Fatal(why) => {
                log::error!("vCPU {cpu}: {why}");
                GuestEvent::VcpuFailed(cpu)
            }
        };
        events.send(event);
        break;
    }
    log::debug!("vCPU {cpu} exits {}", exits.kinds());
    exits.end(cpu, &vcpu)
}
