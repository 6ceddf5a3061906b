//! A hostile guest against the virtio-mmio transport with a virtio-pmem device behind it: arbitrary
//! register accesses (any offset in the window, any width, any value), arbitrary guest memory contents
//! (descriptor tables, rings, requests, written at any time, even between taking a flush and completing
//! it), Linux-shaped bring-ups with arbitrary queue addresses and sizes, resets, and flushes run either
//! in place or asynchronously with completions in any order and backends that fail.
//!
//! It must never panic, and: the backend is called once per completed flush and only while the device is
//! live; a completion from before a reset is never applied; the identity registers never change and the
//! status register only ever holds defined bits. When the guest's rings and buffers do not alias the
//! descriptor table or the used ring (aliasing lets the device's own writes rewrite the request), a
//! synchronous run of the queue also changes guest bytes only inside the used ring or buffers the table
//! marks device-writable, and every used entry it adds names a head inside the queue with length 0 or 4.
#![no_main]

use daxvmm_devices::virtio::mmio::MmioTransport;
use daxvmm_devices::virtio::pmem::{PendingFlush, Pmem, PmemFlush};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[path = "common/virtio.rs"]
mod common;
use common::*;

struct Backend {
    calls: usize,
    fail: bool,
}
impl PmemFlush for Backend {
    fn flush(&mut self) -> std::io::Result<()> {
        self.calls += 1;
        if self.fail {
            Err(std::io::Error::other("fuzzed failure"))
        } else {
            Ok(())
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let ranges: Vec<_> = REGIONS.iter().map(|&(b, l)| (GuestAddress(b), l)).collect();
    let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).unwrap();
    let pmem = Pmem::new(0x1_0000_0000, 0x4000_0000).unwrap();
    let mut t = MmioTransport::new(pmem, mem.clone(), Box::new(NoIrq)).unwrap();
    let mut backend = Backend { calls: 0, fail: false };
    let mut pending: Vec<PendingFlush> = Vec::new();
    let mut input = Input(data);

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
                // A flush's response is 4 bytes; a chain that cannot be walked gets length 0.
                let done = checked_sync_run(
                    &mut t,
                    &mem,
                    |t| t.process_flushes(&mut backend),
                    |len, _| len == 0 || len == 4,
                );
                assert_eq!(backend.calls - calls, done, "one backend call per completed flush");
                assert!(live || done == 0, "flushed while the device was not live");
            }
            // Take flushes for later.
            5 => {
                let live = t.is_live();
                let taken = t.take_flushes();
                assert!(live || taken.is_empty());
                pending.extend(taken);
            }
            // Complete a pending flush, chosen by the input, with a result chosen by the input.
            6 => {
                let Some(pick) = input.u8() else { break };
                if !pending.is_empty() {
                    let flush = pending.swap_remove(usize::from(pick) % pending.len());
                    let result =
                        if pick & 0x80 != 0 { Err(std::io::Error::other("late failure")) } else { Ok(()) };
                    let epoch = t.epoch();
                    let flush_epoch = flush.epoch();
                    let completed = t.complete_flush(flush, result);
                    assert!(!completed || flush_epoch == epoch, "completed a flush from before a reset");
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
        check_registers(&mut t, 27);
    }
});

/// Makes one chain available at `head` (an input byte). With the shape byte's top bit clear it is
/// Linux's: a 4-byte request (type 0, or fuzzed) then a 4-byte response, at fuzzed addresses in the first
/// region. Otherwise up to 4 fuzzed descriptors (address, a length that matters (0, 1, 3, 4, 8, huge) or
/// a raw one, flags, and links that follow the chain or not).
fn add_chain(t: &MmioTransport<Pmem>, mem: &GuestMemoryMmap, input: &mut Input<'_>) -> Option<()> {
    let q = t.queue(0)?.state();
    let shape = input.u8()?;
    let size = q.size.max(1);
    let head = u16::from(input.u8()?) % size;
    let descs = if shape & 0x80 == 0 {
        let (req, resp) = (u64::from(input.u16()? & 0x7ffc), u64::from(input.u16()? & 0x7ffc));
        let kind = if shape & 0x40 == 0 { 0 } else { input.u32()? };
        let _ = mem.write_obj(kind, GuestAddress(req));
        vec![(req, 4, 1, head.wrapping_add(1) % size), (resp, 4, 2, 0)]
    } else {
        fuzzed_descs(input, shape, head, size, [0, 1, 3, 4, 4, 8, 0xffff_ffff])?
    };
    publish_chain(t, mem, head, descs)
}
