//! Hostile descriptor chains and rings: each must fail its request (ret = 1 where a response buffer can
//! be trusted, else length 0), never reach the flush backend, never panic, and never touch memory outside
//! the guest's.

use virtio_bindings::virtio_mmio as reg;
use vm_memory::GuestAddress;

use super::driver::*;
use crate::virtio::chain::{self, ChainError};
use crate::virtio::mmio::{status, INT_CONFIG, INT_VRING};
use crate::virtio::pmem::VIRTIO_PMEM_RET_ERR;

const RESP: u64 = DATA + 0x100;
/// Past the end of the 1 MiB of guest memory.
const OUTSIDE: u64 = 0x10_0000;

/// Runs the queue once; asserts no flush happened and one chain came back. Returns its used length.
fn serve_one_failing(d: &mut Driver, head: u16) -> u32 {
    let mut backend = FakeFlush::default();
    assert_eq!(d.t.process_flushes(&mut backend), 0);
    assert_eq!(backend.calls, 0, "a bad request reached the backend");
    assert_eq!(d.used_idx(), 1);
    let (id, len) = d.used_elem(0);
    assert_eq!(id, u32::from(head));
    assert_eq!(d.status(), u32::from(FULL), "a bad request is the request's failure, not the device's");
    assert_eq!(d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS), INT_VRING);
    len
}

fn chain_of(d: &mut Driver, descs: &[(u64, u32, u16)]) -> u16 {
    d.put_u32(DATA, 0);
    d.put_u32(RESP, SENTINEL);
    d.set_chain(0, descs);
    d.push_avail(0);
    0
}

#[test]
fn loops_are_bounded_by_the_queue_size() {
    let mut d = Driver::live();
    d.put_u32(RESP, SENTINEL);
    // 0 -> 1 -> 0 -> ...: both readable and writable buffers in the loop.
    d.set_desc(0, DATA, 4, R | NEXT, 1);
    d.set_desc(1, RESP, 4, W | NEXT, 0);
    d.push_avail(0);
    let err = chain::walk(&d.mem, GuestAddress(DESC), QSIZE, 0).unwrap_err();
    assert_eq!(err, ChainError::TooLong { head: 0, size: QSIZE });
    assert_eq!(serve_one_failing(&mut d, 0), 0);
    assert_eq!(d.get_u32(RESP), SENTINEL, "nothing written into a looping chain");
}

#[test]
fn self_loop() {
    let mut d = Driver::live();
    d.set_desc(5, DATA, 4, R | NEXT, 5);
    d.push_avail(5);
    assert_eq!(serve_one_failing(&mut d, 5), 0);
}

#[test]
fn longest_legal_chain_is_accepted() {
    // QSIZE descriptors: 15 one-byte zeros... then the response. Exactly the bound, so it is served.
    let mut d = Driver::live();
    let mut descs: Vec<(u64, u32, u16)> = (0..QSIZE - 1).map(|i| (DATA + u64::from(i), 1, R)).collect();
    descs.push((RESP, 4, W));
    chain_of(&mut d, &descs);
    assert_eq!(chain::walk(&d.mem, GuestAddress(DESC), QSIZE, 0).unwrap().len(), usize::from(QSIZE));
    assert_eq!(d.t.process_flushes(&mut FakeFlush::default()), 1);
    assert_eq!((d.used_elem(0), d.get_u32(RESP)), ((0, 4), 0));
}

#[test]
fn next_index_past_the_table() {
    let mut d = Driver::live();
    d.set_desc(0, DATA, 4, R | NEXT, QSIZE);
    d.push_avail(0);
    let err = chain::walk(&d.mem, GuestAddress(DESC), QSIZE, 0).unwrap_err();
    assert_eq!(err, ChainError::IndexOutOfRange { index: QSIZE, size: QSIZE });
    assert_eq!(serve_one_failing(&mut d, 0), 0);
}

#[test]
fn request_buffer_outside_memory() {
    let mut d = Driver::live();
    chain_of(&mut d, &[(OUTSIDE, 4, R), (RESP, 4, W)]);
    assert_eq!(serve_one_failing(&mut d, 0), 4);
    assert_eq!(d.get_u32(RESP), VIRTIO_PMEM_RET_ERR);
}

#[test]
fn request_buffer_at_the_top_of_the_address_space() {
    let mut d = Driver::live();
    chain_of(&mut d, &[(u64::MAX - 1, 4, R), (RESP, 4, W)]);
    assert_eq!(serve_one_failing(&mut d, 0), 4);
    assert_eq!(d.get_u32(RESP), VIRTIO_PMEM_RET_ERR);
}

