//! Where each vCPU was when its run ended, and how long ago it last exited to daxvmm: logged when a run
//! times out, so a hung guest says whether it was spinning, halted or never reached by its host.

use std::fmt;
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_SIPI_RECEIVED,
    KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::VcpuFd;

/// How long every vCPU must have gone without an exit to daxvmm before the run's end for
/// [`silent_for`] to report it. A booting kernel writes its console (an exit per byte) far more often;
/// an idle guest with the in-kernel LAPIC can legitimately be this quiet.
pub const SILENCE: Duration = Duration::from_secs(60);

/// What one vCPU thread saw of its guest, read when its loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuEnd {
    /// The vCPU.
    pub cpu: u8,
    /// Exits handled by daxvmm.
    pub exits: u64,
    /// Time from its last exit (or from the run's start, when there was none) to the loop's end.
    pub since_last_exit: Duration,
    /// The guest's instruction pointer, when KVM returned the registers.
    pub rip: Option<u64>,
    /// KVM's multiprocessing state (halted, runnable...), when KVM returned it.
    pub mp_state: Option<u32>,
}

/// Counts one vCPU thread's exits as they happen.
#[derive(Debug)]
pub struct ExitCounter {
    exits: u64,
    last: Instant,
}

impl ExitCounter {
    /// A counter for a run that started at `started`.
    pub fn new(started: Instant) -> Self {
        ExitCounter { exits: 0, last: started }
    }

    /// One more exit, now.
    pub fn exit(&mut self) {
        self.exits += 1;
        self.last = Instant::now();
    }

    /// The vCPU's end, with what KVM says of its state.
    pub fn end(&self, cpu: u8, vcpu: &VcpuFd) -> VcpuEnd {
        VcpuEnd {
            cpu,
            exits: self.exits,
            since_last_exit: self.last.elapsed(),
            rip: vcpu.get_regs().ok().map(|r| r.rip),
            mp_state: vcpu.get_mp_state().ok().map(|m| m.mp_state),
        }
    }
}

fn mp_state_name(state: u32) -> &'static str {
    match state {
        KVM_MP_STATE_RUNNABLE => "running",
        KVM_MP_STATE_HALTED => "halted",
        KVM_MP_STATE_UNINITIALIZED => "not yet started by the guest",
        KVM_MP_STATE_INIT_RECEIVED | KVM_MP_STATE_SIPI_RECEIVED => "being started by the guest",
        _ => "in an unusual state",
    }
}

impl fmt::Display for VcpuEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vCPU {} ", self.cpu)?;
        match self.mp_state {
            Some(s) => f.write_str(mp_state_name(s))?,
            None => f.write_str("in an unknown state")?,
        }
        if let Some(rip) = self.rip {
            write!(f, " at rip {rip:#x}")?;
        }
        write!(
            f,
            ", {} exits, the last {:.1} s before the end",
            self.exits,
            self.since_last_exit.as_secs_f64()
        )
    }
}

/// How long no vCPU had exited to daxvmm when the run ended, if that is at least [`SILENCE`].
pub fn silent_for(ends: &[VcpuEnd]) -> Option<Duration> {
    let quiet = ends.iter().map(|e| e.since_last_exit).min()?;
    (quiet >= SILENCE).then_some(quiet)
}

/// Logs, for a run that timed out, where each vCPU was and whether the guest had gone silent.
pub fn log_timeout(ends: &[VcpuEnd]) {
    let each: Vec<String> = ends.iter().map(ToString::to_string).collect();
    log::warn!("at the timeout: {}", each.join("; "));
    if let Some(quiet) = silent_for(ends) {
        log::warn!(
            "no vCPU exited to daxvmm in the last {} s of the run: the guest hung without touching a device \
             (interrupts off, a deadlock), or its host stopped running it",
            quiet.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(cpu: u8, secs: u64, mp_state: Option<u32>) -> VcpuEnd {
        VcpuEnd { cpu, exits: 7, since_last_exit: Duration::from_secs(secs), rip: Some(0x1000), mp_state }
    }

    #[test]
    fn a_run_is_silent_only_when_every_vcpu_was_quiet_long_enough() {
        assert_eq!(silent_for(&[end(0, 237, None), end(1, 61, None)]), Some(Duration::from_secs(61)));
        assert_eq!(silent_for(&[end(0, 237, None), end(1, 2, None)]), None);
        assert_eq!(silent_for(&[end(0, 59, None)]), None);
        assert_eq!(silent_for(&[]), None);
    }

    #[test]
    fn the_description_names_the_state_and_the_last_exit() {
        assert_eq!(
            end(1, 3, Some(KVM_MP_STATE_HALTED)).to_string(),
            "vCPU 1 halted at rip 0x1000, 7 exits, the last 3.0 s before the end"
        );
        let unknown = VcpuEnd { rip: None, ..end(0, 0, None) };
        assert_eq!(unknown.to_string(), "vCPU 0 in an unknown state, 7 exits, the last 0.0 s before the end");
        assert!(end(1, 0, Some(KVM_MP_STATE_UNINITIALIZED)).to_string().contains("not yet started"));
    }
}
