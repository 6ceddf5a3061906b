//! Race testing, `daxvmm test` and `daxvmm repro`, in one place: which scenarios exist and how their
//! threads interleave, which runs a session makes, how each run is judged from the host, how results are
//! reported, and how a violation is written down and replayed. The guest is booted by a [`GuestVm`] the
//! VMM provides, so everything here is unit-tested without KVM.
//!
//! One job per module:
//! - `library`: the scenario table, the host's view of each scenario of `daxvmm_scenarios::ScenarioId`;
//! - `mutants`: the deliberate bugs of the `mutants` kernel variant and the scenarios that kill each;
//! - `oracle`: judges a run from its fault log, the pmem contents and the guest's console;
//! - `holds`: whether a forced run's kernel holds happened where its schedule says;
//! - `plan`: which runs a session makes, in guest order, and the guest program's `--plan`;
//! - `shard`: `--shard I/N`, the stable split of a plan across machines;
//! - `session`: the fault injector's run observer (arms each run's schedule, applies the oracle);
//! - `verdict`: guest console and host records turned into per-run results;
//! - `report`: the table, TAP and JUnit XML;
//! - `repro`: the repro file format and what counts as the same violation;
//! - `guest`: what the runner needs from the VMM ([`GuestVm`]);
//! - `runner`: `daxvmm test` and `daxvmm repro` from options to exit code.
//!
//! The scenario names, thread counts and sync point ids the guest program shares are in the
//! dependency-free crate `daxvmm-scenarios`.

mod guest;
mod holds;
mod library;
mod mutants;
mod oracle;
mod plan;
mod report;
mod repro;
mod runner;
mod session;
mod shard;
mod verdict;

pub use daxvmm_scenarios::ScenarioId;
pub use guest::{
    BootOutput, BootSpec, GuestEnd, GuestVm, PmemReader, Transport, Transports, TransportsError,
};
pub use holds::{check_holds, kernel_order};
pub use library::{entry, find as find_scenario, library, LibraryEntry};
pub use mutants::{find as find_mutant, Mutant, MUTANTS};
pub use oracle::{
    check_data, check_order, check_pin_write, observed_order, scan_log, stale_window, summarize, Finding,
    FindingKind, RunSummary, BLOCK, MARKER_NEW_BLOCK,
};
pub use report::{table as race_table, Row as RaceRow};
pub use runner::{
    repro, test, BootOptions, RaceError, ReproOptions, TestOptions, EXIT_NOT_REPRODUCED, EXIT_VIOLATIONS,
};
pub use shard::{Shard, ShardError, MAX_SHARDS};
