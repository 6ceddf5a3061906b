//! Everything needed to enter a Linux kernel through the 64-bit boot protocol: telling a bzImage from a
//! vmlinux (`image`), loading it, the initrd and command line with the zero page (`loader`), and the register, page-table, CPUID and MSR
//! state of the vCPUs (`regs`, `cpuid`).

pub mod cpuid;
pub mod image;
pub mod loader;
pub mod regs;

/// Guest-physical address of the zero page (struct boot_params).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// The boot GDT.
pub const GDT_ADDR: u64 = 0x500;
/// The (empty) boot IDT.
pub const IDT_ADDR: u64 = 0x520;
/// Top-level page table of the boot identity map.
pub const PML4_ADDR: u64 = 0x9000;
/// The page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// First of the four page directories that identity-map 4 GiB with 2 MiB pages.
pub const PD_ADDR: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Room reserved for the command line (it must end below the EBDA).
pub const CMDLINE_MAX: usize = 0x1_0000;
