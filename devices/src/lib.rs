//! Device models for daxvmm. Everything here is a pure state machine behind the [`bus::BusDevice`] trait,
//! plus builders that turn the machine description into ACPI table bytes; nothing needs KVM, so all of it
//! is unit-tested on a plain host. The virtio models ([`virtio`]) follow the same rule: the virtio-mmio
//! transport and the virtio-pmem device signal queue notifications and interrupts through eventfds and a
//! small trait, never through KVM.

pub mod acpi;
pub mod bus;
pub mod debug_port;
pub mod events;
pub mod fault;
pub mod flush_hint;
pub mod layout;
pub mod nvdimm_ars;
pub mod nvdimm_dsm;
pub mod pci_host;
pub mod power;
pub mod pvpanic;
pub mod serial;
pub mod virtio;
