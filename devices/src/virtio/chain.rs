//! A strict walker for one split-ring descriptor chain, and the gather/scatter of a few bytes over it.
//!
//! `virtio_queue::DescriptorChain` follows indirect tables on its own and ends a bad chain by simply
//! stopping, so a loop looks like a long chain and a bad `next` like a short one. The devices here do not
//! offer VIRTIO_RING_F_INDIRECT_DESC and must fail such requests rather than act on part of them, so the
//! walk is done here with every failure named: at most `queue size` descriptors (the spec's bound on a
//! chain), every index inside the table, no indirect flag, total length within 32 bits; and, checked
//! apart so a response can still go to a good buffer, every buffer wholly inside guest memory. Nothing is
//! ever read or written outside guest memory: all accesses go through `vm-memory`'s checked methods.

use thiserror::Error;
use virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Why a chain cannot be used at all.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChainError {
    /// A head or `next` index past the descriptor table.
    #[error("descriptor index {index} is outside the {size}-entry descriptor table")]
    IndexOutOfRange {
        /// The offending index.
        index: u16,
        /// The queue size.
        size: u16,
    },
    /// The descriptor table entry itself is not in guest memory.
    #[error("descriptor table entry {index} is not in guest memory; the driver set a bad table address")]
    TableUnreadable {
        /// The entry's index.
        index: u16,
    },
    /// An indirect descriptor, which this device never offered.
    #[error("descriptor {index} is indirect, but VIRTIO_RING_F_INDIRECT_DESC was not offered")]
    Indirect {
        /// The entry's index.
        index: u16,
    },
    /// More descriptors than the queue has: the chain loops.
    #[error("chain from head {head} has more than {size} descriptors: its next fields loop")]
    TooLong {
        /// Head of the chain.
        head: u16,
        /// The queue size, the most a chain may have.
        size: u16,
    },
    /// The buffers add up to more than 2^32 - 1 bytes, which the spec forbids.
    #[error("chain from head {head} is longer than 2^32 - 1 bytes in total")]
    LengthOverflow {
        /// Head of the chain.
        head: u16,
    },
    /// A buffer that does not lie wholly in guest memory.
    #[error("buffer {position} of the chain, {addr:#x}+{len:#x}, is not wholly in guest memory")]
    OutsideMemory {
        /// The buffer's position in the chain (0 = head).
        position: usize,
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
}

/// Checks that every buffer of a walked chain lies wholly in guest memory, so that a request is not
/// acted on when part of it points elsewhere (even if the bytes the device reads happen to be mapped).
pub fn check_in_memory(mem: &GuestMemoryMmap, descs: &[Descriptor]) -> Result<(), ChainError> {
    for (position, d) in descs.iter().enumerate() {
        if d.len() > 0 && !GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize) {
            return Err(ChainError::OutsideMemory { position, addr: d.addr().0, len: d.len() });
        }
    }
    Ok(())
}

/// The run of device-writable buffers that ends the chain: where a response goes, even in a chain that
/// is otherwise malformed.
pub fn trailing_writable(descs: &[Descriptor]) -> &[Descriptor] {
    let start = descs.iter().rposition(|d| !d.is_write_only()).map_or(0, |i| i + 1);
    &descs[start..]
}

/// The guest ranges holding the first `len` bytes of `descs`, or `None` if they hold fewer.
pub fn prefix(descs: &[Descriptor], len: usize) -> Option<Vec<(GuestAddress, usize)>> {
    let mut segments = Vec::new();
    let mut left = len;
    for d in descs {
        if left == 0 {
            break;
        }
        let n = left.min(d.len() as usize);
        if n > 0 {
            segments.push((d.addr(), n));
            left -= n;
        }
    }
    (left == 0).then_some(segments)
}

/// The guest ranges holding bytes `skip..skip + len` of `descs`, or `None` if they hold fewer: where a
/// request's data lies between a header and a status that share descriptors with it.
pub fn range(descs: &[Descriptor], skip: usize, len: usize) -> Option<Vec<(GuestAddress, usize)>> {
    let mut segments = Vec::new();
    let (mut skip, mut left) = (skip, len);
    for d in descs {
        if left == 0 {
            break;
        }
        let dlen = d.len() as usize;
        if skip >= dlen {
            skip -= dlen;
            continue;
        }
        let n = left.min(dlen - skip);
        segments.push((d.addr().checked_add(skip as u64)?, n));
        skip = 0;
        left -= n;
    }
    (left == 0).then_some(segments)
}

/// Walks the chain starting at `head` in the table at `table` of `size` entries.
pub fn walk(
    mem: &GuestMemoryMmap,
    table: GuestAddress,
    size: u16,
    head: u16,
) -> Result<Vec<Descriptor>, ChainError> {
    let mut descs = Vec::new();
    let mut total: u32 = 0;
    let mut index = head;
    loop {
        if index >= size {
            return Err(ChainError::IndexOutOfRange { index, size });
        }
        if descs.len() >= usize::from(size) {
            return Err(ChainError::TooLong { head, size });
        }
        let desc: Descriptor = table
            .checked_add(u64::from(index) * 16)
            .and_then(|at| mem.read_obj(at).ok())
            .ok_or(ChainError::TableUnreadable { index })?;
        if desc.flags() & VRING_DESC_F_INDIRECT as u16 != 0 {
            return Err(ChainError::Indirect { index });
        }
        total = total.checked_add(desc.len()).ok_or(ChainError::LengthOverflow { head })?;
        let next = desc.has_next().then(|| desc.next());
        descs.push(desc);
        match next {
            Some(n) => index = n,
            None => return Ok(descs),
        }
    }
}

/// The run of device-readable buffers that starts the chain: where a request is read from.
pub fn leading_readable(descs: &[Descriptor]) -> &[Descriptor] {
    let end = descs.iter().position(|d| d.is_write_only()).unwrap_or(descs.len());
    &descs[..end]
}

/// Whether the chain has the shape drivers must give it (2.7.4.2): all device-readable buffers before
/// all device-writable ones.
pub fn well_ordered(descs: &[Descriptor]) -> bool {
    leading_readable(descs).len() + trailing_writable(descs).len() == descs.len()
}

/// Fills `buf` from `segments` (as [`prefix`] returned them); false if they do not add up to `buf` or a
/// read fails.
pub fn read_segments(mem: &GuestMemoryMmap, segments: &[(GuestAddress, usize)], buf: &mut [u8]) -> bool {
    if segments.iter().map(|&(_, n)| n).sum::<usize>() != buf.len() {
        return false;
    }
    let mut at = 0;
    for &(addr, n) in segments {
        if mem.read_slice(&mut buf[at..at + n], addr).is_err() {
            return false;
        }
        at += n;
    }
    true
}

/// Writes `data` across `segments` (as [`prefix`] returned them); false, with nothing written, if the
/// segments do not add up to `data` or any of them is outside guest memory.
pub fn write_segments(mem: &GuestMemoryMmap, segments: &[(GuestAddress, usize)], data: &[u8]) -> bool {
    let fits = segments.iter().map(|&(_, n)| n).sum::<usize>() == data.len()
        && segments.iter().all(|&(addr, n)| GuestMemoryBackend::check_range(mem, addr, n));
    if !fits {
        return false;
    }
    let mut at = 0;
    for &(addr, n) in segments {
        if mem.write_slice(&data[at..at + n], addr).is_err() {
            return false;
        }
        at += n;
    }
    true
}
