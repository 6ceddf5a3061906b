//! The register file and the status state machine, as a driver (or a hostile guest) drives them.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_mmio as reg;
use virtio_queue::QueueT;

use super::driver::*;
use crate::bus::{Bus, BusDevice};
use crate::virtio::mmio::{status, INT_CONFIG, INT_VRING, MMIO_VENDOR_ID, MMIO_WINDOW_SIZE};
use crate::virtio::VIRTIO_F_VERSION_1;

const ACK_DRIVER: u32 = (status::ACKNOWLEDGE | status::DRIVER) as u32;
const NEEDS_RESET: u32 = status::NEEDS_RESET as u32;

#[test]
fn identity_registers() {
    let mut d = Driver::new();
    assert_eq!(d.read32(reg::VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_VERSION), 2);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_DEVICE_ID), 27);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_VENDOR_ID), MMIO_VENDOR_ID);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_CONFIG_GENERATION), 0);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_STATUS), 0);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    // Only VERSION_1 is offered: no indirect descriptors, no EVENT_IDX, no pmem SHMEM_REGION.
    assert_eq!(d.read32(reg::VIRTIO_MMIO_DEVICE_FEATURES), 0);
    d.write32(reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_DEVICE_FEATURES), 1);
    d.write32(reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_DEVICE_FEATURES), 0);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_QUEUE_NUM_MAX), 128);
    d.write32(reg::VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_QUEUE_READY), 0);
    // No shared memory regions: length all ones.
    assert_eq!(d.read32(reg::VIRTIO_MMIO_SHM_LEN_LOW), u32::MAX);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_SHM_LEN_HIGH), u32::MAX);
    // Write-only and reserved registers read 0; writes to read-only ones change nothing.
    assert_eq!(d.read32(reg::VIRTIO_MMIO_QUEUE_NOTIFY), 0);
    assert_eq!(d.read32(0x0f8), 0);
    d.write32(reg::VIRTIO_MMIO_MAGIC_VALUE, 0);
    d.write32(reg::VIRTIO_MMIO_DEVICE_ID, 1);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_DEVICE_ID), 27);
}

#[test]
fn linux_initialisation_sequence() {
    let mut d = Driver::new();
    d.set_status(status::ACKNOWLEDGE);
    assert_eq!(d.status(), 1);
    d.set_status(status::DRIVER);
    assert_eq!(d.status(), 3);
    d.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    d.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES, 1);
    d.set_status(status::FEATURES_OK);
    assert_eq!(d.status(), 0xb);
    assert_eq!(d.t.driver_features(), VIRTIO_F_VERSION_1);
    d.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    let q = d.t.queue(0).unwrap();
    assert_eq!((q.size(), q.ready()), (QSIZE, true));
    assert_eq!((q.desc_table(), q.avail_ring(), q.used_ring()), (DESC, AVAIL, USED));
    assert_eq!(d.read32(reg::VIRTIO_MMIO_QUEUE_READY), 1);
    assert!(!d.t.is_live());
    d.set_status(status::DRIVER_OK);
    assert_eq!(d.status(), 0xf);
    assert!(d.t.is_live());
    assert_eq!(d.irq_count(), 0);
}

#[test]
fn features_ok_needs_version_1() {
    let mut d = Driver::new();
    d.negotiate(0);
    assert_eq!(d.status(), ACK_DRIVER, "legacy driver must not reach FEATURES_OK");
    // A feature never offered (bit 33, ACCESS_PLATFORM) is refused too, even with VERSION_1.
    d.negotiate(VIRTIO_F_VERSION_1 | 1 << 33);
    assert_eq!(d.status(), ACK_DRIVER);
    d.negotiate(VIRTIO_F_VERSION_1 | 1 << 28);
    assert_eq!(d.status(), ACK_DRIVER);
    // So is anything accepted in the third 32-bit word.
    d.negotiate(0);
    d.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    d.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES, 1);
    d.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL, 2);
    d.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES, 1);
    d.set_status(status::FEATURES_OK);
    assert_eq!(d.status(), ACK_DRIVER);
    // Without FEATURES_OK, DRIVER_OK cannot be reached either.
    d.set_status(status::DRIVER_OK);
    assert_eq!(d.status(), ACK_DRIVER);
    d.negotiate(VIRTIO_F_VERSION_1);
    assert_eq!(d.status(), 0xb);
}

#[test]
fn driver_features_only_between_driver_and_features_ok() {
    let mut d = Driver::new();
    d.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    d.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES, 1);
    assert_eq!(d.t.driver_features(), 0, "written before DRIVER");
    d.negotiate(VIRTIO_F_VERSION_1);
    d.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    d.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES, 0);
    assert_eq!(d.t.driver_features(), VIRTIO_F_VERSION_1, "written after FEATURES_OK");
}

