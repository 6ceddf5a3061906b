//! A test driver playing the guest: it brings the transport up through its registers in the order Linux's
//! virtio_mmio does (reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queue setup, DRIVER_OK), lays the
//! split virtqueue out in guest memory (descriptor table, available ring, used ring) and reads the used
//! ring back. Everything it writes goes through the same registers and memory a guest would use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_mmio as reg;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::bus::BusDevice;
use crate::virtio::mmio::{status, MmioTransport};
use crate::virtio::pmem::{Pmem, PmemFlush};
use crate::virtio::{IrqSignal, VirtioDevice, VIRTIO_F_VERSION_1};

pub const MEM_SIZE: usize = 1 << 20;
pub const DESC: u64 = 0x1000;
pub const AVAIL: u64 = 0x2000;
pub const USED: u64 = 0x3000;
/// Where request and response buffers go.
pub const DATA: u64 = 0x1_0000;
/// The queue size the driver picks: smaller than the device's maximum, as Linux may.
pub const QSIZE: u16 = 16;
pub const PMEM_START: u64 = 0x1_0000_0000;
pub const PMEM_SIZE: u64 = 0x4000_0000;
/// Fills response buffers before a request, so a test can tell "nothing written".
pub const SENTINEL: u32 = 0xaaaa_aaaa;

/// Device-readable.
pub const R: u16 = 0;
/// Device-writable.
pub const W: u16 = VRING_DESC_F_WRITE as u16;
pub const NEXT: u16 = VRING_DESC_F_NEXT as u16;
pub const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// Counts interrupts.
#[derive(Clone, Default)]
pub struct IrqCount(pub Arc<AtomicUsize>);

impl IrqSignal for IrqCount {
    fn signal(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A flush backend that counts calls and fails when told to.
#[derive(Default)]
pub struct FakeFlush {
    pub calls: usize,
    pub fail: bool,
}

impl PmemFlush for FakeFlush {
    fn flush(&mut self) -> std::io::Result<()> {
        self.calls += 1;
        if self.fail {
            Err(std::io::Error::other("disk on fire"))
        } else {
            Ok(())
        }
    }
}

/// The guest's side of one transport; pmem unless the test picks another device.
pub struct Driver<D = Pmem> {
    pub t: MmioTransport<D>,
    pub mem: GuestMemoryMmap,
    pub irqs: IrqCount,
    avail_idx: u16,
}

impl Driver<Pmem> {
    /// A transport for a pmem device, not yet touched by the driver.
    pub fn new() -> Self {
        Self::with_device(Pmem::new(PMEM_START, PMEM_SIZE).unwrap())
    }

    /// A pmem driver that went through the whole initialisation with queue size [`QSIZE`].
    pub fn live() -> Self {
        Self::live_with(Pmem::new(PMEM_START, PMEM_SIZE).unwrap())
    }

    /// A Linux-shaped flush at table entries `first`, `first + 1`: a 4-byte request of type `kind` at
    /// `req`, a 4-byte response at `resp` (pre-filled with [`SENTINEL`]). Returns the head.
    pub fn request(&mut self, first: u16, kind: u32, req: u64, resp: u64) -> u16 {
        self.put_u32(req, kind);
        self.put_u32(resp, SENTINEL);
        self.set_chain(first, &[(req, 4, R), (resp, 4, W)]);
        self.push_avail(first);
        first
    }
}

impl<D: VirtioDevice> Driver<D> {
    /// A transport for `device`, not yet touched by the driver.
    pub fn with_device(device: D) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let irqs = IrqCount::default();
        let t = MmioTransport::new(device, mem.clone(), Box::new(irqs.clone())).unwrap();
        Self { t, mem, irqs, avail_idx: 0 }
    }

    /// A driver for `device` that went through the whole initialisation with queue size [`QSIZE`].
    pub fn live_with(device: D) -> Self {
        let mut d = Self::with_device(device);
        d.negotiate(VIRTIO_F_VERSION_1);
        assert_eq!(d.status(), u32::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK));
        d.setup_queue(0, QSIZE, DESC, AVAIL, USED);
        d.set_status(status::DRIVER_OK);
        assert_eq!(d.status(), u32::from(FULL));
        assert!(d.t.is_live());
        d
    }

