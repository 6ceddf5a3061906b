//! The MMIO handler and its bus adapter, and a flood of random accesses through both.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::{shape, wait_until_held};
use crate::bus::BusDevice;
use crate::fault::*;

/// A device whose holds only the schedule ends (bound [`MAX_HOLD`]), with sync reads held for `slice`.
fn device(slice: Duration) -> FaultDevice {
    FaultDevice::new(Arc::new(FaultInjector::new(1000, MAX_HOLD)), slice)
}

fn read(dev: &FaultDevice, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    dev.mmio_read(Some(0), offset, &mut b);
    u64::from_le_bytes(b)
}

#[test]
fn identity_and_status_reads() {
    let mut dev = device(Duration::from_secs(1));
    let mut b = [0u8; 8];
    BusDevice::read(&mut dev, 0, &mut b);
    assert_eq!(&b, b"DAXFAULT");
    assert_eq!((read(&dev, 0x08), read(&dev, 0x10), read(&dev, 0x18)), (1, 0x1_0000, 0x8000));
    assert_eq!((read(&dev, 0x20), read(&dev, 0x28)), (8, 512));
    assert_eq!(read(&dev, 0x30), 0, "nothing armed");
    dev.injector().arm(&Schedule::default());
    assert_eq!(read(&dev, 0x30), 1, "armed");
    assert!(dev.injector().stats().protocol_errors.is_empty());
}

#[test]
fn sync_reads_hold_through_the_exit_handler_path_only() {
    let mut dev = device(MAX_HOLD);
    dev.injector().arm(&"0.s3 1.s4".parse().unwrap());
    let off = sync_offset(1, 4).unwrap();

    // Through the bus adapter: refused at once, all-ones, counted; the schedule is untouched.
    let mut b = [0u8; 8];
    BusDevice::read(&mut dev, off, &mut b);
    assert_eq!(u64::from_le_bytes(b), u64::MAX);
    assert_eq!(dev.injector().stats().protocol_errors.get("sync-via-bus"), Some(&1));

    // Through mmio_read: held until thread 0 passes point 3, which an event cannot do but a sync can.
    let held = {
        let dev = dev.clone();
        thread::spawn(move || read(&dev, off))
    };
    wait_until_held(dev.injector(), 1);
    assert_eq!(read(&dev, sync_offset(0, 3).unwrap()), SyncOutcome::Released.code());
    // Neither slice nor bound can end the hold: Released says thread 0's read let it go.
    assert_eq!(held.join().unwrap(), SyncOutcome::Released.code());
    assert_eq!(read(&dev, off), SyncOutcome::Unscheduled.code(), "already passed");
}

#[test]
fn event_writes_reach_the_log_and_the_schedule() {
    let dev = device(MAX_HOLD);
    dev.injector().arm(&"0.e7 1.s0".parse().unwrap());
    let held = {
        let dev = dev.clone();
        thread::spawn(move || read(&dev, sync_offset(1, 0).unwrap()))
    };
    wait_until_held(dev.injector(), 1);
    let wait_begin = Event::with_pfn(EventCode::WaitBegin, THREAD_ANY, 0x4_0000, 0).unwrap();
    dev.mmio_write(Some(1), EVENT_OFFSET, &wait_begin.encode().to_le_bytes());
    assert_eq!(held.join().unwrap(), 0);
    let log = dev.injector().take_log();
    let entry = log.entries.iter().find(|e| e.record == Record::Event(wait_begin)).unwrap();
    assert_eq!(entry.vcpu, Some(1));
}

#[test]
fn malformed_accesses_read_all_ones_and_are_counted_not_logged() {
    let mut dev = device(Duration::from_secs(1));
    let cases: [(u64, usize); 5] = [(0x00, 4), (0x04, 8), (0x40, 8), (0x100, 8), (0x1_0000, 2)];
    for (offset, size) in cases {
        let mut b = vec![0u8; size];
        dev.mmio_read(None, offset, &mut b);
        assert!(b.iter().all(|&x| x == 0xff), "{offset:#x}/{size}: {b:?}");
    }
    dev.mmio_write(None, 0x100, &[1, 2, 3, 4]); // short event
    dev.mmio_write(None, 0x00, &[0; 8]); // identity
    dev.mmio_write(None, 0x8000, &[0; 8]); // sync point
    dev.mmio_write(None, 0x100, &0u64.to_le_bytes()); // event code 0
    BusDevice::write(&mut dev, 0x100, &0x0109_0000_0000_0000u64.to_le_bytes()); // thread 9
    let stats = dev.injector().stats();
    let total: u64 = stats.protocol_errors.values().sum();
    assert_eq!(total, 10, "{:?}", stats.protocol_errors);
    assert_eq!(stats.protocol_errors.get("read-only"), Some(&2));
    assert_eq!(stats.events, 0);
    assert!(dev.injector().take_log().entries.is_empty());
}

#[test]
fn a_flood_of_random_accesses_never_panics_and_keeps_the_log_bounded() {
    // Zero slices and a 1 ms bound: held reads come back at once (retry), a few time out.
    let mut dev =
        FaultDevice::new(Arc::new(FaultInjector::new(1000, Duration::from_millis(1))), Duration::ZERO);
    let sc = shape(&[3, 3, 2]);
    let mut rng = SplitMix64::new(0x5eed);
    for i in 0..100_000u32 {
        if i % 5_000 == 0 {
            dev.injector().arm(&sc.sample(u64::from(i)));
        }
        // Mostly well-formed accesses (so the log fills and schedules run), with every kind of bad one.
        let skew = if rng.below(8) == 0 { rng.below(8) } else { 0 };
        let offset = match rng.below(8) {
            0 => rng.below(8) * 8 + skew,
            1..=3 => EVENT_OFFSET + skew,
            4..=5 => sync_offset(rng.below(3) as u8, rng.below(4) as u16).unwrap_or(0) + skew,
            6 => rng.below(0x1_0010),
            _ => u64::MAX - rng.below(16),
        };
        let size = if rng.below(4) == 0 { [0, 1, 2, 4, 16][rng.below(5) as usize] } else { 8 };
        let value = match rng.below(3) {
            0 => rng.next_u64(),
            1 => (rng.below(16) << 56) | (rng.below(10) << 48) | rng.below(1 << 48),
            _ => (rng.below(16) << 56) | (0xff << 48) | rng.below(1 << 20),
        };
        let mut buf = value.to_le_bytes().to_vec();
        buf.resize(size, 0xaa);
        let vcpu = Some(rng.below(8) as u8);
        match rng.below(4) {
            0 => dev.mmio_read(vcpu, offset, &mut buf),
            1 => dev.mmio_write(vcpu, offset, &buf),
            2 => BusDevice::read(&mut dev, offset, &mut buf),
            _ => BusDevice::write(&mut dev, offset, &buf),
        }
        assert!(dev.injector().log_len() <= 1000);
        if i == 50_000 {
            let snap = dev.injector().take_log();
            assert_eq!(snap.entries.len(), 1000);
            assert!(snap.dropped > 0);
        }
    }
    let stats = dev.injector().stats();
    assert!(stats.events > 1000 && stats.arrivals > 1000, "{stats:?}");
    assert!(stats.protocol_errors.len() >= 8, "{:?}", stats.protocol_errors);
    assert!(stats.log_dropped > 10_000 && stats.deviations > 0, "{stats:?}");
}
