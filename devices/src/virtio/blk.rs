//! The virtio-blk device (virtio 1.2 section 5.2): a config space giving the disk's size in 512-byte
//! sectors, and one request queue carrying reads, writes, flushes, GET_ID and, on a writable disk,
//! discards (the backend punches holes). No write-zeroes, zones or multiqueue are offered.
//!
//! This module owns the parsing and bounds checking of requests and the copies between guest memory and
//! a [`BlkBackend`]; where the backend lives (a file, memory) is the caller's. Disk I/O is slow, so it
//! never runs under the transport: [`MmioTransport::take_requests`] pops the requests and hands back one
//! [`PendingBlk`] per well-formed one, the caller runs [`PendingBlk::execute`] wherever it likes (the
//! VMM: on a worker thread, without the transport's lock), and [`MmioTransport::complete_requests`]
//! writes the status bytes, returns the chains and interrupts once for the batch.
//! [`MmioTransport::process_requests`] does all three in place. A backend error reaches the guest as
//! VIRTIO_BLK_S_IOERR; it is never dropped.
//!
//! Requests that cannot be served are answered at once and never reach the backend: a chain that cannot
//! be walked (bad index, loop, indirect, length overflow) goes back with length 0 and nothing written,
//! since no buffer in it can be trusted; so does one with no device-writable byte at its end for the
//! status. Any other malformed request (buffers outside guest memory, readable after writable, a short
//! header, data in the wrong direction or not a whole number of sectors, sectors past the end of the
//! disk, a write to a read-only disk) gets VIRTIO_BLK_S_IOERR, an unknown type VIRTIO_BLK_S_UNSUPP.
//! FLUSH ignores data buffers and GET_ID fills what it is given up to 20 bytes, as Linux never sends
//! either with more, and refusing them would gain nothing.
//!
//! Data moves between the backend and the guest's buffers directly (a file: one `preadv`/`pwritev`
//! into guest memory, see [`super::blk_backend`]), so a read still running when the driver resets the
//! device may land data in buffers the driver owns again; the status byte and the used ring never are
//! (the completion is dropped). A caller that can should not start executing requests from a stale
//! epoch.

use log::warn;
use thiserror::Error;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

pub use super::blk_backend::{BlkBackend, BLK_CHUNK};
use super::chain;
use super::mmio::MmioTransport;
use super::queue::QueueCtx;
use super::{read_config_bytes, VirtioDevice};

/// The unit of `capacity` and `sector`, whatever the block size.
pub const SECTOR_SIZE: u64 = 512;
/// Size of the request queue (the most the driver may choose). A 1 MiB I/O on scattered 4 KiB pages is
/// 256 data buffers: with a ring of 256 (254 buffers a request), Linux cut it into two requests sent
/// one after the other, and the second waited for the ring to drain.
pub const BLK_QUEUE_SIZE: u16 = 1024;
/// Index of the request queue.
pub const BLK_REQUEST_QUEUE: usize = 0;
/// Most data buffers in one request: without indirect descriptors a request must fit in the ring with
/// its header and status descriptors.
pub const BLK_SEG_MAX: u32 = BLK_QUEUE_SIZE as u32 - 2;
/// Bytes of the device id a GET_ID request returns.
pub const BLK_ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;
/// VIRTIO_BLK_S_OK as the status byte.
pub const BLK_S_OK: u8 = VIRTIO_BLK_S_OK as u8;
/// VIRTIO_BLK_S_IOERR as the status byte.
pub const BLK_S_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
/// VIRTIO_BLK_S_UNSUPP as the status byte.
pub const BLK_S_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// Most ranges in one discard request (the guest splits longer lists).
pub const BLK_MAX_DISCARD_SEG: u32 = 32;
/// Most sectors one discard range may cover (2 GiB; the guest splits longer ones).
pub const BLK_MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// Discard granularity in sectors: whole 4 KiB blocks, what a file's holes are made of.
pub const BLK_DISCARD_ALIGNMENT: u32 = 8;

/// Bytes of the request header: type (le32), reserved (le32), sector (le64).
const HEADER: usize = 16;
/// Bytes of one discard range: sector (le64), num_sectors (le32), flags (le32).
const DISCARD_RANGE: usize = 16;
/// Config space up to and including `discard_sector_alignment`; the fields after it belong to
/// features not offered, and those between `blk_size` and `max_discard_sectors` read as zero.
const CONFIG_SIZE: usize = 48;
const CONFIG_SEG_MAX: usize = 12;
const CONFIG_BLK_SIZE: usize = 20;
const CONFIG_MAX_DISCARD_SECTORS: usize = 36;
const CONFIG_MAX_DISCARD_SEG: usize = 40;
const CONFIG_DISCARD_ALIGNMENT: usize = 44;

