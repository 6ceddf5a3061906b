//! The machine's virtio devices: each virtio-pmem region's virtio-mmio transport on the MMIO bus, its
//! interrupt (an irqfd on its IOAPIC input) and the worker thread that runs its flushes. A flush is an
//! msync of a file-backed region, which can take long, so it runs neither on a vCPU thread nor under the
//! transport's lock: the worker takes the requests, flushes, and completes them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use daxvmm_devices::acpi::VirtioMmioDevice;
use daxvmm_devices::bus::{lock, Bus, BusError};
use daxvmm_devices::layout::{virtio_mmio_base, VIRTIO_GSI_BASE, VIRTIO_MMIO_MAX};
use daxvmm_devices::virtio::mmio::{MmioError, MmioTransport, MMIO_WINDOW_SIZE};
use daxvmm_devices::virtio::pmem::{Pmem, PmemError, PMEM_REQUEST_QUEUE};
use kvm_ioctls::VmFd;
use thiserror::Error;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::pmem::backing::FlushRange;
use crate::seccomp::{Filters, ThreadKind};

/// Errors setting up the virtio devices.
#[derive(Debug, Error)]
pub enum VirtioError {
    /// More virtio devices than the layout has windows for.
    #[error("at most {VIRTIO_MMIO_MAX} virtio devices (pmem type=virtio) are supported, not {0}")]
    TooMany(usize),
    /// The pmem device refused its region (a daxvmm bug: regions are placed before this).
    #[error("virtio-pmem {0}: {1}")]
    Pmem(usize, PmemError),
    /// The transport refused the device (a daxvmm bug).
    #[error("virtio-pmem {0}: {1}")]
    Transport(usize, MmioError),
    /// An eventfd or the irqfd could not be set up.
    #[error("virtio-pmem {0}: {1}: {2}")]
    Host(usize, &'static str, std::io::Error),
    /// The transport's window did not fit on the MMIO bus.
    #[error("virtio-pmem {0}: {1}")]
    Bus(usize, BusError),
    /// The worker thread could not be started.
    #[error("virtio-pmem {0}: cannot start its flush thread: {1}")]
    Thread(usize, std::io::Error),
}

/// One virtio-pmem region as the machine hands it over: guest-physical base, size, and the host range a
/// flush writes back (`None`: nothing to make durable).
pub type PmemDevice = (u64, u64, Option<FlushRange>);

type Transport = Arc<Mutex<MmioTransport<Pmem>>>;

/// The virtio devices of one machine, with their workers once started.
#[derive(Debug, Default)]
pub struct VirtioDevices {
    transports: Vec<Transport>,
    flushes: Vec<Option<FlushRange>>,
    workers: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
}

/// A device's flush requests so far, and how many of them failed.
#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    failed: AtomicU64,
}

/// What the DSDT says about device `i`.
pub fn acpi_device(i: usize) -> VirtioMmioDevice {
    VirtioMmioDevice {
        base: virtio_mmio_base(i) as u32,
        len: MMIO_WINDOW_SIZE as u32,
        gsi: VIRTIO_GSI_BASE + i as u32,
    }
}

impl VirtioDevices {
    /// Puts one virtio-pmem transport per entry of `pmem` on `mmio` (device `i` at
    /// [`virtio_mmio_base`]`(i)`, interrupting through an irqfd on IOAPIC input `VIRTIO_GSI_BASE + i`).
    /// The transports keep their own handle on `gm`, so guest RAM stays mapped while they exist.
    pub fn wire(
        vm: &VmFd,
        gm: &GuestMemoryMmap,
        pmem: &[PmemDevice],
        mmio: &mut Bus,
    ) -> Result<Self, VirtioError> {
        if pmem.len() > VIRTIO_MMIO_MAX {
            return Err(VirtioError::TooMany(pmem.len()));
        }
        let mut devices = VirtioDevices::default();
        for (i, &(gpa, size, flush)) in pmem.iter().enumerate() {
            let d = acpi_device(i);
            let irq =
                EventFd::new(EFD_NONBLOCK).map_err(|e| VirtioError::Host(i, "creating its irqfd", e))?;
            vm.register_irqfd(&irq, d.gsi).map_err(|e| {
                VirtioError::Host(i, "KVM_IRQFD", std::io::Error::from_raw_os_error(e.errno()))
            })?;
            let device = Pmem::new(gpa, size).map_err(|e| VirtioError::Pmem(i, e))?;
            let transport = MmioTransport::new(device, gm.clone(), Box::new(irq))
                .map_err(|e| VirtioError::Transport(i, e))?;
            let transport = Arc::new(Mutex::new(transport));
            mmio.insert(transport.clone(), u64::from(d.base), MMIO_WINDOW_SIZE)
                .map_err(|e| VirtioError::Bus(i, e))?;
            devices.transports.push(transport);
            devices.flushes.push(flush);
        }
        Ok(devices)
    }