#[test]
fn response_buffer_outside_memory() {
    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA, 4, R), (OUTSIDE - 2, 4, W)]);
    assert_eq!(serve_one_failing(&mut d, 0), 0);
    assert_eq!(d.get_u32(OUTSIDE - 4), 0, "the in-memory half of a straddling response stays unwritten");
}

#[test]
fn zero_length_request() {
    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA, 0, R), (RESP, 4, W)]);
    assert_eq!(serve_one_failing(&mut d, 0), 4);
    assert_eq!(d.get_u32(RESP), VIRTIO_PMEM_RET_ERR);
}

#[test]
fn zero_length_response() {
    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA, 4, R), (RESP, 0, W)]);
    assert_eq!(serve_one_failing(&mut d, 0), 0);
    assert_eq!(d.get_u32(RESP), SENTINEL);
}

#[test]
fn short_response() {
    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA, 4, R), (RESP, 3, W)]);
    assert_eq!(serve_one_failing(&mut d, 0), 0);
    assert_eq!(d.get_u32(RESP), SENTINEL);
}

#[test]
fn huge_request_length() {
    // 0xffff_ffff plus the response's 4 bytes is more than a chain may hold: not walked at all.
    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA, 0xffff_ffff, R), (RESP, 4, W)]);
    assert_eq!(serve_one_failing(&mut d, 0), 0);
    assert_eq!(d.get_u32(RESP), SENTINEL);
    // Just under the limit, the chain is walked but its request runs out of guest memory.
    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA, 0xffff_fff0, R), (RESP, 4, W)]);
    assert_eq!(serve_one_failing(&mut d, 0), 4);
    assert_eq!(d.get_u32(RESP), VIRTIO_PMEM_RET_ERR);
}

#[test]
fn huge_response_length() {
    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA, 4, R), (RESP, 0xffff_fff0, W)]);
    // The first four bytes are in memory, but the buffer as a whole is not: the request fails, and the
    // error still goes where the driver will look for it.
    assert_eq!(serve_one_failing(&mut d, 0), 4);
    assert_eq!(d.get_u32(RESP), VIRTIO_PMEM_RET_ERR);
}

#[test]
fn lengths_overflowing_32_bits() {
    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA, 0xffff_ffff, R), (DATA, 0xffff_ffff, W), (RESP, 4, W)]);
    let err = chain::walk(&d.mem, GuestAddress(DESC), QSIZE, 0).unwrap_err();
    assert_eq!(err, ChainError::LengthOverflow { head: 0 });
    assert_eq!(serve_one_failing(&mut d, 0), 0);
    assert_eq!(d.get_u32(RESP), SENTINEL);
}

#[test]
fn request_descriptor_device_writable() {
    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA, 4, W), (RESP, 4, W)]);
    // No readable request: it fails, and ret lands in the first writable bytes, as any response would.
    assert_eq!(serve_one_failing(&mut d, 0), 4);
    assert_eq!(d.get_u32(DATA), VIRTIO_PMEM_RET_ERR);
    assert_eq!(d.get_u32(RESP), SENTINEL);
}

#[test]
fn response_descriptor_read_only() {
    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA, 4, R), (RESP, 4, R)]);
    assert_eq!(serve_one_failing(&mut d, 0), 0);
    assert_eq!(d.get_u32(RESP), SENTINEL, "a device-readable buffer was written");
}

#[test]
fn missing_response_descriptor() {
    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA, 4, R)]);
    assert_eq!(serve_one_failing(&mut d, 0), 0);
}

#[test]
fn readable_after_writable() {
    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA, 4, R), (RESP, 4, W), (DATA + 0x10, 4, R)]);
    assert_eq!(serve_one_failing(&mut d, 0), 0, "no writable buffer ends the chain");
    assert_eq!(d.get_u32(RESP), SENTINEL);

    let mut d = Driver::live();
    chain_of(&mut d, &[(DATA + 0x20, 4, W), (DATA, 4, R), (RESP, 4, W)]);
    assert_eq!(serve_one_failing(&mut d, 0), 4);
    assert_eq!(d.get_u32(RESP), VIRTIO_PMEM_RET_ERR);
}

#[test]
fn unknown_request_type() {
    let mut d = Driver::live();
    d.request(0, 1, DATA, RESP);
    assert_eq!(serve_one_failing(&mut d, 0), 4);
    assert_eq!(d.get_u32(RESP), VIRTIO_PMEM_RET_ERR);
}