/// Errors describing a block device.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BlkError {
    /// A disk of no sectors, which a guest cannot use.
    #[error("virtio-blk disk is empty (0 bytes); give it a backing file of at least 512 bytes")]
    Empty,
    /// The capacity is not a whole number of sectors.
    #[error(
        "virtio-blk disk size {bytes} bytes is not a multiple of the 512-byte sector; round the backing \
         file up (`truncate -s %512 FILE`)"
    )]
    PartialSector {
        /// The size given.
        bytes: u64,
    },
}

/// The virtio-blk device model.
#[derive(Debug)]
pub struct Blk {
    config: [u8; CONFIG_SIZE],
    capacity: u64,
    read_only: bool,
    id: [u8; BLK_ID_BYTES],
}

impl Blk {
    /// A disk of `capacity_bytes` (a non-zero multiple of [`SECTOR_SIZE`]), refusing writes if
    /// `read_only`, whose GET_ID answer is `id` (NUL-padded when shorter than 20 bytes).
    pub fn new(capacity_bytes: u64, read_only: bool, id: [u8; BLK_ID_BYTES]) -> Result<Self, BlkError> {
        if capacity_bytes == 0 {
            return Err(BlkError::Empty);
        }
        if !capacity_bytes.is_multiple_of(SECTOR_SIZE) {
            return Err(BlkError::PartialSector { bytes: capacity_bytes });
        }
        let mut config = [0u8; CONFIG_SIZE];
        config[..8].copy_from_slice(&(capacity_bytes / SECTOR_SIZE).to_le_bytes());
        config[CONFIG_SEG_MAX..CONFIG_SEG_MAX + 4].copy_from_slice(&BLK_SEG_MAX.to_le_bytes());
        config[CONFIG_BLK_SIZE..CONFIG_BLK_SIZE + 4].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        if !read_only {
            let put = |config: &mut [u8; CONFIG_SIZE], at: usize, v: u32| {
                config[at..at + 4].copy_from_slice(&v.to_le_bytes());
            };
            put(&mut config, CONFIG_MAX_DISCARD_SECTORS, BLK_MAX_DISCARD_SECTORS);
            put(&mut config, CONFIG_MAX_DISCARD_SEG, BLK_MAX_DISCARD_SEG);
            put(&mut config, CONFIG_DISCARD_ALIGNMENT, BLK_DISCARD_ALIGNMENT);
        }
        Ok(Self { config, capacity: capacity_bytes, read_only, id })
    }

    /// Size of the disk in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The GET_ID answer.
    pub fn id(&self) -> &[u8; BLK_ID_BYTES] {
        &self.id
    }

    /// Pops every request the driver made available: answers the bad ones and returns the good ones,
    /// tagged with `epoch` so a completion after a reset is recognised.
    pub fn take_requests(&mut self, ctx: &mut QueueCtx<'_>, epoch: u64) -> Vec<PendingBlk> {
        let mut pending = Vec::new();
        for head in ctx.pop_heads() {
            match self.parse(ctx, head) {
                Parsed::Good(status, op) => pending.push(PendingBlk { head, epoch, status, op }),
                Parsed::Answer(code, Some(status)) => respond(ctx, head, status, code, 0),
                Parsed::Answer(_, None) | Parsed::Unusable => ctx.add_used(head, 0),
            }
        }
        pending
    }

