//! Arbitrary guest access sequences against the fault injector's MMIO handler: any offset, size and
//! value, reads and writes, from any vCPU, with or without an armed schedule. It must never panic, hold a
//! vCPU past its slice, or let its log grow past its capacity.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use daxvmm_devices::fault::{FaultDevice, FaultInjector, Schedule};
use libfuzzer_sys::fuzz_target;

const LOG_CAPACITY: usize = 256;

fuzz_target!(|data: &[u8]| {
    let injector = Arc::new(FaultInjector::new(LOG_CAPACITY, Duration::from_millis(1)));
    let dev = FaultDevice::new(injector.clone(), Duration::ZERO);
    let mut ops = data;
    // A first byte with the top bit set arms a small schedule of sync points and event steps.
    if let Some((&b, rest)) = ops.split_first() {
        if b & 0x80 != 0 {
            if let Ok(s) = "0.s1 1.s1 0.e7 1.s2 0.s2".parse::<Schedule>() {
                injector.arm(&s);
            }
        }
        ops = rest;
    }
    // Each op: kind (bit 0: write; bits 1-3: vCPU), offset (u16 LE, scaled to the 64 KiB window), size
    // (1..=8), value (u64 LE).
    while ops.len() >= 12 {
        let (op, rest) = ops.split_at(12);
        ops = rest;
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]]));
        let size = usize::from(op[3] % 8) + 1;
        let mut value = [0u8; 8];
        value.copy_from_slice(&op[4..12]);
        let vcpu = Some((op[0] >> 1) & 7);
        if op[0] & 1 == 1 {
            dev.mmio_write(vcpu, offset, &value[..size]);
        } else {
            let mut buf = [0u8; 8];
            dev.mmio_read(vcpu, offset, &mut buf[..size]);
        }
        assert!(injector.log_len() <= LOG_CAPACITY, "the event log outgrew its capacity");
    }
    injector.disarm();
});
