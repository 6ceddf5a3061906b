//! vCPU creation, boot-state setup and the run loop: one thread per vCPU, every exit handed to
//! [`crate::exit::handle_exit`], and the end of the run reported to the VMM's main loop.

use std::sync::Arc;
use std::time::Instant;

use daxvmm_devices::events::{EventSink, GuestEvent};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use thiserror::Error;

use crate::boot::cpuid::{apply_xsave_policy, patch_cpuid, XsavePolicy};
use crate::boot::regs::{self, RegsError};
use crate::exit::{handle_exit, Action, Buses, Stop};

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
    /// The thread could not be started.
    #[error("cannot start the thread for vCPU {0}: {1}")]
    Thread(u8, std::io::Error),
}

/// Creates vCPU `cpu` of `cpus` with its CPUID, MSRs and LAPIC set; the boot vCPU (0) also gets the
/// registers that enter the kernel at `entry`. The others wait for the guest's INIT/SIPI.
pub fn create(
    kvm: &Kvm,
    vm: &VmFd,
    cpu: u8,
    cpus: u8,
    entry: u64,
    xsave: XsavePolicy,
) -> Result<VcpuFd, VcpuError> {
    let err = |what| move |source| VcpuError::Kvm { what, cpu, source };
    let vcpu = vm.create_vcpu(u64::from(cpu)).map_err(err("KVM_CREATE_VCPU"))?;
    let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(err("KVM_GET_SUPPORTED_CPUID"))?;
    patch_cpuid(cpuid.as_mut_slice(), cpu, cpus, kvm.check_extension(Cap::TscDeadlineTimer));
    apply_xsave_policy(cpuid.as_mut_slice(), xsave);
    vcpu.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;
    regs::setup_msrs(&vcpu, cpu)?;
    regs::setup_lapic(&vcpu, cpu)?;
    if cpu == 0 {
        regs::setup_sregs(&vcpu, cpu)?;
        regs::setup_regs(&vcpu, cpu, entry)?;
        regs::setup_fpu(&vcpu, cpu)?;
    }
    Ok(vcpu)
}

/// Runs `vcpu` on its own thread until its exit handler says stop; the reason goes to `events`.
pub fn spawn(
    mut vcpu: VcpuFd,
    cpu: u8,
    buses: Arc<Buses>,
    events: EventSink,
    started: Instant,
) -> Result<(), VcpuError> {
    std::thread::Builder::new()
        .name(format!("vcpu{cpu}"))
        .spawn(move || {
            if cpu == 0 {
                log::info!("entering the guest kernel {} ms after start", started.elapsed().as_millis());
            }
            // Once the guest has powered off, reset or crashed, nothing it does afterwards matters.
            while !events.stopping() {
                let action = match vcpu.run() {
                    Ok(exit) => handle_exit(exit.into(), &buses, cpu),
                    Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Action::Continue,
                    Err(e) => Action::Stop(Stop::Fatal(format!("KVM_RUN failed: {e}"))),
                };
                match action {
                    Action::Continue => {}
                    Action::Stop(stop) => {
                        events.send(match stop {
                            Stop::Reset => GuestEvent::Reset,
                            Stop::PowerOff => GuestEvent::PowerOff,
                            Stop::Crash => GuestEvent::Panic(1),
                            // A guest that asked for a reset may fault on its way there (e.g. jumping to
                            // the BIOS reset vector we do not have); that is not an error of ours.
                            Stop::Fatal(why) if events.stopping() => {
                                log::debug!("vCPU {cpu} after the guest stopped: {why}");
                                return;
                            }
                            Stop::Fatal(why) => {
                                log::error!("vCPU {cpu}: {why}");
                                GuestEvent::VcpuFailed(cpu)
                            }
                        });
                        return;
                    }
                }
            }
        })
        .map_err(|e| VcpuError::Thread(cpu, e))?;
    Ok(())
}