    fn parse(&self, ctx: &QueueCtx<'_>, head: u16) -> Parsed {
        let mem = ctx.mem();
        let descs = match chain::walk(mem, ctx.desc_table(), ctx.size(), head) {
            Ok(d) => d,
            Err(e) => {
                warn!("virtio-blk: request {head}: {e}");
                return Parsed::Unusable;
            }
        };
        let status = status_byte(mem, &descs);
        let answer = |code: u8, why: &str| {
            warn!("virtio-blk: request {head}: {why}");
            Parsed::Answer(code, status)
        };
        let fail = |why: &str| answer(BLK_S_IOERR, why);
        if let Err(e) = chain::check_in_memory(mem, &descs) {
            return fail(&e.to_string());
        }
        if !chain::well_ordered(&descs) {
            return fail("a device-readable buffer follows a device-writable one");
        }
        let Some(status) = status else {
            return fail("no device-writable byte at the end of the chain for the status");
        };
        let mut header = [0u8; HEADER];
        let readable = chain::leading_readable(&descs);
        let read =
            chain::prefix(readable, HEADER).is_some_and(|s| chain::read_segments(mem, &s, &mut header));
        if !read {
            return fail("fewer than 16 device-readable bytes for the request header");
        }
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14], header[15],
        ]);
        // Neither subtraction wraps: the header was read and the status byte found. The status is not data.
        let readable_data = total(readable) - HEADER;
        let writable = chain::trailing_writable(&descs);
        let writable_data = total(writable) - 1;
        let data = |descs: &[Descriptor], skip: usize, len: usize| {
            chain::range(descs, skip, len).unwrap_or_default()
        };
        match kind {
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => {
                let write = kind == VIRTIO_BLK_T_OUT;
                let (len, wrong_way) =
                    if write { (readable_data, writable_data) } else { (writable_data, readable_data) };
                if wrong_way != 0 {
                    return fail(&format!(
                        "a {} carries {wrong_way} data bytes in {} buffers",
                        if write { "write" } else { "read" },
                        if write { "device-writable" } else { "device-readable" },
                    ));
                }
                if !(len as u64).is_multiple_of(SECTOR_SIZE) {
                    return fail(&format!("{len} data bytes are not a whole number of 512-byte sectors"));
                }
                let offset = sector.checked_mul(SECTOR_SIZE);
                if offset.and_then(|o| o.checked_add(len as u64)).is_none_or(|end| end > self.capacity) {
                    return fail(&format!(
                        "sector {sector} + {len} bytes runs past the end of the {}-byte disk",
                        self.capacity
                    ));
                }
                if write && self.read_only {
                    return fail("write to a read-only disk");
                }
                let offset = offset.unwrap_or_default();
                if write {
                    Parsed::Good(status, Op::Write { offset, data: data(readable, HEADER, len) })
                } else {
                    Parsed::Good(status, Op::Read { offset, data: data(writable, 0, len) })
                }
            }
            VIRTIO_BLK_T_FLUSH => Parsed::Good(status, Op::Flush),
            VIRTIO_BLK_T_DISCARD if !self.read_only => {
                match self.discard_ranges(mem, readable, readable_data, writable_data) {
                    Ok(ranges) => Parsed::Good(status, Op::Discard { ranges }),
                    Err((code, why)) => answer(code, &why),
                }
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = writable_data.min(BLK_ID_BYTES);
                Parsed::Good(status, Op::GetId { id: self.id, data: data(writable, 0, n) })
            }
            other => answer(BLK_S_UNSUPP, &format!("unsupported request type {other}")),
        }
    }
}

impl Blk {
    /// The ranges of a DISCARD: whole 16-byte entries in the readable data after the header, at most
    /// [`BLK_MAX_DISCARD_SEG`] of them, each no flags, at most [`BLK_MAX_DISCARD_SECTORS`] and inside
    /// the disk. Error: the status to answer and why.
    fn discard_ranges(
        &self,
        mem: &GuestMemoryMmap,
        readable: &[Descriptor],
        len: usize,
        writable: usize,
    ) -> Result<Vec<(u64, u64)>, (u8, String)> {
        let n = len / DISCARD_RANGE;
        if len == 0 || !len.is_multiple_of(DISCARD_RANGE) || writable != 0 {
            return Err((
                BLK_S_IOERR,
                format!(
                    "a discard needs whole 16-byte ranges and no data back, not {len} and {writable} bytes"
                ),
            ));
        }
        if n > BLK_MAX_DISCARD_SEG as usize {
            return Err((
                BLK_S_IOERR,
                format!("a discard of {n} ranges, more than the {BLK_MAX_DISCARD_SEG} offered"),
            ));
        }
        let mut raw = vec![0u8; len];
        let segments = chain::range(readable, HEADER, len).unwrap_or_default();
        if !chain::read_segments(mem, &segments, &mut raw) {
            return Err((BLK_S_IOERR, "cannot read the discard ranges".to_string()));
        }
        let mut ranges = Vec::with_capacity(n);
        for r in raw.chunks_exact(DISCARD_RANGE) {
            let word = |at: usize| u32::from_le_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]);
            let sector = u64::from(word(0)) | u64::from(word(4)) << 32;
            let (sectors, flags) = (word(8), word(12));
            if flags != 0 {
                return Err((BLK_S_UNSUPP, format!("discard flags {flags:#x} (unmap is for write-zeroes)")));
            }
            if sectors > BLK_MAX_DISCARD_SECTORS {
                return Err((
                    BLK_S_IOERR,
                    format!("a discard range of {sectors} sectors, more than offered"),
                ));
            }
            let offset = sector.checked_mul(SECTOR_SIZE);
            let bytes = u64::from(sectors) * SECTOR_SIZE;
            if offset.and_then(|o| o.checked_add(bytes)).is_none_or(|end| end > self.capacity) {
                return Err((
                    BLK_S_IOERR,
                    format!("discard of sector {sector} + {sectors} runs past the end of the disk"),
                ));
            }
            ranges.push((offset.unwrap_or_default(), bytes));
        }
        Ok(ranges)
    }
}