#[test]
fn status_writes_out_of_order_are_ignored() {
    let mut d = Driver::new();
    // Skipping ACKNOWLEDGE/DRIVER, or jumping straight to DRIVER_OK.
    d.write32(reg::VIRTIO_MMIO_STATUS, u32::from(status::DRIVER));
    assert_eq!(d.status(), 0);
    d.write32(reg::VIRTIO_MMIO_STATUS, u32::from(status::DRIVER_OK));
    assert_eq!(d.status(), 0);
    d.write32(reg::VIRTIO_MMIO_STATUS, 0x100 | 1);
    assert_eq!(d.status(), 0);
    d.set_status(status::ACKNOWLEDGE);
    d.set_status(status::DRIVER);
    // Clearing a bit without a reset.
    d.write32(reg::VIRTIO_MMIO_STATUS, u32::from(status::ACKNOWLEDGE));
    assert_eq!(d.status(), ACK_DRIVER);
    // The driver cannot set DEVICE_NEEDS_RESET.
    d.write32(reg::VIRTIO_MMIO_STATUS, ACK_DRIVER | NEEDS_RESET);
    assert_eq!(d.status(), ACK_DRIVER);
}

#[test]
fn failed_stops_the_device_until_reset() {
    let mut d = Driver::live();
    d.set_status(status::FAILED);
    assert_eq!(d.status(), u32::from(FULL | status::FAILED));
    assert!(!d.t.is_live());
    d.request(0, 0, DATA, DATA + 0x100);
    let mut backend = FakeFlush::default();
    assert_eq!(d.t.process_flushes(&mut backend), 0);
    assert_eq!((backend.calls, d.used_idx()), (0, 0));
    // FAILED sticks: adding bits or re-writing the old value does not clear it.
    d.write32(reg::VIRTIO_MMIO_STATUS, u32::from(FULL));
    assert_eq!(d.status(), u32::from(FULL | status::FAILED));
    d.write32(reg::VIRTIO_MMIO_STATUS, 0);
    assert_eq!(d.status(), 0);
}

#[test]
fn reset_restores_the_initial_state() {
    let mut d = Driver::live();
    d.request(0, 0, DATA, DATA + 0x100);
    d.t.process_flushes(&mut FakeFlush::default());
    assert_eq!(d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS), INT_VRING);
    d.write32(reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    d.write32(reg::VIRTIO_MMIO_QUEUE_SEL, 3);
    let epoch = d.t.epoch();

    d.write32(reg::VIRTIO_MMIO_STATUS, 0);
    assert_eq!(d.status(), 0);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    assert_eq!(d.t.driver_features(), 0);
    assert_eq!(d.t.epoch(), epoch + 1);
    // Selectors are back at 0: queue 0 is selected and the low feature word shows.
    assert_eq!(d.read32(reg::VIRTIO_MMIO_QUEUE_NUM_MAX), 128);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_DEVICE_FEATURES), 0);
    let q = d.t.queue(0).unwrap();
    assert!(!q.ready());
    assert_eq!((q.size(), q.desc_table(), q.avail_ring(), q.used_ring()), (128, 0, 0, 0));
    assert_eq!((q.next_avail(), q.next_used()), (0, 0));
    assert!(!d.t.is_live());
    // And the device comes up again from scratch.
    d.negotiate(VIRTIO_F_VERSION_1);
    assert_eq!(d.status(), 0xb);
}

#[test]
fn queue_setup_only_in_the_setup_phase() {
    let mut d = Driver::new();
    d.set_status(status::ACKNOWLEDGE);
    d.set_status(status::DRIVER);
    // Before FEATURES_OK.
    d.write32(reg::VIRTIO_MMIO_QUEUE_NUM, 8);
    d.write32(reg::VIRTIO_MMIO_QUEUE_DESC_LOW, 0x4000);
    d.write32(reg::VIRTIO_MMIO_QUEUE_READY, 1);
    let q = d.t.queue(0).unwrap();
    assert_eq!((q.size(), q.desc_table(), q.ready()), (128, 0, false));

    let mut d = Driver::live();
    // After DRIVER_OK.
    d.write32(reg::VIRTIO_MMIO_QUEUE_NUM, 8);
    d.write32(reg::VIRTIO_MMIO_QUEUE_DESC_LOW, 0x4000);
    d.write32(reg::VIRTIO_MMIO_QUEUE_READY, 0);
    let q = d.t.queue(0).unwrap();
    assert_eq!((q.size(), q.desc_table(), q.ready()), (QSIZE, DESC, true));
    assert_eq!(d.status(), u32::from(FULL));
}

