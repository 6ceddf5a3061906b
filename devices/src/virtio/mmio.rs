//! The virtio-mmio transport (virtio 1.2 section 4.2.2, register layout version 2, modern devices only):
//! the register file, feature negotiation and the device status state machine, in front of one
//! [`VirtioDevice`].
//!
//! The transport owns the queues' driver-programmed state (`virtio_queue::Queue`) and the two ways out
//! of the model: a per-queue notification [`EventFd`] written on QueueNotify (the VMM later registers the
//! same fd as an ioeventfd, so both paths wake the same worker), and an [`IrqSignal`] raised with
//! InterruptStatus set. Device models touch a queue only through [`MmioTransport::with_queue`], which lends
//! it while the device is live and raises the interrupt or DEVICE_NEEDS_RESET afterwards.
//!
//! Guest input never panics the model: accesses of the wrong width or alignment, writes in the wrong
//! state and out-of-range queue indices are ignored with a warning; queue programming that would leave
//! the device and driver disagreeing (a bad queue size or misaligned ring) sets DEVICE_NEEDS_RESET.

use std::fmt;

use log::warn;
use thiserror::Error;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio as reg;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::queue::QueueCtx;
use super::{IrqSignal, VirtioDevice, VIRTIO_F_VERSION_1};

/// "virt" in little endian: the MagicValue register.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// The register layout version of a modern (non-legacy) virtio-mmio device.
pub const MMIO_VERSION: u32 = 2;
/// The VendorID register: "DAXV".
pub const MMIO_VENDOR_ID: u32 = u32::from_le_bytes(*b"DAXV");
/// Start of the device config space inside the window.
pub const MMIO_CONFIG_OFFSET: u64 = reg::VIRTIO_MMIO_CONFIG as u64;
/// Offset of QueueNotify, which the VMM can turn into an ioeventfd (datamatch: the queue index).
pub const MMIO_QUEUE_NOTIFY: u64 = reg::VIRTIO_MMIO_QUEUE_NOTIFY as u64;
/// Size of the MMIO window a transport answers: registers plus 256 bytes of config space.
pub const MMIO_WINDOW_SIZE: u64 = 0x200;

/// Device status bits, as `u8` (the Status register's meaningful width).
pub mod status {
    use super::*;
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = VIRTIO_CONFIG_S_DRIVER as u8;
    /// Feature negotiation is complete (the device may refuse to set it).
    pub const FEATURES_OK: u8 = VIRTIO_CONFIG_S_FEATURES_OK as u8;
    /// The driver is ready; the device is live.
    pub const DRIVER_OK: u8 = VIRTIO_CONFIG_S_DRIVER_OK as u8;
    /// The device hit an error it cannot recover from without a reset (device-owned).
    pub const NEEDS_RESET: u8 = VIRTIO_CONFIG_S_NEEDS_RESET as u8;
    /// The driver gave up on the device.
    pub const FAILED: u8 = VIRTIO_CONFIG_S_FAILED as u8;
}

/// InterruptStatus bit: a used ring changed.
pub const INT_VRING: u32 = reg::VIRTIO_MMIO_INT_VRING;
/// InterruptStatus bit: the config space (or DEVICE_NEEDS_RESET) changed.
pub const INT_CONFIG: u32 = reg::VIRTIO_MMIO_INT_CONFIG;

/// The driver's status values in the order the spec makes it set them (3.1.1).
const INIT_SEQUENCE: [u8; 5] = [
    0,
    status::ACKNOWLEDGE,
    status::ACKNOWLEDGE | status::DRIVER,
    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
];

/// Errors building a transport.
#[derive(Debug, Error)]
pub enum MmioError {
    /// A device asked for a queue size virtio-queue cannot have.
    #[error("queue {index}: maximum size {size} must be a power of two in 1..=32768")]
    QueueMaxSize {
        /// The queue's index.
        index: usize,
        /// The size the device asked for.
        size: u16,
    },
    /// The notification eventfd could not be made (fd limit?).
    #[error("queue {index}: cannot create its notification eventfd: {source}")]
    EventFd {
        /// The queue's index.
        index: usize,
        /// What eventfd(2) said.
        source: std::io::Error,
    },
}

/// One virtio device behind the virtio-mmio register file.
pub struct MmioTransport<D> {
    device: D,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    irq: Box<dyn IrqSignal>,
    status: u8,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    // Set when the driver accepts a feature bit above 63, which nothing here offers.
    driver_features_unknown: bool,
    queue_sel: u32,
    interrupt_status: u32,
    config_generation: u32,
    epoch: u64,
    register_notifies: u64,
}

