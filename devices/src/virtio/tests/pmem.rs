//! Well-formed flush requests: synchronous and asynchronous completion, errors, resets in between.

use virtio_bindings::virtio_mmio as reg;

use super::driver::*;
use crate::virtio::mmio::{status, INT_VRING};
use crate::virtio::pmem::{Pmem, PmemError, VIRTIO_PMEM_RET_ERR, VIRTIO_PMEM_RET_OK};
use crate::virtio::VIRTIO_F_VERSION_1;

#[test]
fn flush_succeeds() {
    let mut d = Driver::live();
    let head = d.request(3, 0, DATA, DATA + 0x100);
    let mut backend = FakeFlush::default();
    assert_eq!(d.t.process_flushes(&mut backend), 1);
    assert_eq!(backend.calls, 1);
    assert_eq!(d.get_u32(DATA + 0x100), VIRTIO_PMEM_RET_OK);
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.used_elem(0), (u32::from(head), 4));
    assert_eq!(d.irq_count(), 1);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS), INT_VRING);
    // Nothing new: no flush, no interrupt.
    assert_eq!(d.t.process_flushes(&mut backend), 0);
    assert_eq!((backend.calls, d.irq_count()), (1, 1));
}

#[test]
fn flush_error_reaches_the_guest() {
    let mut d = Driver::live();
    d.request(0, 0, DATA, DATA + 0x100);
    let mut backend = FakeFlush { fail: true, ..Default::default() };
    assert_eq!(d.t.process_flushes(&mut backend), 1);
    assert_eq!(backend.calls, 1);
    assert_eq!(d.get_u32(DATA + 0x100), VIRTIO_PMEM_RET_ERR);
    assert_eq!(d.used_elem(0), (0, 4));
    assert_eq!(d.irq_count(), 1);
}

#[test]
fn several_requests_in_one_notification() {
    let mut d = Driver::live();
    for i in 0..5u16 {
        d.request(i * 2, 0, DATA + u64::from(i) * 0x10, DATA + 0x100 + u64::from(i) * 0x10);
    }
    let mut backend = FakeFlush::default();
    assert_eq!(d.t.process_flushes(&mut backend), 5);
    assert_eq!(backend.calls, 5);
    assert_eq!(d.used_idx(), 5);
    for i in 0..5u16 {
        assert_eq!(d.used_elem(i), (u32::from(i * 2), 4));
        assert_eq!(d.get_u32(DATA + 0x100 + u64::from(i) * 0x10), 0);
    }
    // One interrupt per batch: the driver reaps all five.
    assert_eq!(d.irq_count(), 1);
}

#[test]
fn ring_wraps_around() {
    let mut d = Driver::live();
    let mut backend = FakeFlush::default();
    for round in 0..(3 * QSIZE) {
        d.request(0, 0, DATA, DATA + 0x100);
        assert_eq!(d.t.process_flushes(&mut backend), 1, "round {round}");
        assert_eq!(d.used_idx(), round + 1);
        assert_eq!(d.used_elem(round), (0, 4));
    }
    assert_eq!(backend.calls, 3 * usize::from(QSIZE));
}

#[test]
fn async_completion_in_any_order() {
    let mut d = Driver::live();
    d.request(0, 0, DATA, DATA + 0x100);
    d.request(2, 0, DATA + 0x10, DATA + 0x110);
    let pending = d.t.take_flushes();
    assert_eq!(pending.iter().map(|p| p.head()).collect::<Vec<_>>(), vec![0, 2]);
    // Taken but not completed: the driver sees nothing yet.
    assert_eq!((d.used_idx(), d.irq_count()), (0, 0));
    assert_eq!(d.get_u32(DATA + 0x100), SENTINEL);
    assert!(d.t.take_flushes().is_empty(), "taken requests are not taken twice");

    let mut pending = pending.into_iter();
    let (first, second) = (pending.next().unwrap(), pending.next().unwrap());
    assert!(d.t.complete_flush(second, Err(std::io::Error::other("EIO"))));
    assert_eq!(d.used_elem(0), (2, 4));
    assert_eq!(d.get_u32(DATA + 0x110), VIRTIO_PMEM_RET_ERR);
    assert_eq!(d.get_u32(DATA + 0x100), SENTINEL);
    assert_eq!(d.irq_count(), 1);
    assert!(d.t.complete_flush(first, Ok(())));
    assert_eq!(d.used_elem(1), (0, 4));
    assert_eq!(d.get_u32(DATA + 0x100), VIRTIO_PMEM_RET_OK);
    assert_eq!((d.used_idx(), d.irq_count()), (2, 2));
}

