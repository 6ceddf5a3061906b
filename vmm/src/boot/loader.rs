//! Puts the kernel (bzImage or vmlinux, see `image`), initrd and command line and the zero page into
//! guest memory for Linux's 64-bit boot protocol.

use std::fs::File;
use std::path::Path;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::Elf;
use linux_loader::loader::{KernelLoader, KernelLoaderResult};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::image::{self, KernelFormat, BOOT_FLAG, HDRS_MAGIC};
use super::{CMDLINE_ADDR, CMDLINE_MAX, ZERO_PAGE_ADDR};
use crate::memory::{e820_map, HIGH_MEMORY_START};

/// Loader type "undefined" (0xff): we have no registered id.
const LOADER_TYPE: u8 = 0xff;
/// loadflags bit: the protected-mode code is loaded at 0x100000.
const LOADED_HIGH: u8 = 1 << 0;
/// Offset of the 64-bit entry point from the protected-mode kernel's start.
const ENTRY_64_OFFSET: u64 = 0x200;
/// The boot protocol version a vmlinux's zero page claims: 2.15, so that Linux reads
/// `acpi_rsdp_addr` (2.14+) from it.
const ELF_BOOT_PROTOCOL: u16 = 0x020f;
/// initrd_addr_max for a vmlinux, which has no setup header to say it: the protocol's default since 2.03.
const ELF_INITRD_ADDR_MAX: u32 = 0x7fff_ffff;
/// x86 Linux's COMMAND_LINE_SIZE (a bzImage says it in cmdline_size; a vmlinux cannot).
const X86_COMMAND_LINE_SIZE: u32 = 2048;
/// kernel_alignment for a vmlinux (CONFIG_PHYSICAL_ALIGN's usual 16 MiB; Linux reads it only when
/// relocating, which a vmlinux loaded at its physical addresses does not do).
const ELF_KERNEL_ALIGNMENT: u32 = 0x100_0000;

/// Errors loading the guest's boot images.
#[derive(Debug, Error)]
pub enum LoaderError {
    /// More e820 entries than boot_params holds (RAM ranges plus `type=e820` pmem).
    #[error("the e820 map would have {0} entries, more than the {1} Linux's boot protocol holds: use fewer type=e820 regions")]
    TooManyE820(usize, usize),
    /// The kernel file could not be opened.
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        /// Path given.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The kernel file is neither a usable bzImage nor a usable vmlinux.
    #[error("{path} is not a kernel image daxvmm can boot (a bzImage or an x86-64 vmlinux): {why}")]
    NotKernel {
        /// Path given.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The initrd could not be read.
    #[error("cannot read initrd {path}: {source}")]
    ReadInitrd {
        /// Path given.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// Kernel and initrd do not fit into guest RAM together.
    #[error(
        "the initrd ({initrd} bytes) does not fit in guest RAM above the kernel; give the guest more --mem"
    )]
    InitrdTooLarge {
        /// Initrd size.
        initrd: u64,
    },
    /// The command line is longer than the kernel accepts.
    #[error("kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong {
        /// Length given.
        len: usize,
        /// The kernel's limit.
        max: usize,
    },
    /// Writing into guest memory failed (an address outside RAM).
    #[error("cannot write {what} into guest memory: {source}")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// vm-memory's error.
        source: vm_memory::GuestMemoryError,
    },
}

/// Where things ended up, for the vCPU setup.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    /// The 64-bit entry point.
    pub entry: GuestAddress,
}

/// What the loader needs to know about the machine.
#[derive(Debug)]
pub struct BootSpec<'a> {
    /// The bzImage or vmlinux.
    pub kernel: &'a Path,
    /// The initrd, if any.
    pub initrd: Option<&'a Path>,
    /// The full kernel command line.
    pub cmdline: &'a str,
    /// Guest RAM size in bytes.
    pub mem: u64,
    /// Where the RSDP is, for boot_params.acpi_rsdp_addr.
    pub rsdp: u64,
    /// Legacy pmem ranges (base, size) for the e820 map.
    pub e820_pmem: &'a [(u64, u64)],
}

