//! A hostile guest against the virtio-mmio transport with a virtio-blk device behind it: arbitrary
//! register accesses (any offset in the window, any width, any value), arbitrary guest memory contents
//! (descriptor tables, rings, requests, written at any time, even between taking a request and executing
//! or completing it), Linux-shaped bring-ups with arbitrary queue addresses and sizes, resets, read-only
//! and writable disks, and requests run either in place or asynchronously (taken, executed, completed in
//! any order) against an in-memory disk that may fail.
//!
//! It must never panic, and: the backend is called only while the device is live (for a synchronous run)
//! and only with offsets and lengths inside the disk; it is written or discarded only when the disk is writable; a
//! completion from before a reset is never applied; the identity registers never change and the status
//! register only ever holds defined bits. When the guest's rings and buffers do not alias the descriptor
//! table or the used ring (aliasing lets the device's own writes rewrite the request), a synchronous run
//! of the queue also changes guest bytes only inside the used ring or buffers the table marks
//! device-writable, and every used entry it adds names a head inside the queue with a length no larger
//! than the chain could hold.
#![no_main]

use daxvmm_devices::virtio::blk::{Blk, BlkBackend, BlkDone, PendingBlk};
use daxvmm_devices::virtio::mmio::MmioTransport;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[path = "common/virtio.rs"]
mod common;
use common::*;

/// 64 sectors: small enough that fuzzed sectors land both inside and past the end.
const DISK: u64 = 64 * 512;

/// An in-memory disk that checks every access is inside it and that writes only reach a writable one.
struct Backend {
    data: Vec<u8>,
    read_only: bool,
    calls: usize,
    fail: bool,
}
impl Backend {
    fn access(&mut self, offset: u64, len: usize) -> std::io::Result<std::ops::Range<usize>> {
        self.calls += 1;
        let end = offset.checked_add(len as u64).expect("backend offset + length overflows");
        assert!(end <= DISK, "backend access {offset:#x}+{len:#x} past the end of the disk");
        if self.fail {
            return Err(std::io::Error::other("fuzzed failure"));
        }
        Ok(offset as usize..end as usize)
    }
}
impl BlkBackend for Backend {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let r = self.access(offset, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        assert!(!self.read_only, "wrote to a read-only disk");
        let r = self.access(offset, buf.len())?;
        self.data[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.access(0, 0).map(drop)
    }
    fn discard(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        assert!(!self.read_only, "discarded on a read-only disk");
        let r = self.access(offset, usize::try_from(len).expect("a discard range fits in usize"))?;
        self.data[r].fill(0);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let ranges: Vec<_> = REGIONS.iter().map(|&(b, l)| (GuestAddress(b), l)).collect();
    let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).unwrap();
    let mut input = Input(data);
    let read_only = input.u8().is_some_and(|b| b & 1 == 1);
    let blk = Blk::new(DISK, read_only, *b"fuzz-disk\0\0\0\0\0\0\0\0\0\0\0").unwrap();
    let mut t = MmioTransport::new(blk, mem.clone(), Box::new(NoIrq)).unwrap();
    let mut backend = Backend { data: vec![0x5a; DISK as usize], read_only, calls: 0, fail: false };
    let mut pending: Vec<PendingBlk> = Vec::new();
    let mut done: Vec<BlkDone> = Vec::new();

    while let Some(op) = input.u8() {
        match op % 9 {
            // Register accesses, guest memory writes and bring-ups (common/virtio.rs).
            0..=3 => {
                if shared_op(op % 9, &mut input, &mut t, &mem).is_none() {
                    break;
                }
            }
            // Run the queue in place: writes must stay in the used ring and device-writable buffers.
            4 => {
                backend.fail = input.u8().is_some_and(|b| b & 1 == 1);
                let live = t.is_live();
                let calls = backend.calls;
                // No more than the data a chain in this memory could take, plus the status byte.
                let most =
                    |size: u16| REGIONS.iter().map(|&(_, l)| l as u32).sum::<u32>() * u32::from(size) + 1;
                let completed = checked_sync_run(
                    &mut t,
                    &mem,
                    |t| t.process_requests(&mut backend),
                    |len, size| len <= most(size),
                );
                assert!(live || (completed == 0 && backend.calls == calls), "served while not live");
            }
            // Take requests for later.
            5 => {
                let live = t.is_live();
                let taken = t.take_requests();
                assert!(live || taken.is_empty());
                pending.extend(taken);
            }
            // Execute a pending request (chosen by the input, the backend failing or not), or complete
            // the executed ones so far, in an order chosen by the input.
            6 => {
                let Some(pick) = input.u8() else { break };
                if pick & 0x40 == 0 && !pending.is_empty() {
                    let request = pending.swap_remove(usize::from(pick) % pending.len());
                    backend.fail = pick & 0x80 != 0;
                    done.push(request.execute(&mem, &mut backend));
                } else if !done.is_empty() {
                    let mut batch = std::mem::take(&mut done);
                    let by = usize::from(pick) % batch.len();
                    batch.rotate_left(by);
                    let epoch = t.epoch();
                    let current = batch.iter().filter(|d| d.epoch() == epoch).count();
                    let completed = t.complete_requests(batch);
                    assert!(completed <= current, "completed a request from before a reset");
                }
            }
            // A chain of up to 4 fuzzed descriptors written into the queue's table and made available,
            // as a driver would, so that well-formed and nearly well-formed requests are common.
            7 => {
                if add_chain(&t, &mem, &mut input).is_none() {
                    break;
                }
            }
            // Reset.
            _ => write32(&mut t, 0x70, 0),
        }
        check_registers(&mut t, 2);
    }
});

