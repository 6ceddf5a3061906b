//! Shared by the guest programs `daxvmm-refcount-test` (the invariant checks) and `daxvmm-race` (the race
//! scenarios driven by daxvmm's fault injector): the dax_refcount driver's ioctl ABI and the system-call
//! layer around it.

pub mod abi;
pub mod sys;
