//! Unit tests of the virtio models, one file per concern: the MMIO register file and status machine,
//! well-formed pmem requests (synchronous and asynchronous), hostile chains and rings, and virtio-blk
//! (its requests, bounds and hostile chains). All of them drive the device the way a guest does, through
//! [`driver::Driver`].

mod blk;
mod driver;
mod hostile;
mod mmio;
mod pmem;
