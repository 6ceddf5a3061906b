//! Virtio device models behind a virtio-mmio transport: modern devices only (VIRTIO_F_VERSION_1, MMIO
//! register layout version 2), split virtqueues driven through the `virtio-queue` crate.
//!
//! This module owns the contract between the transport and the device models, and the two signals that
//! leave the model: a queue notification (one [`EventFd`] per queue, which the VMM can later register as
//! an ioeventfd so KVM signals the same fd without a VM exit) and an interrupt ([`IrqSignal`], which an
//! irqfd `EventFd` implements). Nothing here needs KVM.
//!
//! - [`mmio`]: the register file and the device status state machine.
//! - [`queue`]: what a device model may do to one live queue (pop heads, return used buffers).
//! - [`chain`]: a strict split-ring descriptor chain walker and the gather/scatter helpers on top of it.
//! - [`pmem`]: the virtio-pmem device (flush requests, pluggable and possibly asynchronous flush).
//! - [`blk`]: the virtio-blk device (reads, writes, flushes and GET_ID against a pluggable backend, run
//!   outside the transport).

pub mod blk;
pub mod blk_backend;
pub mod chain;
pub mod mmio;
pub mod pmem;
pub mod queue;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::io;

use vmm_sys_util::eventfd::EventFd;

/// The driver-programmed state of one queue, as [`mmio::MmioTransport::queue`] shows it.
pub use virtio_queue::{Queue, QueueState};

/// `VIRTIO_F_VERSION_1` as a feature mask: the transport always offers it and requires it.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// A device model as the transport sees it: identity, features, queue sizes and config space.
pub trait VirtioDevice: Send {
    /// The virtio device id (e.g. 27 for pmem, 2 for blk).
    fn device_id(&self) -> u32;
    /// Device-specific feature bits offered to the driver; the transport adds [`VIRTIO_F_VERSION_1`].
    fn features(&self) -> u64;
    /// Maximum size of each queue, one entry per queue; each must be a power of two in 1..=32768.
    fn queue_max_sizes(&self) -> &[u16];
    /// Fills `data` from the device config space at `offset` (relative to the config space start).
    /// Bytes past the end of the config space read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Takes a driver write to the config space; read-only config spaces ignore it.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Called when the driver resets the device (status 0), after the transport reset its queues.
    fn reset(&mut self) {}
}

/// Where the transport raises the device's interrupt. The VMM implements it with an irqfd; tests count.
pub trait IrqSignal: Send {
    /// Asserts the interrupt once; the cause is already in the transport's InterruptStatus.
    fn signal(&self) -> io::Result<()>;
}

impl IrqSignal for EventFd {
    fn signal(&self) -> io::Result<()> {
        self.write(1)
    }
}

/// Copies the `data.len()` bytes at `offset` out of `space`, zero-filling whatever lies past its end, so a
/// config space of any size answers any (already width-checked) access without indexing out of bounds.
pub fn read_config_bytes(space: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else { return };
    if let Some(src) = space.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}
