//! What the virtio fuzz targets share: reading the fuzz input, two guest memory regions with a hole
//! between them, Linux's bring-up of a virtio-mmio device, fuzzed descriptor chains made available as a
//! driver would, and the checks that a synchronous run writes only the used ring and device-writable
//! buffers and adds used entries naming heads inside the queue. Included by each target with `#[path]`.
#![allow(dead_code)]

use daxvmm_devices::bus::BusDevice;
use daxvmm_devices::virtio::mmio::{status, MmioTransport, MMIO_WINDOW_SIZE};
use daxvmm_devices::virtio::{IrqSignal, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Two 32 KiB regions with a hole between them, so chains can straddle or fall into it.
pub const REGIONS: [(u64, usize); 2] = [(0, 0x8000), (0x1_0000, 0x8000)];
/// Status register bits that are defined (bit 4 and 5 are not).
pub const DEFINED_STATUS: u32 = 0xff & !0x30;

/// Interrupts go nowhere: the targets check rings and buffers, not interrupts.
pub struct NoIrq;
impl IrqSignal for NoIrq {
    fn signal(&self) -> std::io::Result<()> {
        Ok(())
    }
}
pub struct Input<'a>(pub &'a [u8]);
impl Input<'_> {
    pub fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

pub fn snapshot(mem: &GuestMemoryMmap) -> Vec<Vec<u8>> {
    REGIONS
        .iter()
        .map(|&(base, len)| {
            let mut v = vec![0u8; len];
            mem.read_slice(&mut v, GuestAddress(base)).unwrap();
            v
        })
        .collect()
}

/// The guest ranges the device may write during a synchronous run: the used ring and every buffer the
/// descriptor table marks device-writable; and whether those can alias the table itself, in which case
/// the device's own writes may legitimately change which buffers are writable mid-run.
pub fn writable_ranges<D: VirtioDevice>(
    t: &MmioTransport<D>,
    mem: &GuestMemoryMmap,
) -> (Vec<(u64, u64)>, bool) {
    let Some(q) = t.queue(0).map(|q| q.state()) else { return (Vec::new(), true) };
    let size = u64::from(q.size);
    let table = (q.desc_table, q.desc_table.saturating_add(16 * size));
    let mut ranges = vec![(q.used_ring, q.used_ring.saturating_add(6 + 8 * size))];
    for i in 0..size {
        let at = q.desc_table.wrapping_add(i * 16);
        let (Ok(addr), Ok(len), Ok(flags)) = (
            mem.read_obj::<u64>(GuestAddress(at)),
            mem.read_obj::<u32>(GuestAddress(at.wrapping_add(8))),
            mem.read_obj::<u16>(GuestAddress(at.wrapping_add(12))),
        ) else {
            continue;
        };
        if flags & 2 != 0 {
            ranges.push((addr, addr.saturating_add(u64::from(len))));
        }
    }
    let aliased =
        ranges.iter().any(|&r| overlap(r, table)) || ranges[1..].iter().any(|&r| overlap(r, ranges[0]));
    (ranges, aliased)
}

pub fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

pub fn check_sync_writes(before: &[Vec<u8>], after: &[Vec<u8>], allowed: &[(u64, u64)]) {
    for (r, &(base, _)) in REGIONS.iter().enumerate() {
        for (i, (a, b)) in before[r].iter().zip(&after[r]).enumerate() {
            if a != b {
                let addr = base + i as u64;
                assert!(
                    allowed.iter().any(|&(s, e)| s <= addr && addr < e),
                    "device wrote {addr:#x}, outside the used ring and every device-writable buffer"
                );
            }
        }
    }
}

pub fn write32<D: VirtioDevice>(t: &mut MmioTransport<D>, offset: u32, value: u32) {
    t.write(u64::from(offset), &value.to_le_bytes());
}

pub fn read32<D: VirtioDevice>(t: &mut MmioTransport<D>, offset: u32) -> u32 {
    let mut b = [0u8; 4];
    t.read(u64::from(offset), &mut b);
    u32::from_le_bytes(b)
}