#[test]
fn completion_after_reset_is_dropped() {
    let mut d = Driver::live();
    d.request(0, 0, DATA, DATA + 0x100);
    let stale = d.t.take_flushes();
    assert_eq!(stale.len(), 1);
    // The driver resets and brings the device up again, on new rings, before the flush finishes.
    d.restart_on_new_rings();
    for p in stale {
        assert!(!d.t.complete_flush(p, Ok(())));
    }
    assert_eq!(d.get_u32(DATA + 0x100), SENTINEL, "stale completion wrote into a buffer the driver owns");
    assert_eq!(d.used_idx(), 0, "old used ring");
    assert_eq!(d.get_u32(USED + 0x400) >> 16, 0, "new used ring");
    assert_eq!(d.irq_count(), 0);
}

#[test]
fn completion_while_failed_is_dropped() {
    let mut d = Driver::live();
    d.request(0, 0, DATA, DATA + 0x100);
    let pending = d.t.take_flushes();
    d.set_status(status::FAILED);
    for p in pending {
        assert!(!d.t.complete_flush(p, Ok(())));
    }
    assert_eq!((d.used_idx(), d.get_u32(DATA + 0x100)), (0, SENTINEL));
}

#[test]
fn nothing_is_taken_before_driver_ok() {
    let mut d = Driver::new();
    d.negotiate(VIRTIO_F_VERSION_1);
    d.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    d.request(0, 0, DATA, DATA + 0x100);
    assert!(d.t.take_flushes().is_empty());
    d.set_status(status::DRIVER_OK);
    assert_eq!(d.t.take_flushes().len(), 1, "the request made available before DRIVER_OK is served");
}

#[test]
fn request_split_across_descriptors() {
    // The spec forbids assuming a descriptor layout: type in 1 + 3 bytes, ret in 2 + 2.
    let mut d = Driver::live();
    d.put_u32(DATA, 0);
    d.put_u32(DATA + 0x10, 0);
    d.put_u32(DATA + 0x100, SENTINEL);
    d.put_u32(DATA + 0x110, SENTINEL);
    d.set_chain(0, &[(DATA, 1, R), (DATA + 0x10, 3, R), (DATA + 0x100, 2, W), (DATA + 0x110, 2, W)]);
    d.push_avail(0);
    let mut backend = FakeFlush::default();
    assert_eq!(d.t.process_flushes(&mut backend), 1);
    assert_eq!(d.used_elem(0), (0, 4));
    assert_eq!(d.get_u32(DATA + 0x100), 0xaaaa_0000);
    assert_eq!(d.get_u32(DATA + 0x110), 0xaaaa_0000);
}

#[test]
fn bigger_buffers_than_needed_are_fine() {
    let mut d = Driver::live();
    d.put_u32(DATA, 0);
    d.put_u32(DATA + 0x104, SENTINEL);
    d.set_chain(0, &[(DATA, 64, R), (DATA + 0x100, 64, W)]);
    d.put_u32(DATA + 0x100, SENTINEL);
    d.push_avail(0);
    assert_eq!(d.t.process_flushes(&mut FakeFlush::default()), 1);
    assert_eq!(d.used_elem(0), (0, 4));
    assert_eq!(d.get_u32(DATA + 0x100), 0);
    assert_eq!(d.get_u32(DATA + 0x104), SENTINEL, "only ret is written");
}

#[test]
fn region_must_be_non_empty_and_not_wrap() {
    assert_eq!(Pmem::new(0x1000, 0).unwrap_err(), PmemError::BadRegion { start: 0x1000, size: 0 });
    // The end (exclusive) must be representable.
    assert!(matches!(Pmem::new(u64::MAX - 0xfff, 0x1000), Err(PmemError::BadRegion { .. })));
    let p = Pmem::new(u64::MAX - 0x1fff, 0x1000).unwrap();
    assert_eq!((p.start(), p.size()), (u64::MAX - 0x1fff, 0x1000));
}
