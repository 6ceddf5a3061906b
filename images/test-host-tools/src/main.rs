//! `daxvmm-kvm-hold`: keeps one idle KVM VM (in-kernel irqchip, one vCPU that never runs) open for the
//! life of the test host VM, so that daxvmm's VMs are never the first or the last one.
//!
//! Why: creating the first VM and destroying the last one make KVM flip kernel-wide state with
//! cross-CPU calls: `preempt_notifier_key` (a static key inside `__schedule`, re-patched with
//! text_poke_bp while the other CPU runs that very code), SVM enable/disable on every CPU, and the local
//! APIC static keys. Under QEMU TCG's multi-threaded nested SVM that code patching rarely wedges the
//! test host kernel: once both of its CPUs sat at the preempt-notifier jump site in `__schedule`, and
//! once the CPU destroying daxvmm's VM soft-locked up. With a VM held open, none of it happens.
//! An experiment, off by default (`test-host-vm batch --kvm-hold`, tests/src/bin/test-host-vm.rs): not shown to lower the wedge
//! rate (README, "Tests and benchmarks"); 600 create/destroy cycles under load did not wedge either.
//!
//! usage: daxvmm-kvm-hold [--ready FILE]   hold a VM until killed; create FILE once it is open
//!        daxvmm-kvm-hold --cycle N        create and destroy N VMs, then exit (to reproduce the hang)

use std::process::ExitCode;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use thiserror::Error;

/// Why the tool could not hold (or cycle) a VM.
#[derive(Debug, Error)]
enum HoldError {
    /// /dev/kvm could not be opened (no KVM loaded, or no permission).
    #[error("opening /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("{ioctl}: {source}")]
    Ioctl {
        /// The ioctl.
        ioctl: &'static str,
        /// What KVM said.
        source: kvm_ioctls::Error,
    },
    /// `--cycle` with something that is not a count.
    #[error("--cycle wants a whole number of VMs, got '{0}'")]
    BadCount(String),
    /// Arguments this tool does not take.
    #[error("usage: daxvmm-kvm-hold [--ready FILE] | --cycle N")]
    Usage,
    /// The ready file could not be written.
    #[error("writing {path}: {source}")]
    Ready {
        /// The file.
        path: String,
        /// What the kernel said.
        source: std::io::Error,
    },
}

/// A VM like daxvmm's: the in-kernel irqchip, and a vCPU whose local APIC holds the APIC static keys.
fn open_vm(kvm: &Kvm) -> Result<(VmFd, VcpuFd), HoldError> {
    let ioctl = |ioctl| move |source| HoldError::Ioctl { ioctl, source };
    let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
    vm.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
    let vcpu = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
    Ok((vm, vcpu))
}

fn run(args: &[String]) -> Result<(), HoldError> {
    let kvm = Kvm::new().map_err(HoldError::OpenKvm)?;
    match args {
        [] => hold(&kvm, None),
        [flag, file] if flag == "--ready" => hold(&kvm, Some(file)),
        [flag, n] if flag == "--cycle" => {
            let n: u32 = n.parse().map_err(|_| HoldError::BadCount(n.clone()))?;
            for _ in 0..n {
                drop(open_vm(&kvm)?);
            }
            Ok(())
        }
        _ => Err(HoldError::Usage),
    }
}

fn hold(kvm: &Kvm, ready: Option<&String>) -> Result<(), HoldError> {
    let _held = open_vm(kvm)?;
    if let Some(f) = ready {
        std::fs::write(f, "ready\n").map_err(|source| HoldError::Ready { path: f.clone(), source })?;
    }
    loop {
        std::thread::park();
    }
}

#[allow(clippy::print_stderr)] // A tool's only way to say why it failed.
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daxvmm-kvm-hold: {e}");
            ExitCode::FAILURE
        }
    }
}