/// Linux's bring-up: reset, ACKNOWLEDGE, DRIVER, VERSION_1, FEATURES_OK, queue 0, DRIVER_OK.
pub fn bring_up<D: VirtioDevice>(t: &mut MmioTransport<D>, size: u16, desc: u64, avail: u64, used: u64) {
    write32(t, 0x70, 0);
    for bit in [status::ACKNOWLEDGE, status::DRIVER] {
        let s = read32(t, 0x70);
        write32(t, 0x70, s | u32::from(bit));
    }
    write32(t, 0x24, 1);
    write32(t, 0x20, 1);
    let s = read32(t, 0x70);
    write32(t, 0x70, s | u32::from(status::FEATURES_OK));
    write32(t, 0x30, 0);
    write32(t, 0x38, u32::from(size));
    for (low, v) in [(0x80, desc), (0x90, avail), (0xa0, used)] {
        write32(t, low, v as u32);
        write32(t, low + 4, (v >> 32) as u32);
    }
    write32(t, 0x44, 1);
    let s = read32(t, 0x70);
    write32(t, 0x70, s | u32::from(status::DRIVER_OK));
}

/// The operations every virtio target shares, chosen by `op` (0..=3): a register access (any offset in
/// the window, width 1..=8, any value), a guest memory write, or a Linux-shaped bring-up. `None` when the
/// input ran out.
pub fn shared_op<D: VirtioDevice>(
    op: u8,
    input: &mut Input<'_>,
    t: &mut MmioTransport<D>,
    mem: &GuestMemoryMmap,
) -> Option<()> {
    match op {
        // A register access: any offset in the window, width 1..=8, any value.
        0 | 1 => {
            let (Some(offset), Some(width), Some(value)) = (input.u16(), input.u8(), input.bytes(8)) else {
                return None;
            };
            let offset = u64::from(offset) % MMIO_WINDOW_SIZE;
            let width = usize::from(width % 8) + 1;
            if op & 1 == 0 {
                t.write(offset, &value[..width]);
            } else {
                let mut buf = [0u8; 8];
                t.read(offset, &mut buf[..width]);
            }
        }
        // Guest memory: up to 64 bytes anywhere in the first 64 KiB of address space (holes ignored).
        2 => {
            let (Some(addr), Some(len)) = (input.u16(), input.u8()) else { return None };
            let Some(bytes) = input.bytes(usize::from(len % 64)) else { return None };
            let _ = mem.write_slice(bytes, GuestAddress(u64::from(addr)));
        }
        // A Linux-shaped bring-up. Half the time with a power-of-two size and aligned rings in the
        // first region, so requests get served; otherwise with raw values, which mostly break it.
        3 => {
            let (Some(size), Some(desc), Some(avail), Some(used)) =
                (input.u16(), input.u32(), input.u32(), input.u32())
            else {
                return None;
            };
            let (desc, avail, used) = (u64::from(desc), u64::from(avail), u64::from(used));
            if size & 0x8000 == 0 {
                let size = 1u16 << (size % 8);
                bring_up(t, size, desc & 0x7ff0, avail & 0x7ffe, used & 0x7ffc);
            } else {
                bring_up(t, size, desc & 0x1_ffff, avail & 0x1_ffff, used & 0x1_ffff);
            }
        }
        _ => {}
    }
    Some(())
}

/// A descriptor as the targets write it: address, length, flags, next.
pub type Desc = (u64, u32, u16, u16);