impl VirtioDevice for Blk {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        // Neither indirect descriptors nor EVENT_IDX, nor write-zeroes; discard only where writes go.
        let extra = if self.read_only { 1 << VIRTIO_BLK_F_RO } else { 1 << VIRTIO_BLK_F_DISCARD };
        1 << VIRTIO_BLK_F_FLUSH | 1 << VIRTIO_BLK_F_SEG_MAX | 1 << VIRTIO_BLK_F_BLK_SIZE | extra
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[BLK_QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
}

type Segments = Vec<(GuestAddress, usize)>;

/// What a good request does; data ranges are in guest memory, offsets on the disk.
#[derive(Debug)]
enum Op {
    Read {
        offset: u64,
        data: Segments,
    },
    Write {
        offset: u64,
        data: Segments,
    },
    Flush,
    GetId {
        id: [u8; BLK_ID_BYTES],
        data: Segments,
    },
    /// Byte ranges (offset, length) on the disk, checked against its end.
    Discard {
        ranges: Vec<(u64, u64)>,
    },
}

enum Parsed {
    /// A request for the backend; its status byte is at this address.
    Good(GuestAddress, Op),
    /// Answer at once with this status, if there is somewhere to put it (else length 0).
    Answer(u8, Option<GuestAddress>),
    /// The chain could not be walked: return it with length 0.
    Unusable,
}

/// A well-formed request waiting for its I/O.
#[derive(Debug)]
#[must_use = "a request not completed leaves the guest waiting forever"]
pub struct PendingBlk {
    head: u16,
    epoch: u64,
    status: GuestAddress,
    op: Op,
}

impl PendingBlk {
    /// The chain's head index.
    pub fn head(&self) -> u16 {
        self.head
    }

    /// The transport epoch the request was taken in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Runs the request: moves its data between `mem` and `backend` (reads land in the guest's
    /// buffers here), flushes, or copies the id. Needs no transport; the result goes to
    /// [`MmioTransport::complete_requests`]. A backend error is logged and becomes VIRTIO_BLK_S_IOERR.
    pub fn execute(&self, mem: &GuestMemoryMmap, backend: &mut dyn BlkBackend) -> BlkDone {
        let (code, written) = match &self.op {
            Op::Read { offset, data } => transfer(mem, backend, *offset, data, false),
            Op::Write { offset, data } => transfer(mem, backend, *offset, data, true),
            Op::Flush => match backend.flush() {
                Ok(()) => (BLK_S_OK, 0),
                Err(e) => {
                    warn!("virtio-blk: flush failed, reporting an I/O error to the guest: {e}");
                    (BLK_S_IOERR, 0)
                }
            },
            Op::Discard { ranges } => {
                let failed = ranges.iter().find_map(|&(offset, len)| backend.discard(offset, len).err());
                match failed {
                    None => (BLK_S_OK, 0),
                    Some(e) => {
                        warn!("virtio-blk: discard failed, reporting an I/O error to the guest: {e}");
                        (BLK_S_IOERR, 0)
                    }
                }
            }
            Op::GetId { id, data } => {
                let n = data.iter().map(|&(_, n)| n).sum::<usize>();
                if chain::write_segments(mem, data, &id[..n]) {
                    (BLK_S_OK, n)
                } else {
                    (BLK_S_IOERR, 0)
                }
            }
        };
        BlkDone { head: self.head, epoch: self.epoch, status: self.status, code, written }
    }
}

/// An executed request waiting to be completed.
#[derive(Debug)]
#[must_use = "a request not completed leaves the guest waiting forever"]
pub struct BlkDone {
    head: u16,
    epoch: u64,
    status: GuestAddress,
    code: u8,
    written: usize,
}

impl BlkDone {
    /// The chain's head index.
    pub fn head(&self) -> u16 {
        self.head
    }

