//! Where each vCPU was when its run ended, and how long ago it last exited to daxvmm: logged when a run
//! times out, so a hung guest says whether it was spinning, halted or never reached by its host. Also
//! the exits by kind before and after the guest's init marker, logged at debug level for boot profiles.

use std::fmt;
use std::time::{Duration, Instant};

use daxvmm_devices::layout::{COM1_LEN, COM1_PORT, DEBUG_PORT};
use kvm_bindings::{
    KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_SIPI_RECEIVED,
    KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::VcpuFd;

use crate::exit::Exit;

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

/// The kinds of exit a boot profile tells apart.
const KINDS: [&str; 4] = ["serial port", "other port I/O", "MMIO", "other"];

/// Which of [`KINDS`] an exit is.
fn kind(exit: &Exit<'_>) -> usize {
    let serial = |port: u16| (COM1_PORT..COM1_PORT + COM1_LEN).contains(&port);
    match exit {
        Exit::IoIn { port, .. } | Exit::IoOut { port, .. } if serial(*port) => 0,
        Exit::IoIn { .. } | Exit::IoOut { .. } => 1,
        Exit::MmioRead { .. } | Exit::MmioWrite { .. } => 2,
        _ => 3,
    }
}

/// Counts one vCPU thread's exits as they happen, by kind, before and after the first write to the
/// debug port (the guest's /init writes its marker there).
#[derive(Debug)]
pub struct ExitCounter {
    exits: u64,
    last: Instant,
    /// Exits per kind: `[0]` before the marker, `[1]` from it on.
    by_kind: [[u64; KINDS.len()]; 2],
    after_marker: bool,
}

impl ExitCounter {
    /// A counter for a run that started at `started`.
    pub fn new(started: Instant) -> Self {
        ExitCounter { exits: 0, last: started, by_kind: [[0; KINDS.len()]; 2], after_marker: false }
    }

    /// One more exit, now.
    pub fn exit(&mut self, exit: &Exit<'_>) {
        self.exits += 1;
        self.last = Instant::now();
        if matches!(exit, Exit::IoOut { port: DEBUG_PORT, .. }) {
            self.after_marker = true;
        }
        self.by_kind[usize::from(self.after_marker)][kind(exit)] += 1;
    }

    /// The exits by kind, as "before init: serial port 12, ...; after: ...".
    pub fn kinds(&self) -> String {
        let phase = |counts: &[u64; KINDS.len()]| {
            KINDS.iter().zip(counts).map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        };
        format!("before the init marker: {}; after: {}", phase(&self.by_kind[0]), phase(&self.by_kind[1]))
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
    fn exits_are_counted_by_kind_before_and_after_the_init_marker() {
        let mut c = ExitCounter::new(Instant::now());
        let (mut byte, one) = ([0u8; 1], [1u8; 1]);
        c.exit(&Exit::IoOut { port: COM1_PORT + 5, data: &one });
        c.exit(&Exit::IoIn { port: COM1_PORT, data: &mut byte });
        c.exit(&Exit::IoOut { port: 0x80, data: &one });
        c.exit(&Exit::MmioWrite { addr: 0xfeb0_0000, data: &one });
        c.exit(&Exit::Hlt);
        // The marker itself is the first exit after it; the serial port's last port (COM1 + 8) is not serial.
        c.exit(&Exit::IoOut { port: DEBUG_PORT, data: &one });
        c.exit(&Exit::IoOut { port: COM1_PORT + COM1_LEN, data: &one });
        c.exit(&Exit::MmioRead { addr: 0xfeb0_0000, data: &mut byte });
        assert_eq!(c.exits, 8);
        assert_eq!(
            c.kinds(),
            "before the init marker: serial port 2, other port I/O 1, MMIO 1, other 1; \
             after: serial port 0, other port I/O 2, MMIO 1, other 0"
        );
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
