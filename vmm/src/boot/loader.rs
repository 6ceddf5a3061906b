//! Puts the kernel, initrd, command line and zero page into guest memory (x86 boot protocol 2.12+).

use std::fs::File;
use std::path::Path;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::KernelLoader;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{CMDLINE_ADDR, CMDLINE_MAX, ZERO_PAGE_ADDR};
use crate::memory::{e820_map, HIGH_MEMORY_START};

/// "HdrS": the boot protocol header magic.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// 0xAA55 at boot_flag.
const BOOT_FLAG: u16 = 0xaa55;
/// The oldest boot protocol we accept: 2.12 gives 64-bit entry and xloadflags.
const MIN_BOOT_PROTOCOL: u16 = 0x020c;
/// XLF_KERNEL_64: the kernel has a 64-bit entry point at load address + 0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// Loader type "undefined" (0xff): we have no registered id.
const LOADER_TYPE: u8 = 0xff;
/// loadflags bit: the protected-mode code is loaded at 0x100000.
const LOADED_HIGH: u8 = 1 << 0;
/// Offset of the 64-bit entry point from the protected-mode kernel's start.
const ENTRY_64_OFFSET: u64 = 0x200;

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
    /// The kernel file is not a usable bzImage.
    #[error("{path} is not a bzImage this VMM can boot: {why}")]
    NotBzImage {
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
    /// The bzImage.
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

/// Offsets in a bzImage (Documentation/arch/x86/boot.rst).
const BOOT_FLAG_OFFSET: usize = 0x1fe;
const HEADER_OFFSET: usize = 0x202;
const VERSION_OFFSET: usize = 0x206;
const XLOADFLAGS_OFFSET: usize = 0x236;

/// Checks the setup header of `path` without guest memory or KVM, so that a wrong file is reported as
/// such before anything else is set up.
pub fn check_bzimage(path: &Path) -> Result<(), LoaderError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let not_bz = |why: &str| LoaderError::NotBzImage { path: shown.clone(), why: why.to_string() };
    let mut head = Vec::with_capacity(0x240);
    File::open(path)
        .and_then(|f| f.take(0x240).read_to_end(&mut head))
        .map_err(|source| LoaderError::OpenKernel { path: shown.clone(), source })?;
    if head.len() < 0x240 {
        return Err(not_bz("too short to hold an x86 boot sector and setup header"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
    if u16_at(BOOT_FLAG_OFFSET) != BOOT_FLAG || u32_at(HEADER_OFFSET) != HDRS_MAGIC {
        return Err(not_bz("no x86 boot sector signature (0xAA55) and HdrS setup header"));
    }
    let version = u16_at(VERSION_OFFSET);
    if version < MIN_BOOT_PROTOCOL {
        return Err(not_bz(&format!("boot protocol {}.{} is older than 2.12", version >> 8, version & 0xff)));
    }
    if u16_at(XLOADFLAGS_OFFSET) & XLF_KERNEL_64 == 0 {
        return Err(not_bz("no 64-bit entry point (XLF_KERNEL_64); build it for x86_64"));
    }
    Ok(())
}

/// Loads kernel, initrd and command line and writes the zero page.
pub fn load(gm: &GuestMemoryMmap, spec: &BootSpec<'_>) -> Result<BootInfo, LoaderError> {
    let kpath = spec.kernel.display().to_string();
    let mut kfile =
        File::open(spec.kernel).map_err(|source| LoaderError::OpenKernel { path: kpath.clone(), source })?;
    let not_bz = |why: String| LoaderError::NotBzImage { path: kpath.clone(), why };
    let loaded = BzImage::load(gm, None, &mut kfile, Some(GuestAddress(HIGH_MEMORY_START)))
        .map_err(|e| not_bz(e.to_string()))?;
    let hdr = loaded.setup_header.ok_or_else(|| not_bz("no setup header".into()))?;
    let (magic, version, xloadflags) = (hdr.header, hdr.version, hdr.xloadflags);
    if magic != HDRS_MAGIC {
        return Err(not_bz("no HdrS magic in the setup header".into()));
    }
    if version < MIN_BOOT_PROTOCOL {
        return Err(not_bz(format!("boot protocol {}.{} is older than 2.12", version >> 8, version & 0xff)));
    }
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(not_bz("no 64-bit entry point (XLF_KERNEL_64); build it for x86_64".into()));
    }

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
        let (addr, size) =
            load_initrd(gm, initrd, spec.mem, loaded.kernel_end, u64::from(hdr.initrd_addr_max))?;
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
    Ok(BootInfo { entry: GuestAddress(loaded.kernel_load.0 + ENTRY_64_OFFSET) })
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

    fn image(boot_flag: u16, magic: u32, version: u16, xload: u16) -> std::path::PathBuf {
        let mut b = vec![0u8; 0x400];
        b[BOOT_FLAG_OFFSET..BOOT_FLAG_OFFSET + 2].copy_from_slice(&boot_flag.to_le_bytes());
        b[HEADER_OFFSET..HEADER_OFFSET + 4].copy_from_slice(&magic.to_le_bytes());
        b[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&version.to_le_bytes());
        b[XLOADFLAGS_OFFSET..XLOADFLAGS_OFFSET + 2].copy_from_slice(&xload.to_le_bytes());
        let p = std::env::temp_dir()
            .join(format!("daxvmm-bz-{}-{boot_flag:x}-{magic:x}-{version:x}-{xload:x}", std::process::id()));
        std::fs::write(&p, b).unwrap();
        p
    }

    #[test]
    fn header_checks() {
        let good = image(0xaa55, HDRS_MAGIC, 0x020f, 1);
        check_bzimage(&good).unwrap();
        for (bad, why) in [
            (image(0, HDRS_MAGIC, 0x020f, 1), "signature"),
            (image(0xaa55, 0x1234, 0x020f, 1), "signature"),
            (image(0xaa55, HDRS_MAGIC, 0x020a, 1), "2.12"),
            (image(0xaa55, HDRS_MAGIC, 0x020f, 0), "64-bit"),
        ] {
            let e = check_bzimage(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            std::fs::remove_file(bad).unwrap();
        }
        std::fs::remove_file(good).unwrap();
        let e = check_bzimage(Path::new("/etc/hostname")).unwrap_err().to_string();
        assert!(e.contains("is not a bzImage"), "{e}");
        assert!(matches!(check_bzimage(Path::new("/nonexistent")), Err(LoaderError::OpenKernel { .. })));
    }

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
}