    /// The transport epoch the request was taken in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The status byte the guest will see (VIRTIO_BLK_S_*).
    pub fn status(&self) -> u8 {
        self.code
    }
}

fn total(descs: &[Descriptor]) -> usize {
    descs.iter().map(|d| d.len() as usize).sum()
}

/// Where the status goes: the last byte of the chain's trailing device-writable buffers, if it is in
/// guest memory, even when the rest of the chain is malformed.
fn status_byte(mem: &GuestMemoryMmap, descs: &[Descriptor]) -> Option<GuestAddress> {
    let last = chain::trailing_writable(descs).iter().rev().find(|d| d.len() > 0)?;
    let at = last.addr().checked_add(u64::from(last.len()) - 1)?;
    GuestMemoryBackend::address_in_range(mem, at).then_some(at)
}

/// The guest buffers of `data` as slices of guest memory, cut where memory regions end; `None` if a
/// range is no longer all in guest memory.
fn guest_slices<'m>(
    mem: &'m GuestMemoryMmap,
    data: &[(GuestAddress, usize)],
) -> Option<Vec<VolatileSlice<'m>>> {
    let mut out = Vec::with_capacity(data.len());
    for &(addr, len) in data {
        for s in mem.get_slices(addr, len) {
            out.push(s.ok()?);
        }
    }
    Some(out)
}

/// Moves a read's (`write` false) or a write's data between the disk at `offset` and the guest
/// buffers `data`; returns the status and how many bytes reached the guest (a read's, when it
/// succeeded; none are counted when it fails part way).
fn transfer(
    mem: &GuestMemoryMmap,
    backend: &mut dyn BlkBackend,
    offset: u64,
    data: &[(GuestAddress, usize)],
    write: bool,
) -> (u8, usize) {
    let what = if write { "write" } else { "read" };
    let Some(bufs) = guest_slices(mem, data) else {
        warn!("virtio-blk: the guest's {what} buffer is no longer in guest memory");
        return (BLK_S_IOERR, 0);
    };
    let len = bufs.iter().map(VolatileSlice::len).sum::<usize>();
    let moved =
        if write { backend.write_from_guest(offset, &bufs) } else { backend.read_to_guest(offset, &bufs) };
    match moved {
        Ok(()) => (BLK_S_OK, if write { 0 } else { len }),
        Err(e) => {
            warn!(
                "virtio-blk: {what} of {len} bytes at {offset:#x} failed, reporting an I/O error to the guest: {e}"
            );
            (BLK_S_IOERR, 0)
        }
    }
}

/// Writes the status byte and returns the chain with `written` data bytes plus the status; length 0 if
/// the status byte cannot be written.
fn respond(ctx: &mut QueueCtx<'_>, head: u16, status: GuestAddress, code: u8, written: usize) {
    let len = match ctx.mem().write_obj(code, status) {
        Ok(()) => u32::try_from(written).unwrap_or(u32::MAX).saturating_add(1),
        Err(_) => 0,
    };
    ctx.add_used(head, len);
}

impl MmioTransport<Blk> {
    /// Pops the driver's requests (call when the request queue's [`MmioTransport::queue_evt`] fires):
    /// malformed ones are answered here, good ones come back for the caller to
    /// [`PendingBlk::execute`] and then [`Self::complete_requests`]. Empty while the device is not live.
    pub fn take_requests(&mut self) -> Vec<PendingBlk> {
        let epoch = self.epoch();
        self.with_queue(BLK_REQUEST_QUEUE, |blk, ctx| blk.take_requests(ctx, epoch)).unwrap_or_default()
    }

    /// Writes the status of every executed request, puts them on the used ring and interrupts once for
    /// the batch; returns how many were completed. Those taken before a reset, or while the device is
    /// stopped, are dropped with nothing written: their buffers belong to the driver again.
    pub fn complete_requests(&mut self, done: impl IntoIterator<Item = BlkDone>) -> usize {
        let epoch = self.epoch();
        let complete = |_: &mut Blk, ctx: &mut QueueCtx<'_>| {
            let mut n = 0;
            for d in done.into_iter().filter(|d| d.epoch == epoch) {
                respond(ctx, d.head, d.status, d.code, d.written);
                n += 1;
            }
            n
        };
        self.with_queue(BLK_REQUEST_QUEUE, complete).unwrap_or(0)
    }

    /// Takes, executes and completes in place, with one interrupt for the completions; returns how many
    /// requests were completed. If the batch itself broke the queue (a later head the used ring cannot
    /// take), the device needs a reset and nothing could be completed, so the backend is not called.
    pub fn process_requests(&mut self, backend: &mut dyn BlkBackend) -> usize {
        let taken = self.take_requests();
        if !self.is_live() {
            return 0;
        }
        let mem = self.mem().clone();
        let done: Vec<_> = taken.iter().map(|p| p.execute(&mem, backend)).collect();
        self.complete_requests(done)
    }
}