#[test]
fn ready_queue_layout_cannot_change() {
    let mut d = Driver::new();
    d.negotiate(VIRTIO_F_VERSION_1);
    d.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    d.write32(reg::VIRTIO_MMIO_QUEUE_NUM, 8);
    d.write32(reg::VIRTIO_MMIO_QUEUE_USED_LOW, 0x8000);
    // Not 0 or 1: ignored, the queue stays ready.
    d.write32(reg::VIRTIO_MMIO_QUEUE_READY, 2);
    let q = d.t.queue(0).unwrap();
    assert_eq!((q.size(), q.used_ring(), q.ready()), (QSIZE, USED, true));
    // Unready, it can be reprogrammed.
    d.write32(reg::VIRTIO_MMIO_QUEUE_READY, 0);
    d.write32(reg::VIRTIO_MMIO_QUEUE_NUM, 8);
    assert_eq!(d.t.queue(0).unwrap().size(), 8);
    assert_eq!(d.status(), 0xb);
}

#[test]
fn bad_queue_sizes_need_reset() {
    for size in [0u32, 3, 12, 256, 0x1_0010] {
        let mut d = Driver::new();
        d.negotiate(VIRTIO_F_VERSION_1);
        d.write32(reg::VIRTIO_MMIO_QUEUE_SEL, 0);
        d.write32(reg::VIRTIO_MMIO_QUEUE_NUM, size);
        assert_eq!(d.status(), 0xb | NEEDS_RESET, "size {size}");
        assert_eq!(d.t.queue(0).unwrap().size(), 128);
        // The driver goes on (Linux does not look): DRIVER_OK is taken but the device stays dead.
        d.setup_queue(0, QSIZE, DESC, AVAIL, USED);
        d.set_status(status::DRIVER_OK);
        assert!(!d.t.is_live());
        d.request(0, 0, DATA, DATA + 0x100);
        assert_eq!(d.t.process_flushes(&mut FakeFlush::default()), 0);
        assert_eq!(d.used_idx(), 0);
        d.write32(reg::VIRTIO_MMIO_STATUS, 0);
        assert_eq!(d.status(), 0, "reset clears DEVICE_NEEDS_RESET");
    }
}

#[test]
fn misaligned_rings_need_reset() {
    for (low, addr) in [
        (reg::VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1008u32),
        (reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x2001),
        (reg::VIRTIO_MMIO_QUEUE_USED_LOW, 0x3002),
    ] {
        let mut d = Driver::new();
        d.negotiate(VIRTIO_F_VERSION_1);
        d.write32(low, addr);
        assert_eq!(d.status(), 0xb | NEEDS_RESET, "register {low:#x}");
    }
}

#[test]
fn rings_outside_memory_need_reset_at_driver_ok() {
    let mut d = Driver::new();
    d.negotiate(VIRTIO_F_VERSION_1);
    d.setup_queue(0, QSIZE, DESC, AVAIL, 0x10_0000_0000);
    d.set_status(status::DRIVER_OK);
    assert_eq!(d.status(), u32::from(FULL) | NEEDS_RESET);
    assert!(!d.t.is_live());
    // DRIVER_OK was set, so the driver hears about it through a config interrupt.
    assert_eq!(d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS), INT_CONFIG);
    assert_eq!(d.irq_count(), 1);
}

#[test]
fn queue_index_out_of_range_is_ignored() {
    let mut d = Driver::new();
    d.negotiate(VIRTIO_F_VERSION_1);
    d.write32(reg::VIRTIO_MMIO_QUEUE_SEL, 5);
    d.write32(reg::VIRTIO_MMIO_QUEUE_NUM, 16);
    d.write32(reg::VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
    d.write32(reg::VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_QUEUE_READY), 0);
    d.write32(reg::VIRTIO_MMIO_QUEUE_SEL, u32::MAX);
    d.write32(reg::VIRTIO_MMIO_QUEUE_NUM, 16);
    assert_eq!(d.status(), 0xb);
    assert_eq!(d.t.queue(0).unwrap().size(), 128);
    assert!(d.t.queue(5).is_none());
}

#[test]
fn register_accesses_must_be_aligned_32_bit() {
    let mut d = Driver::new();
    let mut two = [0xffu8; 2];
    d.t.read(0, &mut two);
    assert_eq!(two, [0, 0]);
    let mut four = [0xffu8; 4];
    d.t.read(2, &mut four);
    assert_eq!(four, [0; 4]);
    let mut eight = [0xffu8; 8];
    d.t.read(0, &mut eight);
    assert_eq!(eight, [0; 8]);
    let mut empty = [0u8; 0];
    d.t.read(0x70, &mut empty);
    // Narrow, wide or unaligned status writes do nothing.
    d.t.write(u64::from(reg::VIRTIO_MMIO_STATUS), &[1]);
    d.t.write(u64::from(reg::VIRTIO_MMIO_STATUS), &[1, 0, 0, 0, 0, 0, 0, 0]);
    d.t.write(u64::from(reg::VIRTIO_MMIO_STATUS) + 1, &[1, 0, 0, 0]);
    d.t.write(u64::from(reg::VIRTIO_MMIO_STATUS), &[]);
    assert_eq!(d.status(), 0);
    // Far past the window: a read of config space that does not exist.
    d.t.read(u64::MAX - 3, &mut four);
    assert_eq!(four, [0; 4]);
    d.t.write(u64::MAX - 3, &[1, 2, 3, 4]);
}