/// Makes one chain available at `head` (an input byte). With the shape byte's top bit clear it is
/// Linux's: a 16-byte header (a type among IN, OUT, FLUSH, GET_ID or fuzzed; a small sector or a fuzzed
/// one), a data buffer of 0 to 3 sectors (or 20 bytes) in the direction the type needs (or the other),
/// then a 1-byte status, at fuzzed addresses in the first region. Otherwise up to 4 fuzzed descriptors
/// (address, a length that matters (0, 1, 16, 512, 513, huge) or a raw one, flags, and links that
/// follow the chain or not).
fn add_chain(t: &MmioTransport<Blk>, mem: &GuestMemoryMmap, input: &mut Input<'_>) -> Option<()> {
    let q = t.queue(0)?.state();
    let shape = input.u8()?;
    let size = q.size.max(1);
    let head = u16::from(input.u8()?) % size;
    let descs = if shape & 0x80 == 0 {
        let (req, buf, status) = (
            u64::from(input.u16()? & 0x7ff0),
            u64::from(input.u16()? & 0x7e00),
            u64::from(input.u16()? & 0x7fff),
        );
        let kind = match shape & 0x7 {
            0 | 1 => 0,
            2 | 3 => 1,
            4 => 4,
            5 => 8,
            _ => input.u32()?,
        };
        let sector = if shape & 0x8 == 0 {
            u64::from(input.u8()?)
        } else {
            u64::from(input.u32()?) << 32 | u64::from(input.u32()?)
        };
        let _ = mem.write_obj(kind, GuestAddress(req));
        let _ = mem.write_obj(0u32, GuestAddress(req + 4));
        let _ = mem.write_obj(sector, GuestAddress(req + 8));
        let len = match (shape >> 4) & 3 {
            0 => 0,
            1 => 512,
            2 => 1536,
            _ => 20,
        };
        // Reads and GET_ID want device-writable data, writes device-readable; bit 6 flips it.
        let writable = (kind != 1) != (shape & 0x40 != 0);
        let mut descs = vec![(req, 16, 1, head.wrapping_add(1) % size)];
        if len > 0 {
            descs.push((buf, len, 1 | if writable { 2 } else { 0 }, head.wrapping_add(2) % size));
        }
        descs.push((status, 1, 2, 0));
        descs
    } else {
        fuzzed_descs(input, shape, head, size, [0, 1, 16, 512, 513, 1024, 0xffff_ffff])?
    };
    publish_chain(t, mem, head, descs)
}