impl<D> fmt::Debug for MmioTransport<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioTransport")
            .field("status", &self.status)
            .field("driver_features", &self.driver_features)
            .field("queues", &self.queues)
            .field("interrupt_status", &self.interrupt_status)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// A transport in reset state for `device`, whose queues live in `mem`, raising `irq`.
    pub fn new(device: D, mem: GuestMemoryMmap, irq: Box<dyn IrqSignal>) -> Result<Self, MmioError> {
        let mut queues = Vec::new();
        let mut queue_evts = Vec::new();
        for (index, &size) in device.queue_max_sizes().iter().enumerate() {
            queues.push(Queue::new(size).map_err(|_| MmioError::QueueMaxSize { index, size })?);
            queue_evts
                .push(EventFd::new(EFD_NONBLOCK).map_err(|source| MmioError::EventFd { index, source })?);
        }
        Ok(Self {
            device,
            mem,
            queues,
            queue_evts,
            irq,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            driver_features_unknown: false,
            queue_sel: 0,
            interrupt_status: 0,
            config_generation: 0,
            epoch: 0,
            register_notifies: 0,
        })
    }

    /// The device model.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device model, mutably (e.g. to reconfigure a backend).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Guest memory, as the device models see it: what a request taken from a queue is executed against
    /// (cheap to clone, so a worker can keep its own).
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The Status register.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The InterruptStatus register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// The features the driver accepted (meaningful once FEATURES_OK is set).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Everything offered: the device's bits plus VIRTIO_F_VERSION_1.
    pub fn offered_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    /// Number of queues.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Queue `index`'s state as the driver programmed it.
    pub fn queue(&self, index: usize) -> Option<&Queue> {
        self.queues.get(index)
    }

    /// The eventfd written when the driver notifies queue `index`; the VMM registers it as the
    /// ioeventfd for QueueNotify with datamatch `index`, and its worker waits on it.
    pub fn queue_evt(&self, index: usize) -> Option<&EventFd> {
        self.queue_evts.get(index)
    }

    /// How many QueueNotify writes reached this register file. With the VMM's ioeventfd on the register,
    /// KVM answers the driver's notifications without a VM exit and this stays 0.
    pub fn register_notifies(&self) -> u64 {
        self.register_notifies
    }

    /// Counts device resets: work started before a reset must not complete into the new queues.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// DRIVER_OK is set and neither FAILED nor DEVICE_NEEDS_RESET: queues may be processed.
    pub fn is_live(&self) -> bool {
        self.status & (status::DRIVER_OK | status::FAILED | status::NEEDS_RESET) == status::DRIVER_OK
    }

    /// Lends queue `index` to the device model while the device is live and the queue ready; afterwards
    /// raises the used-buffer interrupt if the model used buffers (and the driver wants it), or sets
    /// DEVICE_NEEDS_RESET if the model found the queue broken. `None` when the queue is not lent.
    pub fn with_queue<R>(
        &mut self,
        index: usize,
        f: impl FnOnce(&mut D, &mut QueueCtx<'_>) -> R,
    ) -> Option<R> {
        if !self.is_live() {
            return None;
        }
        let queue = self.queues.get_mut(index).filter(|q| q.ready())?;
        let mut ctx = QueueCtx::new(queue, &self.mem);
        let r = f(&mut self.device, &mut ctx);
        let broken = ctx.broken();
        let notify = ctx.used() && ctx.needs_notification();
        if notify {
            self.raise(INT_VRING);
        }
        if broken {
            self.needs_reset("a queue's rings are unusable");
        }
        Some(r)
    }

    /// The device config changed: bumps ConfigGeneration and, once the driver is up, interrupts.
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & status::DRIVER_OK != 0 {
            self.raise(INT_CONFIG);
        }
    }

    fn raise(&mut self, cause: u32) {
        self.interrupt_status |= cause;
        if let Err(e) = self.irq.signal() {
            warn!("virtio-mmio: cannot raise the interrupt: {e}");
        }
    }

    fn needs_reset(&mut self, why: &str) {
        if self.status & status::NEEDS_RESET != 0 {
            return;
        }
        warn!("virtio-mmio: device needs reset: {why}");
        self.status |= status::NEEDS_RESET;
        // The spec requires a config change notification once the driver is up (2.1.2).
        if self.status & status::DRIVER_OK != 0 {
            self.raise(INT_CONFIG);
        }
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.driver_features_unknown = false;
        self.queue_sel = 0;
        self.interrupt_status = 0;
        // ConfigGeneration is kept: it only has to change when the config does, and a value that goes
        // back to an old one could let a driver miss a change it read across the reset.
        self.epoch = self.epoch.wrapping_add(1);
        self.device.reset();
    }

    fn features_acceptable(&self) -> bool {
        self.driver_features & VIRTIO_F_VERSION_1 != 0
            && self.driver_features & !self.offered_features() == 0
            && !self.driver_features_unknown
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let Ok(value) = u8::try_from(value) else {
            warn!("virtio-mmio: status {value:#x} has undefined bits; ignored");
            return;
        };
        // DEVICE_NEEDS_RESET is the device's: drivers echo it back in read-modify-write updates.
        let new = value & !status::NEEDS_RESET;
        let old = self.status & !status::NEEDS_RESET;
        if new & old != old {
            warn!(
                "virtio-mmio: status {value:#x} clears bits of {:#x}; only a reset (0) may; ignored",
                self.status
            );
            return;
        }
        if new & status::FAILED != 0 {
            self.status |= status::FAILED;
            return;
        }
        if !INIT_SEQUENCE.contains(&new) {
            warn!("virtio-mmio: status {value:#x} skips a step of the initialisation sequence; ignored");
            return;
        }
        let added = new & !old;
        let mut accepted = new;
        if added & status::FEATURES_OK != 0 && !self.features_acceptable() {
            // Refusing FEATURES_OK is how the device says no (3.1.1 step 6): the driver reads it back.
            warn!("virtio-mmio: driver features {:#x} refused (VERSION_1 is required)", self.driver_features);
            accepted &= status::ACKNOWLEDGE | status::DRIVER;
        }
        self.status = accepted | (self.status & status::NEEDS_RESET);
        if accepted & added & status::DRIVER_OK != 0 {
            let mem = &self.mem;
            if let Some(i) = self.queues.iter().position(|q| q.ready() && !q.is_valid(mem)) {
                warn!("virtio-mmio: queue {i} rings are not in guest memory at DRIVER_OK");
                self.needs_reset("a ready queue's rings are not in guest memory");
            }
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status & (status::DRIVER | status::FEATURES_OK | status::FAILED) != status::DRIVER {
            warn!("virtio-mmio: DriverFeatures written in status {:#x}; ignored", self.status);
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32),
            _ => self.driver_features_unknown |= value != 0,
        }
    }

    /// The selected queue, if the driver may program it now: after FEATURES_OK, before DRIVER_OK.
    fn setup_queue(&mut self, what: &str) -> Option<&mut Queue> {
        let setup = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        let mask = setup | status::DRIVER_OK | status::FAILED | status::NEEDS_RESET;
        if self.status & mask != setup {
            warn!("virtio-mmio: {what} written in status {:#x}; ignored", self.status);
            return None;
        }
        let sel = self.queue_sel;
        let q = usize::try_from(sel).ok().and_then(|i| self.queues.get_mut(i));
        if q.is_none() {
            warn!("virtio-mmio: {what} written for queue {sel}, which does not exist; ignored");
        }
        q
    }

    /// Like [`Self::setup_queue`], but the queue must not be ready: its layout is the driver's promise.
    fn setup_idle_queue(&mut self, what: &str) -> Option<&mut Queue> {
        let q = self.setup_queue(what)?;
        if q.ready() {
            warn!("virtio-mmio: {what} written while the queue is ready; ignored");
            return None;
        }
        Some(q)
    }

    fn write_queue_reg(&mut self, offset: u32, value: u32) {
        let ok = match offset {
            reg::VIRTIO_MMIO_QUEUE_NUM => self
                .setup_idle_queue("QueueNum")
                .map(|q| u16::try_from(value).ok().is_some_and(|n| q.try_set_size(n).is_ok())),
            reg::VIRTIO_MMIO_QUEUE_READY => self.setup_queue("QueueReady").map(|q| {
                match value {
                    0 | 1 => q.set_ready(value == 1),
                    _ => warn!("virtio-mmio: QueueReady {value:#x} is neither 0 nor 1; ignored"),
                }
                true
            }),
            _ => self.setup_idle_queue("a queue address").map(|q| set_queue_address(q, offset, value)),
        };
        if ok == Some(false) {
            self.needs_reset("the driver programmed an invalid queue size or a misaligned ring");
        }
    }

    fn notify(&mut self, value: u32) {
        self.register_notifies += 1;
        // Without VIRTIO_F_NOTIFICATION_DATA the value is just the queue index.
        match usize::try_from(value).ok().and_then(|i| self.queue_evts.get(i)) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    warn!("virtio-mmio: cannot signal queue {value}: {e}");
                }
            }
            None => warn!("virtio-mmio: notify for queue {value}, which does not exist; ignored"),
        }
    }

    fn read_register(&self, offset: u32) -> u32 {
        let selected = usize::try_from(self.queue_sel).ok().and_then(|i| self.queues.get(i));
        match offset {
            reg::VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            reg::VIRTIO_MMIO_VERSION => MMIO_VERSION,
            reg::VIRTIO_MMIO_DEVICE_ID => self.device.device_id(),
            reg::VIRTIO_MMIO_VENDOR_ID => MMIO_VENDOR_ID,
            reg::VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            reg::VIRTIO_MMIO_QUEUE_NUM_MAX => selected.map_or(0, |q| u32::from(q.max_size())),
            reg::VIRTIO_MMIO_QUEUE_READY => selected.map_or(0, |q| u32::from(q.ready())),
            reg::VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            reg::VIRTIO_MMIO_STATUS => u32::from(self.status),
            // No shared memory regions: a region that does not exist has length and base all ones.
            reg::VIRTIO_MMIO_SHM_LEN_LOW
            | reg::VIRTIO_MMIO_SHM_LEN_HIGH
            | reg::VIRTIO_MMIO_SHM_BASE_LOW
            | reg::VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            reg::VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => {
                warn!("virtio-mmio: read of write-only or reserved register {offset:#x}; reads 0");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u32, value: u32) {
        match offset {
            reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(value),
            reg::VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            reg::VIRTIO_MMIO_QUEUE_NUM
            | reg::VIRTIO_MMIO_QUEUE_READY
            | reg::VIRTIO_MMIO_QUEUE_DESC_LOW
            | reg::VIRTIO_MMIO_QUEUE_DESC_HIGH
            | reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | reg::VIRTIO_MMIO_QUEUE_USED_LOW
            | reg::VIRTIO_MMIO_QUEUE_USED_HIGH => self.write_queue_reg(offset, value),
            reg::VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(value),
            reg::VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::VIRTIO_MMIO_STATUS => self.write_status(value),
            _ => warn!("virtio-mmio: write of read-only or reserved register {offset:#x}; ignored"),
        }
    }
}

/// Sets one half of one ring address; false if the result breaks the ring's alignment.
fn set_queue_address(q: &mut Queue, offset: u32, value: u32) -> bool {
    let (current, high) = match offset {
        reg::VIRTIO_MMIO_QUEUE_DESC_LOW | reg::VIRTIO_MMIO_QUEUE_DESC_HIGH => {
            (q.desc_table(), offset == reg::VIRTIO_MMIO_QUEUE_DESC_HIGH)
        }
        reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW | reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
            (q.avail_ring(), offset == reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH)
        }
        _ => (q.used_ring(), offset == reg::VIRTIO_MMIO_QUEUE_USED_HIGH),
    };
    let addr = if high {
        (current & 0xffff_ffff) | (u64::from(value) << 32)
    } else {
        (current & !0xffff_ffff) | u64::from(value)
    };
    let addr = GuestAddress(addr);
    match offset {
        reg::VIRTIO_MMIO_QUEUE_DESC_LOW | reg::VIRTIO_MMIO_QUEUE_DESC_HIGH => {
            q.try_set_desc_table_address(addr).is_ok()
        }
        reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW | reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH => {
            q.try_set_avail_ring_address(addr).is_ok()
        }
        _ => q.try_set_used_ring_address(addr).is_ok(),
    }
}

