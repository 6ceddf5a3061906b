//! The fault-injection device (ACPI `_HID` DAXF0001, one MMIO window; docs/fault-injection.md): the guest
//! announces events (pin taken, truncate started, break-layout waiting, folio freed, ...) with one 64-bit
//! write each, and asks at named sync points whether to proceed with one 64-bit read each. The VMM answers
//! a sync read by holding the calling vCPU until an armed schedule releases it (in slices of a few
//! milliseconds, between which the guest re-reads and takes its interrupts), so with two or more vCPUs the
//! host forces any chosen interleaving of the guest's scenario threads.
//!
//! One job per module:
//! - `protocol`: register map, access decoding, event encoding, sync outcomes (pure);
//! - `scenario`: scenarios and schedules as data, enumeration, seeded sampling, text form (pure);
//! - `sequencer`: the state machine that enforces one schedule (pure, no threads);
//! - `event_log`: the bounded event log;
//! - `injector`: [`FaultInjector`], the thread-safe host side that holds vCPU threads;
//! - `device`: [`FaultDevice`], the MMIO handler and its [`crate::bus::BusDevice`] adapter;
//! - `rng`: the deterministic PRNG behind seeded sampling.
//!
//! The race scenarios `daxvmm test` runs and the oracle that judges them are the race crate's
//! (`race/`); this module is the device they drive.
//!
//! The ACPI description is [`crate::acpi::fault_injector_aml`]; the window is
//! [`crate::layout::FAULT_INJECTOR_BASE`]`..+`[`crate::layout::FAULT_INJECTOR_LEN`].

mod device;
mod event_log;
mod injector;
mod protocol;
mod rng;
mod scenario;
mod sequencer;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

pub use device::FaultDevice;
pub use event_log::{EventLog, LogEntry, LogSnapshot, Record};
pub use injector::{
    FaultInjector, RunObserver, Stats, DEFAULT_BOUND, DEFAULT_LOG_CAPACITY, DEFAULT_SLICE, MAX_HOLD,
};
pub use protocol::{
    decode, sync_offset, Access, Event, EventCode, KernelPoint, ProtocolError, Register, Request,
    SyncOutcome, ARG_BITS, DETAIL_BITS, EVENT_OFFSET, KERNEL_POINT_BASE, MAGIC, MAX_POINTS, MAX_THREADS,
    PFN_BITS, REG_SIZE, SYNC_BASE, SYNC_POINT_SHIFT, SYNC_THREAD_SHIFT, THREAD_ANY, VERSION, WINDOW_LEN,
};
pub use rng::SplitMix64;
pub use scenario::{Scenario, Schedule, Step, StepKind, StepSpec, ThreadSpec};
pub use sequencer::{Arrival, Deviation, Note, Sequencer, StepState, Ticket};

/// Why a scenario or schedule could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// A scenario needs at least one thread.
    #[error("a scenario needs at least one thread")]
    NoThreads,
    /// A thread tag at or above [`MAX_THREADS`].
    #[error("thread tag {thread} out of range: must be below {MAX_THREADS}")]
    ThreadOutOfRange {
        /// The tag.
        thread: u8,
    },
    /// Two threads with one tag.
    #[error("thread tag {thread} is used twice")]
    DuplicateThread {
        /// The tag.
        thread: u8,
    },
    /// A thread without steps.
    #[error("thread {thread} has no steps")]
    EmptyThread {
        /// The tag.
        thread: u8,
    },
    /// A sync point id at or above [`MAX_POINTS`].
    #[error("thread {thread}: sync point {point} out of range: must be below {MAX_POINTS}")]
    PointOutOfRange {
        /// The thread's tag.
        thread: u8,
        /// The point.
        point: u16,
    },
    /// A sync point listed twice in one thread.
    #[error("thread {thread}: sync point {point} is listed twice")]
    DuplicatePoint {
        /// The thread's tag.
        thread: u8,
        /// The point.
        point: u16,
    },
    /// Enumeration would produce more schedules than allowed; sample instead.
    #[error("{} interleavings, more than the limit of {limit}: sample them from a seed", count.map_or("over 2^128".to_string(), |c| c.to_string()))]
    TooManyInterleavings {
        /// The number of interleavings (`None`: too many to count).
        count: Option<u128>,
        /// The limit.
        limit: usize,
    },
    /// A schedule that is not an order of the scenario's steps.
    #[error("schedule does not match the scenario for thread {thread}: steps missing, extra or out of program order")]
    ScheduleMismatch {
        /// The first thread found wrong.
        thread: u8,
    },
    /// A schedule step that does not parse (`0.s3`, `1.e7` expected).
    #[error("bad schedule step '{token}': expected THREAD.sPOINT, THREAD.eCODE or THREAD.kNAME (a kernel hold point)")]
    ParseStep {
        /// The token.
        token: String,
    },
}