/// `shape % 4 + 1` fuzzed descriptors for a chain at `head` of a `size`-entry queue: each a fuzzed
/// address, a length from `lens` (the lengths that matter to the device) or, for the eighth pick, a raw
/// one, and fuzzed NEXT/WRITE/INDIRECT bits; the links follow the chain unless the flags byte's top bit
/// asks for the input's own.
pub fn fuzzed_descs(
    input: &mut Input<'_>,
    shape: u8,
    head: u16,
    size: u16,
    lens: [u32; 7],
) -> Option<Vec<Desc>> {
    let count = u16::from(shape % 4 + 1);
    let mut descs = Vec::new();
    for i in 0..count {
        let (addr, len_pick, flags, next) = (input.u16()?, input.u8()?, input.u8()?, input.u8()?);
        let len = match lens.get(usize::from(len_pick % 8)) {
            Some(&len) => len,
            None => input.u32()?,
        };
        let mut f = u16::from(flags & 0x6);
        let mut n = u16::from(next);
        if flags & 0x80 == 0 {
            if i + 1 < count {
                f |= 1;
                n = head.wrapping_add(i + 1) % size;
            }
        } else {
            f |= u16::from(flags & 1);
        }
        descs.push((u64::from(addr), len, f, n));
    }
    Some(descs)
}

/// Writes `descs` into queue 0's descriptor table from `head` on (wrapping) and makes `head` available.
pub fn publish_chain<D: VirtioDevice>(
    t: &MmioTransport<D>,
    mem: &GuestMemoryMmap,
    head: u16,
    descs: Vec<Desc>,
) -> Option<()> {
    let q = t.queue(0)?.state();
    let size = q.size.max(1);
    for (i, (addr, len, flags, next)) in descs.into_iter().enumerate() {
        let index = head.wrapping_add(i as u16) % size;
        let at = q.desc_table.wrapping_add(u64::from(index) * 16);
        let _ = mem.write_obj(addr, GuestAddress(at));
        let _ = mem.write_obj(len, GuestAddress(at.wrapping_add(8)));
        let _ = mem.write_obj(flags, GuestAddress(at.wrapping_add(12)));
        let _ = mem.write_obj(next, GuestAddress(at.wrapping_add(14)));
    }
    let idx_at = GuestAddress(q.avail_ring.wrapping_add(2));
    let idx: u16 = mem.read_obj(idx_at).ok()?;
    let slot = q.avail_ring.wrapping_add(4 + u64::from(idx % size) * 2);
    let _ = mem.write_obj(head, GuestAddress(slot));
    let _ = mem.write_obj(idx.wrapping_add(1), idx_at);
    Some(())
}

/// Runs queue 0 in place with `run` and, when the guest's rings and buffers do not alias the descriptor
/// table or the used ring (aliasing lets the device's own writes rewrite the request), checks that it
/// changed guest bytes only inside the used ring and device-writable buffers and that every used entry
/// it added names a head inside the queue with a length `len_ok` accepts (given the length and the
/// queue's size).
pub fn checked_sync_run<D: VirtioDevice, R>(
    t: &mut MmioTransport<D>,
    mem: &GuestMemoryMmap,
    run: impl FnOnce(&mut MmioTransport<D>) -> R,
    len_ok: impl Fn(u32, u16) -> bool,
) -> R {
    let (allowed, aliased) = writable_ranges(t, mem);
    let used_before = t.queue(0).map(|q| q.state().next_used);
    let before = snapshot(mem);
    let result = run(t);
    if !aliased {
        check_sync_writes(&before, &snapshot(mem), &allowed);
        if let (Some(q), Some(mut i)) = (t.queue(0), used_before) {
            let state = q.state();
            while i != state.next_used {
                let at = state.used_ring + 4 + u64::from(i % state.size) * 8;
                let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
                let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap();
                assert!(
                    id < u32::from(state.size),
                    "used entry names head {id} of a {}-entry queue",
                    state.size
                );
                assert!(len_ok(len, state.size), "used length {len}");
                i = i.wrapping_add(1);
            }
        }
    }
    result
}

/// The identity registers (magic, version 2, `device_id`) never change, and the status register only
/// ever holds defined bits.
pub fn check_registers<D: VirtioDevice>(t: &mut MmioTransport<D>, device_id: u32) {
    assert_eq!(read32(t, 0), 0x7472_6976);
    assert_eq!(read32(t, 4), 2);
    assert_eq!(read32(t, 8), device_id);
    assert_eq!(read32(t, 0x70) & !DEFINED_STATUS, 0, "undefined status bits");
}
