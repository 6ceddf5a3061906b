//! What a device model may do to one live queue: take the heads the driver made available and return
//! chains to the used ring. [`QueueCtx`] records whether the used ring changed (so the transport raises
//! the used-buffer interrupt once, after the device is done) and whether the driver broke the queue (so
//! the transport sets DEVICE_NEEDS_RESET instead of the device guessing).

use log::warn;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// One live queue, lent to a device model by [`super::mmio::MmioTransport::with_queue`].
#[derive(Debug)]
pub struct QueueCtx<'a> {
    queue: &'a mut Queue,
    mem: &'a GuestMemoryMmap,
    used: bool,
    broken: bool,
}

impl<'a> QueueCtx<'a> {
    pub(crate) fn new(queue: &'a mut Queue, mem: &'a GuestMemoryMmap) -> Self {
        Self { queue, mem, used: false, broken: false }
    }

    /// Guest memory, for reading requests and writing responses.
    pub fn mem(&self) -> &'a GuestMemoryMmap {
        self.mem
    }

    /// The queue size the driver chose; descriptor indices and chain lengths are bounded by it.
    pub fn size(&self) -> u16 {
        self.queue.size()
    }

    /// Guest address of the descriptor table.
    pub fn desc_table(&self) -> GuestAddress {
        GuestAddress(self.queue.desc_table())
    }

    /// The heads of the chains the driver has made available since the last call, in ring order.
    ///
    /// The available index is read once, so a guest that keeps adding buffers cannot keep the caller
    /// here: at most `size()` heads come back, and the driver's next notification covers the rest.
    /// An available index more than `size()` ahead of the device is a broken driver: nothing comes back
    /// and the queue is marked broken. So is an available ring at guest address 0, which virtio-queue
    /// takes for a queue that was reset and never set up again.
    pub fn pop_heads(&mut self) -> Vec<u16> {
        match self.queue.iter(self.mem) {
            Ok(iter) => iter.map(|chain| chain.head_index()).collect(),
            Err(e) => {
                warn!("virtio queue: cannot read the available ring: {e}");
                self.broken = true;
                Vec::new()
            }
        }
    }

    /// Puts `head` on the used ring with `len` bytes written. A head the used ring cannot take (an index
    /// past the queue, a ring outside guest memory) marks the queue broken rather than being dropped
    /// silently, since the driver would wait for it forever.
    pub fn add_used(&mut self, head: u16, len: u32) {
        match self.queue.add_used(self.mem, head, len) {
            Ok(()) => self.used = true,
            Err(e) => {
                warn!("virtio queue: cannot return head {head} to the used ring: {e}");
                self.broken = true;
            }
        }
    }

    /// Whether anything went onto the used ring through this context.
    pub fn used(&self) -> bool {
        self.used
    }

    /// Whether the driver's queue state was found unusable.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Whether the driver asked to hear about the used buffers (always, unless EVENT_IDX is negotiated,
    /// which this transport does not offer); a used ring that cannot be read counts as "yes".
    pub(crate) fn needs_notification(&mut self) -> bool {
        self.queue.needs_notification(self.mem).unwrap_or(true)
    }
}
