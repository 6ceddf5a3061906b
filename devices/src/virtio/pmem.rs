//! The virtio-pmem device (virtio 1.2 section 5.19): a config space saying where the persistent memory
//! region is (`start`, `size`) and one request queue whose only request is FLUSH.
//!
//! A flush is slow (fdatasync/msync of the backing file), so the device never runs one itself while it
//! holds the transport: [`MmioTransport::take_flushes`] pops the requests and hands back one
//! [`PendingFlush`] per good FLUSH, the caller runs [`PmemFlush::flush`] wherever it likes (the VMM: on a
//! worker thread, without the transport's lock), and [`MmioTransport::complete_flush`] writes the result
//! and interrupts. [`MmioTransport::process_flushes`] does all three in place. A flush error reaches the
//! guest as `ret` = 1 (Linux turns any nonzero into -EIO); it is never dropped.
//!
//! Requests that are not a well-formed FLUSH are answered at once and never reach the backend: a chain
//! that cannot be walked (bad index, loop, indirect, length overflow) goes back with length 0 and nothing
//! written, since no response buffer can be trusted in it; any other malformed chain, or an unknown
//! request type, gets `ret` = 1 in its trailing device-writable bytes if there are at least 4 of them in
//! guest memory, else length 0.

use std::io;

use log::warn;
use thiserror::Error;
use virtio_bindings::virtio_ids::VIRTIO_ID_PMEM;
use virtio_queue::desc::split::Descriptor;
use vm_memory::GuestAddress;

use super::chain;
use super::mmio::MmioTransport;
use super::queue::QueueCtx;
use super::{read_config_bytes, VirtioDevice};

/// The request type of a flush (the only one).
pub const VIRTIO_PMEM_REQ_TYPE_FLUSH: u32 = 0;
/// `ret` of a flush that reached stable storage.
pub const VIRTIO_PMEM_RET_OK: u32 = 0;
/// `ret` of anything else: a failed flush, an unknown type, a malformed request.
pub const VIRTIO_PMEM_RET_ERR: u32 = 1;
/// Size of the request queue.
pub const PMEM_QUEUE_SIZE: u16 = 128;
/// Index of the request queue.
pub const PMEM_REQUEST_QUEUE: usize = 0;

/// Bytes of `type` in a request and of `ret` in a response.
const WORD: usize = 4;

/// Makes the region's contents durable; the VMM implements it with fdatasync or msync of the backing
/// file.
pub trait PmemFlush: Send {
    /// Flushes everything written to the region so far.
    fn flush(&mut self) -> io::Result<()>;
}

/// Errors describing a pmem device.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PmemError {
    /// The region is empty or wraps the guest address space.
    #[error("pmem region {start:#x}+{size:#x} is empty or runs past the end of the address space")]
    BadRegion {
        /// Guest-physical start.
        start: u64,
        /// Size in bytes.
        size: u64,
    },
}

/// The virtio-pmem device model.
#[derive(Debug)]
pub struct Pmem {
    config: [u8; 16],
    start: u64,
    size: u64,
}

impl Pmem {
    /// A device for the region `start..start + size` of guest-physical memory.
    pub fn new(start: u64, size: u64) -> Result<Self, PmemError> {
        if size == 0 || start.checked_add(size).is_none() {
            return Err(PmemError::BadRegion { start, size });
        }
        let mut config = [0u8; 16];
        config[..8].copy_from_slice(&start.to_le_bytes());
        config[8..].copy_from_slice(&size.to_le_bytes());
        Ok(Self { config, start, size })
    }

    /// Guest-physical start of the region.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Size of the region.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Pops every request the driver made available: answers the bad ones and returns the flushes,
    /// tagged with `epoch` so a completion after a reset is recognised.
    pub fn take_requests(&mut self, ctx: &mut QueueCtx<'_>, epoch: u64) -> Vec<PendingFlush> {
        let mut flushes = Vec::new();
        for head in ctx.pop_heads() {
            match parse(ctx, head) {
                Parsed::Flush(response) => flushes.push(PendingFlush { head, response, epoch }),
                Parsed::Answer(ret, response) => respond(ctx, head, &response, ret),
                Parsed::Unusable => ctx.add_used(head, 0),
            }
        }
        flushes
    }
}

