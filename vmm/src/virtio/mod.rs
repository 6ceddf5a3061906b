//! The machine's virtio devices: virtio-pmem regions (`--pmem ...,type=virtio`) and virtio-blk disks
//! (`--disk`), in that order in the virtio-mmio slots of the layout. Each is a transport on the MMIO bus
//! whose queue notifications are ioeventfds (KVM wakes the device's worker without a VM exit) and whose
//! interrupt is an irqfd on its IOAPIC input, plus a worker thread that serves its queue: a flush is an
//! msync of a file and a disk request is file I/O, too slow for a vCPU thread or the transport's lock.

pub mod disk;
mod pmem;
mod worker;

use std::sync::{Arc, Mutex};

use daxvmm_devices::acpi::VirtioMmioDevice;
use daxvmm_devices::bus::{lock, Bus, BusError};
use daxvmm_devices::layout::{virtio_mmio_base, VIRTIO_GSI_BASE, VIRTIO_MMIO_MAX};
use daxvmm_devices::virtio::blk::{Blk, BlkError, BLK_REQUEST_QUEUE};
use daxvmm_devices::virtio::mmio::{MmioError, MmioTransport, MMIO_QUEUE_NOTIFY, MMIO_WINDOW_SIZE};
use daxvmm_devices::virtio::pmem::{Pmem, PmemError, PMEM_REQUEST_QUEUE};
use daxvmm_devices::virtio::VirtioDevice;
use kvm_ioctls::{IoEventAddress, VmFd};
use thiserror::Error;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::pmem::backing::FlushRange;
use crate::seccomp::Filters;
use disk::Disk;
pub use pmem::PmemDevice;
use worker::Worker;

/// Errors setting up the virtio devices; each names the device ("virtio-blk0").
#[derive(Debug, Error)]
pub enum VirtioError {
    /// More virtio devices than the layout has windows for.
    #[error("at most {VIRTIO_MMIO_MAX} virtio devices (pmem type=virtio and --disk together) are supported, not {0}")]
    TooMany(usize),
    /// The pmem device refused its region (a daxvmm bug: regions are placed before this).
    #[error("{0}: {1}")]
    Pmem(String, PmemError),
    /// The disk device refused the image.
    #[error("{0}: {1}")]
    Blk(String, BlkError),
    /// The transport refused the device (a daxvmm bug).
    #[error("{0}: {1}")]
    Transport(String, MmioError),
    /// An eventfd, the irqfd or an ioeventfd could not be set up.
    #[error("{0}: {1}: {2}")]
    Host(String, &'static str, std::io::Error),
    /// The transport's window did not fit on the MMIO bus.
    #[error("{0}: {1}")]
    Bus(String, BusError),
    /// The worker thread could not be started.
    #[error("{0}: cannot start its thread: {1}")]
    Thread(String, std::io::Error),
}

/// What the DSDT says about the device in virtio slot `i`.
pub fn acpi_device(i: usize) -> VirtioMmioDevice {
    VirtioMmioDevice {
        base: virtio_mmio_base(i) as u32,
        len: MMIO_WINDOW_SIZE as u32,
        gsi: VIRTIO_GSI_BASE + i as u32,
    }
}

/// The virtio devices of one machine, with their workers once started.
#[derive(Debug, Default)]
pub struct VirtioDevices {
    devices: Vec<Device>,
    workers: Vec<Worker>,
}

#[derive(Debug)]
enum Device {
    Pmem {
        name: String,
        transport: Arc<Mutex<MmioTransport<Pmem>>>,
        flush: Option<FlushRange>,
    },
    /// The disk moves into its worker when it starts.
    Blk {
        name: String,
        transport: Arc<Mutex<MmioTransport<Blk>>>,
        disk: Option<Disk>,
        mem: GuestMemoryMmap,
    },
}

impl Device {
    fn register_notifies(&self) -> u64 {
        match self {
            Device::Pmem { transport, .. } => lock(transport).register_notifies(),
            Device::Blk { transport, .. } => lock(transport).register_notifies(),
        }
    }
}

impl VirtioDevices {
    /// Puts one transport per virtio-pmem region and then per disk on `mmio`, in slot order (slot `i` at
    /// [`virtio_mmio_base`]`(i)`, interrupting through an irqfd on IOAPIC input `VIRTIO_GSI_BASE + i`).
    /// The transports keep their own handle on `gm`, so guest RAM stays mapped while they exist.
    pub fn wire(
        vm: &VmFd,
        gm: &GuestMemoryMmap,
        pmem: &[PmemDevice],
        disks: Vec<Disk>,
        mmio: &mut Bus,
    ) -> Result<Self, VirtioError> {
        let total = pmem.len() + disks.len();
        if total > VIRTIO_MMIO_MAX {
            return Err(VirtioError::TooMany(total));
        }
        let mut devices = VirtioDevices::default();
        for (i, &(gpa, size, flush)) in pmem.iter().enumerate() {
            let name = format!("virtio-pmem{i}");
            let device = Pmem::new(gpa, size).map_err(|e| VirtioError::Pmem(name.clone(), e))?;
            let transport = attach(vm, gm, mmio, i, &name, device)?;
            devices.devices.push(Device::Pmem { name, transport, flush });
        }
        for (i, disk) in disks.into_iter().enumerate() {
            let name = format!("virtio-blk{i}");
            let device = disk.device(i).map_err(|e| VirtioError::Blk(name.clone(), e))?;
            log::info!(
                "{name}: {} ({}{}), serial daxvmm-disk{i}",
                disk.path().display(),
                crate::units::format_size(disk.size()),
                if disk.read_only() { ", read-only" } else { "" }
            );
            let transport = attach(vm, gm, mmio, pmem.len() + i, &name, device)?;
            devices.devices.push(Device::Blk { name, transport, disk: Some(disk), mem: gm.clone() });
        }
        Ok(devices)
    }

