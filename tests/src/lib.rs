//! Harness for booting guests under daxvmm in integration tests, directly or nested in the test host VM.
//!
//! - [`host`]: where guests can boot here ([`Where::Direct`] on hardware KVM, [`Where::Nested`] inside the
//!   test host VM when only QEMU is usable) and the artifacts the tests need (env vars set by scripts/test.sh).
//! - [`case`]: a [`Case`] (one VMM run), its `{kernel}`/`{initrd}` placeholders and its batch-file line.
//! - [`markers`]: the test host VM's console markers, defined once.
//! - [`console`]: parsing the test host VM's console markers into per-case results.
//! - [`test_host`]: the test host VM itself: packing, QEMU, slots, the stall watchdog, how a run ended.
//! - [`process`]: running a host process with a deadline and capturing its output.
//! - [`run`]: [`run_batch`], which boots one test host VM for all cases (Nested) or runs each (Direct).
//! - [`batch_file`]: batch files of shell cases run on this host with the markers; the default artifacts.
//! - [`bench`]: the benchmarks' batches, the parsing of their figures, the statistics and the tables.
//! - [`bench_blk`]: the virtio-blk benchmark: O_DIRECT I/O in a daxvmm guest and a QEMU guest.
//! - [`bench_race`]: the race benchmark: mutant kills by forced schedules, sleeps and sequential checks.
//! - [`bench_suites`]: fstests and ndctl's tests under daxvmm and under QEMU, side by side.
//! - [`shared`]: [`SharedBatch`], one batch per test binary shared by its `#[test]` functions.
//! - [`record`]: [`Skip`], and the boot log (boots, skips, test host VM faults and reruns).
//! - [`summary`]: the closing lines of scripts/test.sh, from cargo's output and the boot log.
//! - [`ndctl_json`]: `ndctl list` JSON from two VMMs, flattened and compared field by field.
//! - [`reject`]: checks that daxvmm refuses bad input (no guest needed).
//! - [`suite_cases`]: the standard-suite cases: the suite image, a build tree packed for the test host VM.
//!
//! A test that cannot run here (no KVM, no QEMU, an artifact missing) is skipped: it prints
//! `SKIP: <test>: <reason>` on stderr, records the skip, and passes.
//!
//! Environment: `DAXVMM_BIN`, `DAXVMM_GUEST_KERNEL`, `DAXVMM_GUEST_INITRD` (the artifacts; scripts/test.sh
//! sets them), `DAXVMM_BOOT_LOG` (the boot log), `DAXVMM_TEST_WHERE=direct|nested|skip` (override the
//! detection), `DAXVMM_TEST_CASE_TIMEOUT` (seconds a case may take, default 300), `DAXVMM_TEST_VERBOSE=1`
//! (echo the test host VM's console to stderr as it arrives).

pub mod batch_file;
pub mod bench;
pub mod bench_blk;
pub mod bench_boot;
pub mod bench_pmem;
pub mod bench_race;
pub mod bench_suites;
pub mod case;
pub mod console;
pub mod host;
pub mod markers;
pub mod ndctl_json;
pub mod process;
pub mod record;
pub mod reject;
pub mod run;
pub mod shared;
pub mod suite_cases;
pub mod summary;
pub mod test_host;

pub use case::{
    Case, Vmm, ALWAYS_EMULATION_FAULTS, NMI_UNANSWERED, NO_VCPU_EXIT, RACE_NEVER_STARTED, TRIPLE_FAULT,
    VCPU_NOT_KICKED,
};
pub use host::{Artifacts, Where};
pub use record::Skip;
pub use run::{run_batch, Batch, Outcome};
pub use shared::SharedBatch;