impl VirtioDevice for Pmem {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_PMEM
    }

    fn features(&self) -> u64 {
        // Neither VIRTIO_PMEM_F_SHMEM_REGION nor indirect descriptors nor EVENT_IDX.
        0
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[PMEM_QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
}

/// A good FLUSH request waiting for its flush to finish.
#[derive(Debug)]
#[must_use = "a flush not completed leaves the guest waiting forever"]
pub struct PendingFlush {
    head: u16,
    response: Vec<(GuestAddress, usize)>,
    epoch: u64,
}

impl PendingFlush {
    /// The chain's head index.
    pub fn head(&self) -> u16 {
        self.head
    }

    /// The transport epoch the request was taken in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

enum Parsed {
    /// A good FLUSH; its response goes to these guest ranges.
    Flush(Vec<(GuestAddress, usize)>),
    /// Answer at once with this `ret` into these ranges (empty: none usable, length 0).
    Answer(u32, Vec<(GuestAddress, usize)>),
    /// The chain could not be walked: return it with length 0.
    Unusable,
}

fn parse(ctx: &QueueCtx<'_>, head: u16) -> Parsed {
    let mem = ctx.mem();
    let descs = match chain::walk(mem, ctx.desc_table(), ctx.size(), head) {
        Ok(d) => d,
        Err(e) => {
            warn!("virtio-pmem: request {head}: {e}");
            return Parsed::Unusable;
        }
    };
    let response = response_segments(&descs);
    let fail = |why: &str| {
        warn!("virtio-pmem: request {head}: {why}");
        Parsed::Answer(VIRTIO_PMEM_RET_ERR, response.clone().unwrap_or_default())
    };
    if let Err(e) = chain::check_in_memory(mem, &descs) {
        return fail(&e.to_string());
    }
    if !chain::well_ordered(&descs) {
        return fail("a device-readable buffer follows a device-writable one");
    }
    let mut word = [0u8; WORD];
    let read = chain::prefix(chain::leading_readable(&descs), WORD)
        .is_some_and(|segments| chain::read_segments(mem, &segments, &mut word));
    if !read {
        return fail("fewer than 4 device-readable bytes for the request type");
    }
    let Some(response) = response.clone() else {
        return fail("fewer than 4 device-writable bytes for the response");
    };
    match u32::from_le_bytes(word) {
        VIRTIO_PMEM_REQ_TYPE_FLUSH => Parsed::Flush(response),
        other => fail(&format!("unknown request type {other}")),
    }
}

/// Where `ret` goes: the first 4 bytes of the chain's trailing device-writable buffers.
fn response_segments(descs: &[Descriptor]) -> Option<Vec<(GuestAddress, usize)>> {
    chain::prefix(chain::trailing_writable(descs), WORD)
}

fn respond(ctx: &mut QueueCtx<'_>, head: u16, response: &[(GuestAddress, usize)], ret: u32) {
    let written = !response.is_empty() && chain::write_segments(ctx.mem(), response, &ret.to_le_bytes());
    ctx.add_used(head, if written { WORD as u32 } else { 0 });
}

impl MmioTransport<Pmem> {
    /// Pops the driver's requests (call when the request queue's [`MmioTransport::queue_evt`] fires):
    /// malformed ones are answered here, good FLUSHes come back for the caller to flush and then
    /// [`Self::complete_flush`]. Empty while the device is not live.
    pub fn take_flushes(&mut self) -> Vec<PendingFlush> {
        let epoch = self.epoch();
        self.with_queue(PMEM_REQUEST_QUEUE, |pmem, ctx| pmem.take_requests(ctx, epoch)).unwrap_or_default()
    }

    /// Answers `flush` with the backend's `result` (an error becomes `ret` = 1), puts it on the used ring
    /// and interrupts. Returns false, writing nothing, if the device was reset or stopped since the
    /// request was taken: its buffers belong to the driver again.
    pub fn complete_flush(&mut self, flush: PendingFlush, result: io::Result<()>) -> bool {
        self.complete_flushes([(flush, result)]) == 1
    }

    /// [`Self::complete_flush`] for a batch, with one interrupt for all of it; returns how many were
    /// completed (the others belong to a device since reset or stopped).
    pub fn complete_flushes(
        &mut self,
        done: impl IntoIterator<Item = (PendingFlush, io::Result<()>)>,
    ) -> usize {
        let epoch = self.epoch();
        let complete = |_: &mut Pmem, ctx: &mut QueueCtx<'_>| {
            let mut n = 0;
            for (flush, result) in done.into_iter().filter(|(f, _)| f.epoch == epoch) {
                let ret = match result {
                    Ok(()) => VIRTIO_PMEM_RET_OK,
                    Err(e) => {
                        warn!("virtio-pmem: flush failed, reporting an error to the guest: {e}");
                        VIRTIO_PMEM_RET_ERR
                    }
                };
                respond(ctx, flush.head, &flush.response, ret);
                n += 1;
            }
            n
        };
        self.with_queue(PMEM_REQUEST_QUEUE, complete).unwrap_or(0)
    }

    /// Takes, flushes (one backend call per request) and completes in place, with one interrupt for the
    /// batch; returns how many flushes were completed. If the batch itself broke the queue (a later head
    /// the used ring cannot take), the device needs a reset and nothing could be completed, so the
    /// backend is not called at all.
    pub fn process_flushes(&mut self, backend: &mut dyn PmemFlush) -> usize {
        let taken = self.take_flushes();
        if !self.is_live() {
            return 0;
        }
        let done: Vec<_> = taken.into_iter().map(|f| (f, backend.flush())).collect();
        self.complete_flushes(done)
    }
}
