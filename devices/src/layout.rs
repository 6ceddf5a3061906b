//! The guest-visible I/O port and address map every device and table builder agrees on
//! (docs/guest-interface.md is the prose version).

/// COM1, a 16550A UART.
pub const COM1_PORT: u16 = 0x3f8;
/// Number of COM1 registers.
pub const COM1_LEN: u16 = 8;
/// COM1's ISA interrupt (and IOAPIC GSI).
pub const COM1_IRQ: u32 = 4;
/// The pvpanic device's port (ACPI `_HID` QEMU0001).
pub const PVPANIC_PORT: u16 = 0x505;
/// The ACPI power-management block: sleep control (+0), sleep status (+1), reset (+2).
pub const ACPI_PM_PORT: u16 = 0x600;
/// Size of the ACPI power-management block.
pub const ACPI_PM_LEN: u16 = 3;
/// Offset of the FADT sleep control register in the PM block.
pub const ACPI_SLEEP_CONTROL_OFFSET: u16 = 0;
/// Offset of the FADT sleep status register in the PM block.
pub const ACPI_SLEEP_STATUS_OFFSET: u16 = 1;
/// Offset of the FADT reset register in the PM block.
pub const ACPI_RESET_OFFSET: u16 = 2;
/// The value the FADT tells the guest to write to the reset register.
pub const ACPI_RESET_VALUE: u8 = 1;
/// The sleep type of S5 (soft off), as the DSDT's `\_S5_` package declares it.
pub const ACPI_S5_SLEEP_TYPE: u8 = 5;
/// i8042 command port; writing 0xFE pulses the CPU reset line.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// PCI configuration mechanism #1: address register at +0, data window at +4 (crate::pci_host).
pub const PCI_CONFIG_PORT: u16 = 0xcf8;
/// Size of the PCI configuration ports.
pub const PCI_CONFIG_LEN: u16 = 8;
/// Debug port: +0 takes boot progress markers, +1 the guest's exit status.
pub const DEBUG_PORT: u16 = 0x6f0;
/// Size of the debug port block.
pub const DEBUG_PORT_LEN: u16 = 2;

/// The NVDIMM `_DSM` mailbox's doorbell (crate::nvdimm_dsm): QEMU's port, one DWord.
pub const NVDIMM_DSM_PORT: u16 = 0x0a18;
/// Size of the doorbell.
pub const NVDIMM_DSM_PORT_LEN: u16 = 4;
/// The NVDIMM `_DSM` mailbox page: guest RAM in the reserved legacy area below 1 MiB (the e820 map
/// gives the guest none of 0x9fc00..0x100000), just below the ACPI tables, so the guest never uses it
/// as memory and ACPI can map it.
pub const NVDIMM_DSM_PAGE: u64 = 0x000d_f000;
/// Where the RSDP goes; Linux also finds it by scanning 0xE0000..0x100000.
pub const ACPI_RSDP_ADDR: u64 = 0x000e_0000;
/// End (exclusive) of the area reserved for ACPI tables.
pub const ACPI_TABLES_END: u64 = 0x0010_0000;
/// The IOAPIC's MMIO base.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// The local APIC's MMIO base.
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// Start of the 32-bit MMIO hole (RAM stops here and resumes at 4 GiB).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// Most vCPUs a guest may have.
pub const MAX_VCPUS: u8 = 8;
/// Base of the fault-injection device's MMIO window (ACPI `_HID` DAXF0001, docs/fault-injection.md): in
/// the 32-bit MMIO hole, 1 MiB below the IOAPIC page, aligned to its own size.
pub const FAULT_INJECTOR_BASE: u64 = 0xfeb0_0000;
/// Length of the fault-injection device's MMIO window (64 KiB).
pub const FAULT_INJECTOR_LEN: u64 = 0x1_0000;
/// Base of the NVDIMM flush hint window (crate::flush_hint): right after the fault injector's window.
pub const FLUSH_HINT_BASE: u64 = FAULT_INJECTOR_BASE + FAULT_INJECTOR_LEN;
/// One page per DIMM slot: Linux maps each hint's page on its own.
pub const FLUSH_HINT_STRIDE: u64 = 0x1000;
/// Length of the flush hint window: a page for each of the (at most 8) DIMMs.
pub const FLUSH_HINT_LEN: u64 = 8 * FLUSH_HINT_STRIDE;
/// Base of the virtio-mmio devices' windows (crate::virtio::mmio): right after the flush hints, one page
/// each, so every device's registers sit in a page of their own.
pub const VIRTIO_MMIO_BASE: u64 = FLUSH_HINT_BASE + FLUSH_HINT_LEN;
/// Distance between two virtio-mmio devices' windows.
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
/// Most virtio-mmio devices a guest may have.
pub const VIRTIO_MMIO_MAX: usize = 8;
/// The IOAPIC input of virtio-mmio device 0; device `i` has `VIRTIO_GSI_BASE + i` (16 to 23: the inputs
/// above the ISA range, which nothing else uses).
pub const VIRTIO_GSI_BASE: u32 = 16;

/// Where virtio-mmio device `i`'s window starts.
pub const fn virtio_mmio_base(i: usize) -> u64 {
    VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_STRIDE
}

// The virtio windows stay below the IOAPIC page.
const _: () = assert!(VIRTIO_MMIO_BASE + VIRTIO_MMIO_MAX as u64 * VIRTIO_MMIO_STRIDE <= IOAPIC_ADDR);