/// Config space accesses the spec allows: 1, 2 or 4 bytes, naturally aligned (4.2.2.2).
fn config_access_ok(offset: u64, len: usize) -> bool {
    matches!(len, 1 | 2 | 4) && offset.is_multiple_of(len as u64)
}

impl<D: VirtioDevice> crate::bus::BusDevice for MmioTransport<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= MMIO_CONFIG_OFFSET {
            if config_access_ok(offset, data.len()) {
                self.device.read_config(offset - MMIO_CONFIG_OFFSET, data);
            } else {
                warn!("virtio-mmio: {}-byte config read at {offset:#x} is not allowed; reads 0", data.len());
                data.fill(0);
            }
            return;
        }
        match (u32::try_from(offset), <[u8; 4]>::try_from(&*data)) {
            (Ok(offset), Ok(_)) if offset % 4 == 0 => {
                let value = self.read_register(offset);
                data.copy_from_slice(&value.to_le_bytes());
            }
            _ => {
                warn!(
                    "virtio-mmio: {}-byte register read at {offset:#x}; registers are 32-bit; reads 0",
                    data.len()
                );
                data.fill(0);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= MMIO_CONFIG_OFFSET {
            if config_access_ok(offset, data.len()) {
                self.device.write_config(offset - MMIO_CONFIG_OFFSET, data);
            } else {
                warn!("virtio-mmio: {}-byte config write at {offset:#x} is not allowed; ignored", data.len());
            }
            return;
        }
        match (u32::try_from(offset), <[u8; 4]>::try_from(data)) {
            (Ok(offset), Ok(bytes)) if offset % 4 == 0 => {
                self.write_register(offset, u32::from_le_bytes(bytes))
            }
            _ => warn!(
                "virtio-mmio: {}-byte register write at {offset:#x}; registers are 32-bit; ignored",
                data.len()
            ),
        }
    }
}
