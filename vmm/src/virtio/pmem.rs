//! What a virtio-pmem worker does on a notification: take the guest's flush requests, write the region
//! back to its file once for all of them (nothing to do without a durable file), and complete them.

use std::sync::{Arc, Mutex};

use daxvmm_devices::bus::lock;
use daxvmm_devices::virtio::mmio::MmioTransport;
use daxvmm_devices::virtio::pmem::Pmem;

use super::worker::Counts;
use crate::pmem::backing::FlushRange;

/// A virtio-pmem region as the machine hands it over: guest-physical base, size, and the host range a
/// flush writes back (`None`: nothing to make durable).
pub type PmemDevice = (u64, u64, Option<FlushRange>);

/// What the summary calls one request of a device flushing `flush`.
pub(super) fn what(flush: Option<FlushRange>) -> String {
    let how = if flush.is_some() { "msync of its file" } else { "nothing to write back" };
    format!("flush requests ({how})")
}

/// The serve step of device `name`.
pub(super) fn serve(
    name: String,
    transport: Arc<Mutex<MmioTransport<Pmem>>>,
    flush: Option<FlushRange>,
) -> impl FnMut(&Counts) + Send + 'static {
    move |counts| {
        let taken = lock(&transport).take_flushes();
        if taken.is_empty() {
            return;
        }
        // One write-back covers every request taken: each asked for everything written before it.
        let result = flush.map_or(Ok(()), FlushRange::flush);
        let failed = if result.is_err() { taken.len() } else { 0 };
        counts.add(taken.len(), failed);
        if let Err(e) = &result {
            log::error!("{name}: the guest's flush failed: {e} (reported to the guest as an error)");
        }
        let done = taken.into_iter().map(|f| (f, clone_result(&result)));
        lock(&transport).complete_flushes(done);
    }
}

fn clone_result(r: &std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
    }
}