/// Loads kernel, initrd and command line and writes the zero page.
pub fn load(gm: &GuestMemoryMmap, spec: &BootSpec<'_>) -> Result<BootInfo, LoaderError> {
    let kpath = spec.kernel.display().to_string();
    let format = image::check_kernel(spec.kernel)?;
    let mut kfile =
        File::open(spec.kernel).map_err(|source| LoaderError::OpenKernel { path: kpath.clone(), source })?;
    let not_kernel = |why: String| LoaderError::NotKernel { path: kpath.clone(), why };
    let start = Some(GuestAddress(HIGH_MEMORY_START));
    let (loaded, hdr, entry) = match format {
        KernelFormat::BzImage => {
            let loaded = BzImage::load(gm, None, &mut kfile, start).map_err(|e| not_kernel(e.to_string()))?;
            let hdr = loaded.setup_header.ok_or_else(|| not_kernel("no setup header".into()))?;
            if hdr.header != HDRS_MAGIC {
                return Err(not_kernel("no HdrS magic in the setup header".into()));
            }
            image::check_bzimage_header(hdr.version, hdr.xloadflags).map_err(not_kernel)?;
            let entry = loaded.kernel_load.0 + ENTRY_64_OFFSET;
            (loaded, hdr, entry)
        }
        KernelFormat::Elf => {
            // Each PT_LOAD segment at its physical address (e.g. CONFIG_PHYSICAL_START); entering at
            // e_entry (startup_64) skips the decompressor, which is the point of booting a vmlinux.
            let loaded = Elf::load(gm, None, &mut kfile, start).map_err(|e| not_kernel(elf_error(&e)))?;
            let entry = loaded.kernel_load.0;
            (loaded, elf_setup_header(), entry)
        }
    };
    let KernelLoaderResult { kernel_end, .. } = loaded;

    let mut params = boot_params { hdr, ..Default::default() };
    params.hdr.type_of_loader = LOADER_TYPE;
    params.hdr.boot_flag = BOOT_FLAG;
    params.hdr.loadflags |= LOADED_HIGH;

    let max_cmdline = (hdr.cmdline_size as usize).clamp(1, CMDLINE_MAX) - 1;
    if spec.cmdline.len() > max_cmdline {
        return Err(LoaderError::CmdlineTooLong { len: spec.cmdline.len(), max: max_cmdline });
    }
    let mut cmdline = spec.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    gm.write_slice(&cmdline, GuestAddress(CMDLINE_ADDR))
        .map_err(|source| LoaderError::GuestMemory { what: "the command line", source })?;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = spec.cmdline.len() as u32;

    if let Some(initrd) = spec.initrd {
        let (addr, size) = load_initrd(gm, initrd, spec.mem, kernel_end, u64::from(hdr.initrd_addr_max))?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    params.acpi_rsdp_addr = spec.rsdp;
    let map = e820_map(spec.mem, spec.e820_pmem);
    if map.len() > params.e820_table.len() {
        return Err(LoaderError::TooManyE820(map.len(), params.e820_table.len()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry { addr: e.addr, size: e.size, r#type: e.kind };
    }
    params.e820_entries = map.len() as u8;

    LinuxBootConfigurator::write_bootparams(&BootParams::new(&params, GuestAddress(ZERO_PAGE_ADDR)), gm)
        .map_err(|_| LoaderError::GuestMemory {
            what: "the zero page",
            source: vm_memory::GuestMemoryError::InvalidBackendAddress,
        })?;
    log::debug!("{} loaded, entry at {entry:#x}", format.name());
    Ok(BootInfo { entry: GuestAddress(entry) })
}

/// The setup header a bzImage would carry, for a vmlinux: what Linux reads from it when entered at
/// startup_64 (command line, initrd and RSDP come from the zero page all the same).
fn elf_setup_header() -> setup_header {
    setup_header {
        boot_flag: BOOT_FLAG,
        header: HDRS_MAGIC,
        version: ELF_BOOT_PROTOCOL,
        kernel_alignment: ELF_KERNEL_ALIGNMENT,
        initrd_addr_max: ELF_INITRD_ADDR_MAX,
        cmdline_size: X86_COMMAND_LINE_SIZE,
        ..Default::default()
    }
}

/// linux-loader's ELF errors, in words a user can act on.
fn elf_error(e: &linux_loader::loader::Error) -> String {
    use linux_loader::loader::elf::Error as E;
    match e {
        linux_loader::loader::Error::Elf(E::InvalidEntryAddress) => {
            format!("its entry point is below {HIGH_MEMORY_START:#x}, where Linux's 64-bit entry never is")
        }
        linux_loader::loader::Error::Elf(E::ReadKernelImage) => {
            "a segment does not fit in guest RAM at its physical address (give the guest more --mem) or \
             the file is cut short"
                .into()
        }
        other => other.to_string(),
    }
}

/// Places the initrd at the top of low RAM, as high as the kernel allows, page aligned.
fn load_initrd(
    gm: &GuestMemoryMmap,
    path: &Path,
    mem: u64,
    kernel_end: u64,
    addr_max: u64,
) -> Result<(u64, u64), LoaderError> {
    let shown = path.display().to_string();
    let read_err = |source| LoaderError::ReadInitrd { path: shown.clone(), source };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let low_end = crate::memory::ram_ranges(mem).first().map_or(0, |(a, s)| a.0 + s);
    let top = low_end.min(addr_max.saturating_add(1));
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end)
        .ok_or(LoaderError::InitrdTooLarge { initrd: size })?;
    // Straight from the file into guest memory: no intermediate copy of a possibly large image.
    gm.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|source| LoaderError::GuestMemory { what: "the initrd", source })?;
    Ok((addr, size))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn initrd_goes_to_the_top_of_low_ram() {
        let mem = 64u64 << 20;
        let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem as usize)]).unwrap();
        let path = std::env::temp_dir().join(format!("daxvmm-initrd-{}", std::process::id()));
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (addr, size) = load_initrd(&gm, &path, mem, 1 << 20, 0x7fff_ffff).unwrap();
        assert_eq!(size, 10_000);
        assert_eq!(addr, (mem - 10_000) & !0xfff);
        let mut back = vec![0u8; data.len()];
        gm.read_slice(&mut back, GuestAddress(addr)).unwrap();
        assert_eq!(back, data);
        // initrd_addr_max below RAM's end caps the placement.
        let (addr, _) = load_initrd(&gm, &path, mem, 1 << 20, (16 << 20) - 1).unwrap();
        assert_eq!(addr, ((16u64 << 20) - 10_000) & !0xfff);
        // No room above the kernel.
        assert!(matches!(
            load_initrd(&gm, &path, mem, mem - 4096, 0x7fff_ffff),
            Err(LoaderError::InitrdTooLarge { .. })
        ));
        std::fs::remove_file(&path).unwrap();
    }

    use super::image::temp_image as temp;

    fn spec<'a>(kernel: &'a Path, initrd: Option<&'a Path>, mem: u64) -> BootSpec<'a> {
        BootSpec { kernel, initrd, cmdline: "console=ttyS0 quiet", mem, rsdp: 0xe_0000, e820_pmem: &[] }
    }

    #[test]
    fn a_vmlinux_is_loaded_at_its_physical_address_and_entered_at_its_entry() {
        use super::image::{test_elf, ELFCLASS64, EM_X86_64, ET_EXEC};
        let mem = 64u64 << 20;
        let gm = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem as usize)]).unwrap();
        let text: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
        let (paddr, bss) = (0x100_0000u64, 0x20_0000u64);
        let kernel = temp(
            "vmlinux",
            &test_elf(ELFCLASS64, EM_X86_64, ET_EXEC, paddr + 0x40, Some((paddr, &text, bss))),
        );
        let initrd = temp("vmlinux-initrd", &[7u8; 5000]);
        let info = load(&gm, &spec(&kernel, Some(&initrd), mem)).unwrap();
        assert_eq!(info.entry, GuestAddress(paddr + 0x40));
        let mut back = vec![0u8; text.len()];
        gm.read_slice(&mut back, GuestAddress(paddr)).unwrap();
        assert_eq!(back, text);

        let zp: boot_params = gm.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        let hdr = zp.hdr;
        assert_eq!((hdr.boot_flag, hdr.header, hdr.version), (BOOT_FLAG, HDRS_MAGIC, ELF_BOOT_PROTOCOL));
        assert_eq!(hdr.type_of_loader, LOADER_TYPE);
        assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ hdr.cmdline_size }, "console=ttyS0 quiet".len() as u32);
        // Above the kernel's memory image (its bss too), at the top of RAM.
        let (rd, rd_size) = ({ hdr.ramdisk_image } as u64, { hdr.ramdisk_size });
        assert_eq!(rd_size, 5000);
        assert!(rd >= paddr + text.len() as u64 + bss && rd == (mem - 5000) & !0xfff, "{rd:#x}");
        assert_eq!({ zp.acpi_rsdp_addr }, 0xe_0000);
        assert_eq!(zp.e820_entries as usize, e820_map(mem, &[]).len());

        // A segment beyond guest RAM, and an entry point in real-mode memory.
        let far = temp(
            "vmlinux-far",
            &test_elf(ELFCLASS64, EM_X86_64, ET_EXEC, 0x800_0000, Some((0x800_0000, &text, 0))),
        );
        let e = load(&gm, &spec(&far, None, mem)).unwrap_err().to_string();
        assert!(e.contains("does not fit in guest RAM"), "{e}");
        let low =
            temp("vmlinux-low", &test_elf(ELFCLASS64, EM_X86_64, ET_EXEC, 0x8000, Some((paddr, &text, 0))));
        let e = load(&gm, &spec(&low, None, mem)).unwrap_err().to_string();
        assert!(e.contains("entry point is below"), "{e}");
        for p in [kernel, initrd, far, low] {
            std::fs::remove_file(p).unwrap();
        }
    }
}
