//! Unit tests of the virtio models, one file per concern: the MMIO register file and status machine,
//! well-formed pmem requests (synchronous and asynchronous), and hostile chains and rings. All of them
//! drive the device the way a guest does, through [`driver::Driver`].

mod driver;
mod hostile;
mod mmio;
mod pmem;
