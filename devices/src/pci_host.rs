//! PCI configuration mechanism #1 (ports 0xCF8-0xCFF) with a single host bridge at 00:00.0 and nothing
//! else. daxvmm has no PCI devices; the bridge exists so that Linux finds a working config access
//! method: only then does it run `pcibios_resource_survey()`, which inserts the e820 ranges it left for
//! later (`e820__reserve_resources_late()`), among them the legacy persistent memory of `--pmem
//! ...,type=e820` that the nd_e820 driver looks for. Linux's `pci_sanity_check()` accepts the method
//! when it finds a device of class "host bridge" on bus 0.

use crate::bus::BusDevice;

/// The bridge's vendor ID (Red Hat, Inc., as QEMU's generic PCIe host bridge).
pub const VENDOR_ID: u16 = 0x1b36;
/// The bridge's device ID (QEMU's "PCIe host bridge").
pub const DEVICE_ID: u16 = 0x0008;
/// Class code 06 (bridge), subclass 00 (host), interface 00.
const CLASS_HOST_BRIDGE: u32 = 0x0600_0000;
/// Bit 31 of the address register: a config cycle is enabled.
const ENABLE: u32 = 1 << 31;

/// Ports 0xCF8-0xCFB: the address register; 0xCFC-0xCFF: the data window.
#[derive(Debug, Default)]
pub struct PciHostBridge {
    address: u32,
}

impl PciHostBridge {
    /// A bridge whose address register is 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The dword of configuration space the address register selects: the host bridge's header at bus
    /// 0, device 0, function 0; all-ones (no device) anywhere else.
    fn selected_dword(&self) -> u32 {
        if self.address & ENABLE == 0 {
            return u32::MAX;
        }
        let bus = (self.address >> 16) & 0xff;
        let devfn = (self.address >> 8) & 0xff;
        if bus != 0 || devfn != 0 {
            return u32::MAX;
        }
        match self.address & 0xfc {
            0x00 => u32::from(VENDOR_ID) | (u32::from(DEVICE_ID) << 16),
            // Revision 0 in the low byte of the class dword.
            0x08 => CLASS_HOST_BRIDGE,
            // Command/status, cache line, latency, header type 0, BARs, interrupt: all zero.
            _ => 0,
        }
    }
}

impl BusDevice for PciHostBridge {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let (dword, shift) = match offset {
            0..=3 if data.len() == 4 && offset == 0 => (self.address, 0),
            4..=7 => (self.selected_dword(), (offset - 4) * 8),
            _ => (u32::MAX, 0),
        };
        let bytes = (dword >> shift).to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Only a whole dword at 0xCF8 sets the address (a byte write to 0xCFB is the old mechanism #2
        // probe, and the data window is read-only here: the bridge has nothing to configure).
        if offset == 0 {
            if let Ok(v) = <[u8; 4]>::try_from(data) {
                self.address = u32::from_le_bytes(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(p: &mut PciHostBridge, bus: u32, devfn: u32, reg: u32) {
        p.write(0, &(ENABLE | (bus << 16) | (devfn << 8) | reg).to_le_bytes());
    }

    fn read_u32(p: &mut PciHostBridge, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        p.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// What Linux's pci_check_type1() and pci_sanity_check() do.
    #[test]
    fn linux_finds_type_1_and_a_host_bridge() {
        let mut p = PciHostBridge::new();
        p.write(3, &[0x01]);
        p.write(0, &ENABLE.to_le_bytes());
        assert_eq!(read_u32(&mut p, 0), ENABLE, "the address register reads back");
        select(&mut p, 0, 0, 0x08);
        let mut class = [0u8; 2];
        p.read(4 + 2, &mut class);
        assert_eq!(u16::from_le_bytes(class), 0x0600, "PCI_CLASS_DEVICE at 0x0a");
        select(&mut p, 0, 0, 0x00);
        assert_eq!(read_u32(&mut p, 4), 0x0008_1b36);
        let mut vendor = [0u8; 2];
        p.read(4, &mut vendor);
        assert_eq!(u16::from_le_bytes(vendor), VENDOR_ID);
    }

    #[test]
    fn every_other_device_and_disabled_cycles_read_all_ones() {
        let mut p = PciHostBridge::new();
        for (bus, devfn) in [(0, 1), (0, 8), (1, 0), (255, 255)] {
            select(&mut p, bus, devfn, 0);
            assert_eq!(read_u32(&mut p, 4), u32::MAX, "{bus}:{devfn}");
        }
        p.write(0, &0u32.to_le_bytes());
        assert_eq!(read_u32(&mut p, 4), u32::MAX, "enable bit clear");
        select(&mut p, 0, 0, 0x10);
        assert_eq!(read_u32(&mut p, 4), 0, "BAR 0 is not implemented");
        p.write(4, &u32::MAX.to_le_bytes());
        assert_eq!(read_u32(&mut p, 4), 0, "BAR sizing writes change nothing");
    }

    #[test]
    fn odd_accesses_neither_panic_nor_set_the_address() {
        let mut p = PciHostBridge::new();
        p.write(0, &[1, 2]);
        p.write(1, &[1, 2, 3, 4]);
        p.write(0, &[]);
        assert_eq!(read_u32(&mut p, 0), 0);
        let mut wide = [0u8; 8];
        p.read(4, &mut wide);
        assert_eq!(wide, [0xff; 8]);
        let mut b = [0u8; 1];
        p.read(7, &mut b);
        p.read(2, &mut b);
        assert_eq!(b, [0xff]);
    }
}
