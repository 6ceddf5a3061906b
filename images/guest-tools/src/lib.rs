//! Static helpers built for daxvmm guests and test hosts.
//!
//! - [`cli`]: argument parsing of `daxvmm-guest` (`marker CODE`, `status N`).
//! - [`port`]: the debug-port writes themselves (`ioperm` + `outb`, `/dev/port` as a fallback).
//! - [`dax`]: `daxvmm-dax-check`, DAX probes (statx flag, MAP_SYNC, memcpy bandwidth).
//! - [`blk`]: `daxvmm-dax-check blk`, O_DIRECT throughput of a raw disk for the block benchmark.
//! - [`devdax`]: `daxvmm-dax-check devdax`, whether a device-dax instance maps with 2 MiB pages.
//! - [`fs_error`]: a filesystem's error events (fanotify FAN_FS_ERROR), which tell xfs's notify_failure
//!   from the generic memory-failure path.
//! - [`poison_load`]: `daxvmm-dax-check poison-load`, a load from a mapped DAX page poisoned under it.
//! - [`timer`]: `daxvmm-boot-timer`, which times a VMM from spawn to a console marker line.
//!
//! The ports and their meaning are defined in docs/guest-interface.md.

pub mod blk;
pub mod cli;
pub mod dax;
pub mod devdax;
pub mod fs_error;
pub mod poison_load;
pub mod port;
pub mod timer;
