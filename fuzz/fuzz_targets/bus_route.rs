//! The bus dispatch on its own: arbitrary device windows inserted (anywhere in the 64-bit space, often
//! overlapping or empty or wrapping) and arbitrary accesses routed, against a plain model. It must never
//! panic; an insert must fail exactly when the window is empty, wraps, or overlaps one already there
//! (naming the first such window); an access must reach exactly the one device whose window holds all of
//! it, at the right offset and with its full length, and no device otherwise (an unclaimed read leaves
//! its buffer alone).
#![no_main]

use std::sync::{Arc, Mutex};

use daxvmm_devices::bus::{Bus, BusDevice, BusError};
use libfuzzer_sys::fuzz_target;

/// What one device saw: (write?, offset, length).
#[derive(Default)]
struct Recorder {
    id: u8,
    calls: Vec<(bool, u64, usize)>,
}

impl BusDevice for Recorder {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.calls.push((false, offset, data.len()));
        data.fill(self.id);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.calls.push((true, offset, data.len()));
    }
}

/// Takes `n` bytes as a little-endian number (missing bytes are zero).
fn take(ops: &mut &[u8], n: usize) -> u64 {
    let k = n.min(ops.len());
    let mut b = [0u8; 8];
    b[..k].copy_from_slice(&ops[..k]);
    *ops = &ops[k..];
    u64::from_le_bytes(b)
}

/// A number from `ops`: small (one byte, so windows meet and overlap) or anywhere (eight bytes, near the
/// top of the address space when `high`).
fn number(ops: &mut &[u8], wide: bool, high: bool) -> u64 {
    match (wide, high) {
        (false, false) => take(ops, 1),
        (false, true) => u64::MAX - take(ops, 1),
        (true, _) => take(ops, 8),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut bus = Bus::new();
    // The model: (base, len, device), in insertion order.
    let mut windows: Vec<(u64, u64, Arc<Mutex<Recorder>>)> = Vec::new();
    let mut ops = data;
    while let Some((&kind, rest)) = ops.split_first() {
        ops = rest;
        let (wide, high) = (kind & 0x10 != 0, kind & 0x20 != 0);
        if kind & 1 == 0 {
            // Insert a window.
            let base = number(&mut ops, wide, high);
            let len = number(&mut ops, wide && kind & 0x40 != 0, false);
            let id = windows.len() as u8;
            let dev = Arc::new(Mutex::new(Recorder { id, calls: Vec::new() }));
            let want = if len == 0 || base.checked_add(len).is_none() {
                Err(BusError::InvalidWindow { base, len })
            } else {
                let mut sorted: Vec<&(u64, u64, _)> = windows.iter().collect();
                sorted.sort_by_key(|w| w.0);
                match sorted.iter().find(|w| base < w.0 + w.1 && w.0 < base + len) {
                    Some(w) => Err(BusError::Overlap { base, len, other_base: w.0, other_len: w.1 }),
                    None => Ok(()),
                }
            };
            let got = bus.insert(dev.clone(), base, len);
            assert_eq!(got, want, "insert {base:#x}+{len:#x} into {:x?}", bus);
            if got.is_ok() {
                windows.push((base, len, dev));
            }
        } else {
            // An access of 0..=8 bytes (16 when kind says so) that writes when bit 1 is set.
            let write = kind & 2 != 0;
            let size = usize::from(kind >> 2 & 3) * 4 + usize::from(kind >> 6) % 5;
            let addr = number(&mut ops, wide, high);
            // The window holding all of addr..addr+size; a zero-sized access at the boundary of two
            // windows goes to the upper one.
            let end = u128::from(addr) + size as u128;
            let want = windows
                .iter()
                .filter(|w| w.0 <= addr && end <= u128::from(w.0) + u128::from(w.1))
                .max_by_key(|w| w.0);
            let mut buf = [0x5au8; 16];
            let buf = &mut buf[..size];
            let hit = if write { bus.write(addr, buf) } else { bus.read(addr, buf) };
            assert_eq!(hit, want.is_some(), "claim of {size} bytes at {addr:#x} on {:x?}", bus);
            for (base, _, dev) in &windows {
                let mut d = dev.lock().unwrap_or_else(|e| e.into_inner());
                let calls = std::mem::take(&mut d.calls);
                if want.is_some_and(|w| Arc::ptr_eq(&w.2, dev)) {
                    assert_eq!(calls, [(write, addr - base, size)], "device at {base:#x}");
                    if !write {
                        assert!(buf.iter().all(|&b| b == d.id), "the device's bytes did not all arrive");
                    }
                } else {
                    assert!(calls.is_empty(), "device at {base:#x} got an access not in its window");
                }
            }
            if want.is_none() {
                assert!(buf.iter().all(|&b| b == 0x5a), "an unclaimed access changed its buffer");
            }
        }
    }
});