    /// Resets the device and brings it up again with queue 0 on rings other than the first ones, as a
    /// driver recovering from an error does while the device may still hold requests from before.
    pub fn restart_on_new_rings(&mut self) {
        self.write32(reg::VIRTIO_MMIO_STATUS, 0);
        self.negotiate(VIRTIO_F_VERSION_1);
        self.setup_queue(0, QSIZE, DESC, AVAIL + 0x400, USED + 0x400);
        self.set_status(status::DRIVER_OK);
        assert!(self.t.is_live());
    }

    pub fn read32(&mut self, offset: u32) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(u64::from(offset), &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write32(&mut self, offset: u32, value: u32) {
        self.t.write(u64::from(offset), &value.to_le_bytes());
    }

    pub fn status(&mut self) -> u32 {
        self.read32(reg::VIRTIO_MMIO_STATUS)
    }

    /// Sets one more status bit the way Linux does: read, or, write back.
    pub fn set_status(&mut self, bit: u8) {
        let s = self.status();
        self.write32(reg::VIRTIO_MMIO_STATUS, s | u32::from(bit));
    }

    /// Reset, ACKNOWLEDGE, DRIVER, accept `features`, ask for FEATURES_OK.
    pub fn negotiate(&mut self, features: u64) {
        self.write32(reg::VIRTIO_MMIO_STATUS, 0);
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::DRIVER);
        self.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        self.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
        self.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        self.write32(reg::VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
        self.set_status(status::FEATURES_OK);
    }

    pub fn setup_queue(&mut self, index: u32, size: u16, desc: u64, avail: u64, used: u64) {
        self.write32(reg::VIRTIO_MMIO_QUEUE_SEL, index);
        assert_eq!(self.read32(reg::VIRTIO_MMIO_QUEUE_READY), 0);
        self.write32(reg::VIRTIO_MMIO_QUEUE_NUM, u32::from(size));
        for (low, value) in [
            (reg::VIRTIO_MMIO_QUEUE_DESC_LOW, desc),
            (reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail),
            (reg::VIRTIO_MMIO_QUEUE_USED_LOW, used),
        ] {
            self.write32(low, value as u32);
            self.write32(low + 4, (value >> 32) as u32);
        }
        self.write32(reg::VIRTIO_MMIO_QUEUE_READY, 1);
    }

    pub fn set_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(DESC + u64::from(index) * 16);
        self.mem.write_obj(addr.to_le(), at).unwrap();
        self.mem.write_obj(len.to_le(), at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags.to_le(), at.unchecked_add(12)).unwrap();
        self.mem.write_obj(next.to_le(), at.unchecked_add(14)).unwrap();
    }

    /// Writes `descs` (address, length, flags) as one chain from table entry `first` on, linked in order.
    pub fn set_chain(&self, first: u16, descs: &[(u64, u32, u16)]) {
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let index = first + i as u16;
            let last = i + 1 == descs.len();
            let flags = if last { flags } else { flags | NEXT };
            self.set_desc(index, addr, len, flags, if last { 0 } else { index + 1 });
        }
    }

    /// Makes `head` available and bumps the available index, as virtqueue_add does.
    pub fn push_avail(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % QSIZE);
        self.mem.write_obj(head.to_le(), GuestAddress(AVAIL + 4 + slot * 2)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem.write_obj(self.avail_idx.to_le(), GuestAddress(AVAIL + 2)).unwrap();
    }

    /// Overwrites the available index with anything, as a hostile driver may.
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        self.mem.write_obj(idx.to_le(), GuestAddress(AVAIL + 2)).unwrap();
    }

    pub fn used_idx(&self) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(USED + 2)).unwrap())
    }

    /// Used ring element `i`: (id, len).
    pub fn used_elem(&self, i: u16) -> (u32, u32) {
        let at = GuestAddress(USED + 4 + u64::from(i % QSIZE) * 8);
        let id: u32 = self.mem.read_obj(at).unwrap();
        let len: u32 = self.mem.read_obj(at.unchecked_add(4)).unwrap();
        (u32::from_le(id), u32::from_le(len))
    }

    pub fn put_u32(&self, addr: u64, value: u32) {
        self.mem.write_obj(value.to_le(), GuestAddress(addr)).unwrap();
    }

    pub fn get_u32(&self, addr: u64) -> u32 {
        u32::from_le(self.mem.read_obj(GuestAddress(addr)).unwrap())
    }

    pub fn put_bytes(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    pub fn get_bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    pub fn irq_count(&self) -> usize {
        self.irqs.0.load(Ordering::SeqCst)
    }
}

/// Every status bit of a live device.
pub const FULL: u8 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