#[test]
fn config_space_holds_start_and_size() {
    let mut d = Driver::new();
    assert_eq!(d.read32(0x100), PMEM_START as u32);
    assert_eq!(d.read32(0x104), (PMEM_START >> 32) as u32);
    assert_eq!(d.read32(0x108), PMEM_SIZE as u32);
    assert_eq!(d.read32(0x10c), (PMEM_SIZE >> 32) as u32);
    assert_eq!(d.read32(0x110), 0, "past the config space");
    assert_eq!(d.read32(0x1fc), 0);
    let mut b = [0u8; 1];
    d.t.read(0x104, &mut b);
    assert_eq!(b, [1]);
    let mut h = [0u8; 2];
    d.t.read(0x10a, &mut h);
    assert_eq!(u16::from_le_bytes(h), (PMEM_SIZE >> 16) as u16);
    // Unaligned or 8-byte config reads are not allowed: zero.
    let mut w = [0xffu8; 4];
    d.t.read(0x102, &mut w);
    assert_eq!(w, [0; 4]);
    let mut q = [0xffu8; 8];
    d.t.read(0x108, &mut q);
    assert_eq!(q, [0; 8]);
    // Read-only.
    d.write32(0x108, 0);
    assert_eq!(d.read32(0x108), PMEM_SIZE as u32);
}

#[test]
fn config_change_bumps_the_generation() {
    let mut d = Driver::new();
    d.t.config_changed();
    assert_eq!(d.read32(reg::VIRTIO_MMIO_CONFIG_GENERATION), 1);
    assert_eq!(d.irq_count(), 0, "no interrupt before DRIVER_OK");
    let mut d = Driver::live();
    d.t.config_changed();
    assert_eq!(d.read32(reg::VIRTIO_MMIO_CONFIG_GENERATION), 1);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS), INT_CONFIG);
    assert_eq!(d.irq_count(), 1);
    d.write32(reg::VIRTIO_MMIO_STATUS, 0);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_CONFIG_GENERATION), 1, "kept across reset");
}

#[test]
fn queue_notify_signals_the_queue_eventfd() {
    let mut d = Driver::live();
    let evt = d.t.queue_evt(0).unwrap().try_clone().unwrap();
    assert!(evt.read().is_err(), "nothing pending yet");
    d.write32(reg::VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    d.write32(reg::VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert_eq!(evt.read().unwrap(), 2);
    d.write32(reg::VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    d.write32(reg::VIRTIO_MMIO_QUEUE_NOTIFY, u32::MAX);
    assert!(evt.read().is_err(), "other queue indices signal nothing");
    assert!(d.t.queue_evt(1).is_none());
    assert_eq!(d.t.register_notifies(), 4, "every QueueNotify write that reached the register file");
}

#[test]
fn interrupt_status_and_ack() {
    let mut d = Driver::live();
    d.request(0, 0, DATA, DATA + 0x100);
    d.t.process_flushes(&mut FakeFlush::default());
    assert_eq!(d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS), INT_VRING);
    assert_eq!(d.irq_count(), 1);
    d.t.config_changed();
    assert_eq!(d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS), INT_VRING | INT_CONFIG);
    d.write32(reg::VIRTIO_MMIO_INTERRUPT_ACK, INT_VRING);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS), INT_CONFIG);
    d.write32(reg::VIRTIO_MMIO_INTERRUPT_ACK, u32::MAX);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    // Nothing used, no interrupt.
    d.t.process_flushes(&mut FakeFlush::default());
    assert_eq!((d.irq_count(), d.read32(reg::VIRTIO_MMIO_INTERRUPT_STATUS)), (2, 0));
}

#[test]
fn sits_on_the_bus() {
    let d = Driver::new();
    let t = Arc::new(Mutex::new(d.t));
    let mut bus = Bus::new();
    bus.insert(t.clone(), 0xd000_0000, MMIO_WINDOW_SIZE).unwrap();
    let mut b = [0u8; 4];
    assert!(bus.read(0xd000_0008, &mut b));
    assert_eq!(u32::from_le_bytes(b), 27);
    assert!(bus.read(0xd000_0108, &mut b));
    assert_eq!(u32::from_le_bytes(b), PMEM_SIZE as u32);
    assert!(bus.write(0xd000_0070, &1u32.to_le_bytes()));
    assert_eq!(t.lock().unwrap().status(), 1);
}