    /// Starts one flush worker per device, each under the virtio thread's seccomp filter.
    pub fn start(&mut self, filters: &Filters) -> Result<(), VirtioError> {
        for (i, (transport, flush)) in self.transports.iter().zip(&self.flushes).enumerate() {
            let notified = lock(transport)
                .queue_evt(PMEM_REQUEST_QUEUE)
                .map(EventFd::try_clone)
                .transpose()
                .map_err(|e| VirtioError::Host(i, "cloning its queue eventfd", e))?;
            let Some(notified) = notified else { continue };
            let stop = EventFd::new(EFD_NONBLOCK)
                .map_err(|e| VirtioError::Host(i, "creating its stop eventfd", e))?;
            let stopped =
                stop.try_clone().map_err(|e| VirtioError::Host(i, "cloning its stop eventfd", e))?;
            let counts = Arc::new(Counts::default());
            let (transport, flush, filters, mine) =
                (transport.clone(), *flush, filters.clone(), counts.clone());
            let thread = std::thread::Builder::new()
                .name(format!("virtio-pmem{i}"))
                .spawn(move || {
                    if let Err(e) = filters.install(ThreadKind::Virtio) {
                        log::error!("virtio-pmem {i}: {e}; its flush requests will not be answered");
                        return;
                    }
                    serve(i, &transport, flush, (&notified, &stopped), &mine)
                })
                .map_err(|e| VirtioError::Thread(i, e))?;
            self.workers.push(Worker { stop, thread: Some(thread), counts });
        }
        Ok(())
    }

    /// Stops and joins the workers, and logs each device's flush requests. After this no thread of these
    /// devices touches guest memory.
    pub fn stop(&mut self) {
        for w in &self.workers {
            if let Err(e) = w.stop.write(1) {
                log::error!("cannot stop a virtio flush thread: {e}");
            }
        }
        for (i, w) in self.workers.iter_mut().enumerate() {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
            let (n, failed) =
                (w.counts.requests.load(Ordering::Relaxed), w.counts.failed.load(Ordering::Relaxed));
            let what = if self.flushes[i].is_some() { "msync of its file" } else { "nothing to write back" };
            log::info!("virtio-pmem{i}: the guest sent {n} flush requests ({what}), {failed} failed");
        }
        self.workers.clear();
    }
}

impl Drop for VirtioDevices {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The worker of device `i`: on each queue notification, takes the flush requests, flushes `flush`
/// once for all of them (nothing to do without a durable file), and completes them, counting them in
/// `counts`; until the second of `(notified, stop)` fires.
fn serve(
    i: usize,
    transport: &Transport,
    flush: Option<FlushRange>,
    (notified, stop): (&EventFd, &EventFd),
    counts: &Counts,
) {
    use std::os::fd::AsRawFd;
    loop {
        let mut fds = [
            libc::pollfd { fd: notified.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: fds is a live array of two pollfds; poll writes only their revents.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("virtio-pmem {i}: poll failed: {e}; its flush requests will not be answered");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        // Non-blocking: a notification already consumed by an earlier round reads EAGAIN.
        let _ = notified.read();
        let taken = lock(transport).take_flushes();
        if taken.is_empty() {
            continue;
        }
        // One write-back covers every request taken: each asked for everything written before it.
        let result = flush.map_or(Ok(()), FlushRange::flush);
        counts.requests.fetch_add(taken.len() as u64, Ordering::Relaxed);
        if let Err(e) = &result {
            counts.failed.fetch_add(taken.len() as u64, Ordering::Relaxed);
            log::error!("virtio-pmem {i}: the guest's flush failed: {e} (reported to the guest as an error)");
        }
        let done = taken.into_iter().map(|f| (f, clone_result(&result)));
        lock(transport).complete_flushes(done);
    }
}

fn clone_result(r: &std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
    }
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
