//! [`SharedBatch`]: one batch per test binary. Cargo runs a binary's `#[test]` functions on parallel
//! threads; the first to ask runs the whole batch (one test host VM boot) and the others wait for it, then
//! each test asserts on its own case.
//!
//! ```no_run
//! use daxvmm_tests::{Case, SharedBatch};
//! fn cases() -> Vec<Case> {
//!     vec![Case::daxvmm("hello", ["--kernel", "{kernel}", "--initrd", "{initrd}", "--cmdline", "-- true"])]
//! }
//! static BATCH: SharedBatch = SharedBatch::new(cases);
//! #[test]
//! fn hello() {
//!     let Some(out) = BATCH.outcome("hello") else { return }; // skipped, with the reason printed
//!     assert_eq!(out.exit_code, 0, "{out}");
//! }
//! ```

use std::sync::OnceLock;

use crate::case::Case;
use crate::record::{report_skip, Skip};
use crate::run::{run_batch_with, Batch, Outcome};

/// A batch run at most once per process, on first use.
#[derive(Debug)]
pub struct SharedBatch {
    cell: OnceLock<Result<Batch, Skip>>,
    cases: fn() -> Vec<Case>,
    kernel_var: &'static str,
    kvm_hold: bool,
    /// Runs the batch itself instead (files to add, its own case timeout).
    run: Option<fn() -> Result<Batch, Skip>>,
}

impl SharedBatch {
    /// A batch of the cases `cases` returns; nothing runs until a test asks.
    pub const fn new(cases: fn() -> Vec<Case>) -> SharedBatch {
        SharedBatch::with_kernel(cases, "DAXVMM_GUEST_KERNEL")
    }

    /// Like [`SharedBatch::new`], but `{kernel}` is the bzImage the environment variable `kernel_var`
    /// names (a kernel variant; scripts/test.sh sets one variable per variant it builds).
    pub const fn with_kernel(cases: fn() -> Vec<Case>, kernel_var: &'static str) -> SharedBatch {
        SharedBatch { cell: OnceLock::new(), cases, kernel_var, kvm_hold: false, run: None }
    }

    /// A batch that `run` makes and runs itself (with [`crate::run::run_batch_adding`], say); it may
    /// skip before any case exists.
    pub const fn running(run: fn() -> Result<Batch, Skip>) -> SharedBatch {
        SharedBatch {
            cell: OnceLock::new(),
            cases: Vec::new,
            kernel_var: "DAXVMM_GUEST_KERNEL",
            kvm_hold: false,
            run: Some(run),
        }
    }

    /// Like [`SharedBatch::new`], for a batch that creates and destroys many KVM VMs in a row: nested,
    /// its test host VM keeps one idle KVM VM open (daxvmm-kvm-hold), so that KVM never turns SVM off and
    /// on again on every CPU between them. Under QEMU 7.2 TCG those cross-CPU calls lose an IPI now and
    /// then and wedge the test host VM (a soft lockup in kvm_destroy_vm); a batch of 58 guests met it.
    pub const fn holding_kvm(cases: fn() -> Vec<Case>) -> SharedBatch {
        SharedBatch {
            cell: OnceLock::new(),
            cases,
            kernel_var: "DAXVMM_GUEST_KERNEL",
            kvm_hold: true,
            run: None,
        }
    }

    /// The batch result, running the batch if no test has yet.
    pub fn get(&self) -> &Result<Batch, Skip> {
        self.cell.get_or_init(|| match self.run {
            Some(run) => run(),
            None => run_batch_with(&(self.cases)(), self.kernel_var, self.kvm_hold),
        })
    }

    /// The outcome of case `name` for the test of the same name. `None` when the batch was skipped (the
    /// reason is printed and recorded); panics, failing the test, when the case did not finish.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.outcome_for(name, name)
    }

    /// The outcome of case `name` for the test `test` (the name a skip is reported under).
    pub fn outcome_for(&self, test: &str, name: &str) -> Option<&Outcome> {
        match self.get() {
            Err(skip) => {
                report_skip(test, skip);
                None
            }
            Ok(batch) => match batch.get(name) {
                Ok(o) => Some(o),
                Err(why) => panic!("case {name} has no result: {why}"),
            },
        }
    }
}
