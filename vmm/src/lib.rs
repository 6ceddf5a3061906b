//! daxvmm: boots a Linux guest under KVM for fs-dax refcount testing. The library is everything but the
//! process: [`cli`] (one parser for `run`, `test` and `repro`), [`run`] (a guest run and its exit code),
//! [`race`] (the race runner's guests), [`logging`], and the machine underneath (KVM setup, guest memory
//! and pmem, boot, vCPUs, exits, ACPI, console, signals). The binary, `main.rs`, parses, starts the log,
//! dispatches and exits.

mod acpi_setup;
mod boot;
pub mod capture;
pub mod cli;
pub mod console;
mod exit;
mod footprint;
pub mod kernel_tree;
mod kvm_host;
pub mod logging;
mod machine;
mod main_loop;
mod mce;
mod memory;
mod pmem;
pub mod privileges;
mod procfs;
pub mod race;
mod ram_align;
pub mod run;
pub mod seccomp;
pub mod signals;
pub mod suites;
mod units;
mod vcpu;
mod vcpu_end;
mod virtio;
mod vm;

pub use vm::Outcome;