    /// Starts one worker per device, each under the virtio thread's seccomp filter.
    pub fn start(&mut self, filters: &Filters) -> Result<(), VirtioError> {
        for device in &mut self.devices {
            let worker = match device {
                Device::Pmem { name, transport, flush } => {
                    let notified = queue_evt(name, transport, PMEM_REQUEST_QUEUE)?;
                    let serve = pmem::serve(name.clone(), transport.clone(), *flush);
                    Worker::spawn(name.clone(), pmem::what(*flush), filters, notified, serve)?
                }
                Device::Blk { name, transport, disk, mem } => {
                    let Some(disk) = disk.take() else { continue };
                    let notified = queue_evt(name, transport, BLK_REQUEST_QUEUE)?;
                    let what = disk::what(&disk);
                    let serve = disk::serve(transport.clone(), mem.clone(), disk);
                    Worker::spawn(name.clone(), what, filters, notified, serve)?
                }
            };
            self.workers.push(worker);
        }
        Ok(())
    }

    /// Stops and joins the workers, and logs what each device served. After this no thread of these
    /// devices touches guest memory.
    pub fn stop(&mut self) {
        self.workers.iter().for_each(Worker::stop);
        // Workers were started in device order, one per device.
        for (w, d) in self.workers.iter_mut().zip(&self.devices) {
            w.join(d.register_notifies());
        }
        self.workers.clear();
    }
}

impl Drop for VirtioDevices {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Puts `device` in slot `slot`: its irqfd, its transport on `mmio`, and one ioeventfd per queue on the
/// QueueNotify register (datamatch: the queue index), so a notification never leaves the guest.
fn attach<D: VirtioDevice + 'static>(
    vm: &VmFd,
    gm: &GuestMemoryMmap,
    mmio: &mut Bus,
    slot: usize,
    name: &str,
    device: D,
) -> Result<Arc<Mutex<MmioTransport<D>>>, VirtioError> {
    let d = acpi_device(slot);
    let host = |what: &'static str| move |e| VirtioError::Host(name.to_string(), what, e);
    let kvm = |what: &'static str| {
        move |e: kvm_ioctls::Error| host(what)(std::io::Error::from_raw_os_error(e.errno()))
    };
    let irq = EventFd::new(EFD_NONBLOCK).map_err(host("creating its irqfd"))?;
    vm.register_irqfd(&irq, d.gsi).map_err(kvm("KVM_IRQFD"))?;
    let transport = MmioTransport::new(device, gm.clone(), Box::new(irq))
        .map_err(|e| VirtioError::Transport(name.to_string(), e))?;
    let notify = IoEventAddress::Mmio(u64::from(d.base) + MMIO_QUEUE_NOTIFY);
    for q in 0..transport.queue_count() {
        if let Some(evt) = transport.queue_evt(q) {
            vm.register_ioevent(evt, &notify, q as u32).map_err(kvm("KVM_IOEVENTFD"))?;
        }
    }
    let transport = Arc::new(Mutex::new(transport));
    mmio.insert(transport.clone(), u64::from(d.base), MMIO_WINDOW_SIZE)
        .map_err(|e| VirtioError::Bus(name.to_string(), e))?;
    Ok(transport)
}

/// A clone of queue `q`'s notification eventfd, for the worker to wait on.
fn queue_evt<D>(name: &str, transport: &Mutex<MmioTransport<D>>, q: usize) -> Result<EventFd, VirtioError>
where
    D: VirtioDevice,
{
    let t = lock(transport);
    let evt = t.queue_evt(q).ok_or_else(|| {
        let e = std::io::Error::other(format!("the device has no queue {q}"));
        VirtioError::Host(name.to_string(), "its request queue", e)
    })?;
    evt.try_clone().map_err(|e| VirtioError::Host(name.to_string(), "cloning its queue eventfd", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use daxvmm_devices::layout::{FLUSH_HINT_BASE, FLUSH_HINT_LEN, IOAPIC_ADDR};

    #[test]
    fn devices_get_their_own_page_and_ioapic_input() {
        let all: Vec<VirtioMmioDevice> = (0..VIRTIO_MMIO_MAX).map(acpi_device).collect();
        assert_eq!(all[0].base as u64, FLUSH_HINT_BASE + FLUSH_HINT_LEN, "right after the flush hints");
        for (i, d) in all.iter().enumerate() {
            assert_eq!(d.base % 0x1000, 0);
            assert_eq!(u64::from(d.len), MMIO_WINDOW_SIZE);
            assert!(u64::from(d.base) + u64::from(d.len) <= IOAPIC_ADDR);
            // KVM's IOAPIC has 24 inputs; 16 and up are free of ISA devices.
            assert_eq!(d.gsi, 16 + i as u32);
            assert!(d.gsi < 24);
        }
    }
}
