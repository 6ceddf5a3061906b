//! The MMIO face of the fault injector: [`FaultDevice`] turns guest accesses to the window into
//! injector calls. Two entry points:
//! - [`FaultDevice::mmio_read`]/[`FaultDevice::mmio_write`], for the VMM's exit handler, which calls them
//!   with no lock held: a sync read blocks the calling vCPU thread there, and only there.
//! - the [`BusDevice`] impl, for a [`crate::bus::Bus`], which calls it under the device's mutex: it
//!   answers identity reads and takes events, but refuses sync reads (all-ones, counted as
//!   [`ProtocolError::SyncViaBus`]) rather than block every vCPU behind the bus lock.

use std::sync::Arc;
use std::time::Duration;

use super::injector::FaultInjector;
use super::protocol::{decode, Access, ProtocolError, Register, Request, REG_SIZE};
use crate::bus::BusDevice;

/// The device window's MMIO handler; cheap to clone (one for the bus, one for the exit handler).
#[derive(Debug, Clone)]
pub struct FaultDevice {
    injector: Arc<FaultInjector>,
    slice: Duration,
}

impl FaultDevice {
    /// A handler for `injector` whose sync reads hold a vCPU for at most `slice` each
    /// ([`super::DEFAULT_SLICE`] unless there is a reason).
    pub fn new(injector: Arc<FaultInjector>, slice: Duration) -> Self {
        Self { injector, slice }
    }

    /// The injector behind the window.
    pub fn injector(&self) -> &Arc<FaultInjector> {
        &self.injector
    }

    /// The value of an identity or status register.
    pub fn register(&self, reg: Register) -> u64 {
        reg.constant().unwrap_or_else(|| u64::from(self.injector.is_armed()))
    }

    /// A guest read at window offset `offset` by vCPU `vcpu`; a sync read may block for up to one slice,
    /// so call it with no lock held.
    pub fn mmio_read(&self, vcpu: Option<u8>, offset: u64, data: &mut [u8]) {
        self.read(vcpu, offset, data, true);
    }

    /// A guest write at window offset `offset` by vCPU `vcpu`; never blocks beyond the injector's mutex.
    pub fn mmio_write(&self, vcpu: Option<u8>, offset: u64, data: &[u8]) {
        match decode(offset, data.len(), Access::Write) {
            Request::Event => {
                let mut raw = [0u8; REG_SIZE];
                raw.copy_from_slice(data);
                self.injector.event_on(vcpu, u64::from_le_bytes(raw));
            }
            Request::Invalid(err) => self.injector.protocol_error(vcpu, err),
            // `decode` gives reads only for Access::Read; count it rather than trust that.
            Request::Sync { .. } | Request::Identity(_) => {
                self.injector.protocol_error(vcpu, ProtocolError::ReadOnly { offset })
            }
        }
    }

    fn read(&self, vcpu: Option<u8>, offset: u64, data: &mut [u8], may_hold: bool) {
        let value = match decode(offset, data.len(), Access::Read) {
            Request::Identity(reg) => Some(self.register(reg)),
            Request::Sync { thread, point } if may_hold => {
                Some(self.injector.sync_on(vcpu, thread, point, self.slice).code())
            }
            Request::Sync { .. } => {
                self.injector.protocol_error(vcpu, ProtocolError::SyncViaBus { offset });
                None
            }
            Request::Invalid(err) => {
                self.injector.protocol_error(vcpu, err);
                None
            }
            Request::Event => {
                self.injector.protocol_error(vcpu, ProtocolError::WriteOnly { offset });
                None
            }
        };
        match value {
            // A valid read is always exactly REG_SIZE bytes.
            Some(v) if data.len() == REG_SIZE => data.copy_from_slice(&v.to_le_bytes()),
            _ => data.fill(0xff),
        }
    }
}

impl BusDevice for FaultDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        FaultDevice::read(self, None, offset, data, false);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.mmio_write(None, offset, data);
    }
}