#[test]
fn indirect_descriptors_are_refused() {
    // A well-formed indirect table holding a good flush: refused all the same, never offered.
    let mut d = Driver::live();
    let table = DATA + 0x1000;
    for (i, (addr, len, flags, next)) in
        [(DATA, 4u32, R | NEXT, 1u16), (RESP, 4, W, 0)].into_iter().enumerate()
    {
        let at = table + i as u64 * 16;
        d.put_u32(at, addr as u32);
        d.put_u32(at + 4, 0);
        d.put_u32(at + 8, len);
        d.put_u32(at + 12, u32::from(flags) | u32::from(next) << 16);
    }
    d.put_u32(DATA, 0);
    d.put_u32(RESP, SENTINEL);
    d.set_desc(0, table, 32, INDIRECT, 0);
    d.push_avail(0);
    let err = chain::walk(&d.mem, GuestAddress(DESC), QSIZE, 0).unwrap_err();
    assert_eq!(err, ChainError::Indirect { index: 0 });
    assert_eq!(serve_one_failing(&mut d, 0), 0);
    assert_eq!(d.get_u32(RESP), SENTINEL);
}

#[test]
fn indirect_in_the_middle_of_a_chain() {
    let mut d = Driver::live();
    d.set_desc(0, DATA, 4, R | NEXT, 1);
    d.set_desc(1, DATA + 0x1000, 32, INDIRECT | W, 0);
    d.push_avail(0);
    assert_eq!(serve_one_failing(&mut d, 0), 0);
}

#[test]
fn good_request_after_a_bad_one_is_served() {
    let mut d = Driver::live();
    d.set_desc(0, DATA, 4, R | NEXT, 0);
    d.push_avail(0);
    d.request(4, 0, DATA + 0x40, RESP);
    let mut backend = FakeFlush::default();
    assert_eq!(d.t.process_flushes(&mut backend), 1);
    assert_eq!(backend.calls, 1);
    assert_eq!((d.used_elem(0), d.used_elem(1)), ((0, 0), (4, 4)));
    assert_eq!(d.get_u32(RESP), 0);
}

#[test]
fn head_index_past_the_queue_needs_reset() {
    let mut d = Driver::live();
    d.push_avail(QSIZE);
    let mut backend = FakeFlush::default();
    assert_eq!(d.t.process_flushes(&mut backend), 0);
    assert_eq!(backend.calls, 0);
    // The head cannot go on the used ring, so the driver would wait forever: the device says so.
    assert_eq!(d.used_idx(), 0);
    assert_eq!(d.status(), u32::from(FULL | status::NEEDS_RESET));
    assert_eq!(d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS), INT_CONFIG);
    assert_eq!(d.irq_count(), 1);
    // From then on nothing is served until a reset.
    d.request(0, 0, DATA, RESP);
    assert_eq!(d.t.process_flushes(&mut backend), 0);
}

#[test]
fn available_index_too_far_ahead_needs_reset() {
    let mut d = Driver::live();
    d.request(0, 0, DATA, RESP);
    d.set_avail_idx(QSIZE + 1);
    let mut backend = FakeFlush::default();
    assert_eq!(d.t.process_flushes(&mut backend), 0);
    assert_eq!(backend.calls, 0);
    assert_eq!(d.status(), u32::from(FULL | status::NEEDS_RESET));
}

#[test]
fn descriptor_table_outside_memory_at_runtime() {
    // The table passed the DRIVER_OK check; a head whose entry is beyond memory cannot exist then, but
    // walk must still refuse a table that is not there rather than read elsewhere.
    let mem = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    let err = chain::walk(&mem, GuestAddress(0xff0), 4, 1).unwrap_err();
    assert_eq!(err, ChainError::TableUnreadable { index: 1 });
    let err = chain::walk(&mem, GuestAddress(u64::MAX - 15), 4, 1).unwrap_err();
    assert_eq!(err, ChainError::TableUnreadable { index: 1 });
}

#[test]
fn available_ring_at_address_zero_needs_reset() {
    // virtio-queue cannot tell such a ring from an unprogrammed one, so the device says it is broken
    // rather than ignoring the queue and leaving the driver waiting.
    let mut d = Driver::new();
    d.negotiate(crate::virtio::VIRTIO_F_VERSION_1);
    d.setup_queue(0, QSIZE, DESC, 0, USED);
    d.set_status(status::DRIVER_OK);
    assert!(d.t.is_live());
    assert!(d.t.take_flushes().is_empty());
    assert_eq!(d.status(), u32::from(FULL | status::NEEDS_RESET));
}

#[test]
fn batch_broken_after_a_good_request_flushes_nothing() {
    let mut d = Driver::live();
    d.request(0, 0, DATA, RESP);
    d.push_avail(QSIZE);
    let mut backend = FakeFlush::default();
    assert_eq!(d.t.process_flushes(&mut backend), 0);
    assert_eq!(backend.calls, 0, "flushed for a request that can never be completed");
    assert_eq!(d.status(), u32::from(FULL | status::NEEDS_RESET));
    assert_eq!((d.used_idx(), d.get_u32(RESP)), (0, SENTINEL));
}
