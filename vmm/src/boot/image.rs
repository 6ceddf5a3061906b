//! Which kinds of kernel image daxvmm boots, told apart by their first bytes: a bzImage (x86 boot
//! protocol 2.12+, entered at its 64-bit entry point after the decompressor's setup header), or an
//! uncompressed x86-64 `vmlinux` ELF (entered at its ELF entry point, `startup_64`, with no
//! decompression). Both are entered in 64-bit mode with the zero page in RSI; see `loader`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::loader::LoaderError;

/// "HdrS": the boot protocol header magic.
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// 0xAA55 at boot_flag.
pub const BOOT_FLAG: u16 = 0xaa55;
/// The oldest boot protocol we accept: 2.12 gives 64-bit entry and xloadflags.
pub const MIN_BOOT_PROTOCOL: u16 = 0x020c;
/// XLF_KERNEL_64: the kernel has a 64-bit entry point at load address + 0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;

/// Offsets in a bzImage (Documentation/arch/x86/boot.rst).
const BOOT_FLAG_OFFSET: usize = 0x1fe;
const HEADER_OFFSET: usize = 0x202;
const VERSION_OFFSET: usize = 0x206;
const XLOADFLAGS_OFFSET: usize = 0x236;
/// How much of the file the checks read: the bzImage setup header ends before this.
const HEAD_LEN: usize = 0x240;

/// ELF identification and header fields (System V ABI, x86-64 supplement).
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const EI_CLASS: usize = 4;
pub(crate) const ELFCLASS64: u8 = 2;
const EI_DATA: usize = 5;
const ELFDATA2LSB: u8 = 1;
const E_TYPE: usize = 16;
pub(crate) const ET_EXEC: u16 = 2;
const E_MACHINE: usize = 18;
pub(crate) const EM_X86_64: u16 = 62;
const E_ENTRY: usize = 24;
const E_PHNUM: usize = 56;

/// The kind of a kernel image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A bzImage: the decompressor runs first.
    BzImage,
    /// An uncompressed x86-64 vmlinux ELF, loaded at its segments' physical addresses.
    Elf,
}

impl KernelFormat {
    /// The name users know the format by.
    pub fn name(self) -> &'static str {
        match self {
            KernelFormat::BzImage => "bzImage",
            KernelFormat::Elf => "vmlinux",
        }
    }
}

/// Reads the start of `path` and says which kind of kernel it is, or why it is not one daxvmm can
/// boot; needs no guest memory or KVM, so a wrong file is reported before anything is set up.
pub fn check_kernel(path: &Path) -> Result<KernelFormat, LoaderError> {
    let shown = path.display().to_string();
    let mut head = Vec::with_capacity(HEAD_LEN);
    File::open(path)
        .and_then(|f| f.take(HEAD_LEN as u64).read_to_end(&mut head))
        .map_err(|source| LoaderError::OpenKernel { path: shown.clone(), source })?;
    let not_kernel = |why: String| LoaderError::NotKernel { path: shown.clone(), why };
    if head.starts_with(ELF_MAGIC) {
        check_elf(&head).map_err(not_kernel)?;
        Ok(KernelFormat::Elf)
    } else {
        check_bzimage_head(&head).map_err(not_kernel)?;
        Ok(KernelFormat::BzImage)
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// The ELF checks linux-loader leaves to its caller: 64-bit, x86-64, an executable with an entry point.
fn check_elf(head: &[u8]) -> Result<(), String> {
    if head.len() < 64 {
        return Err("an ELF file too short to hold its header".into());
    }
    if head[EI_CLASS] != ELFCLASS64 || head[EI_DATA] != ELFDATA2LSB {
        return Err("an ELF file, but not 64-bit little-endian; build the kernel for x86_64".into());
    }
    if u16_at(head, E_MACHINE) != EM_X86_64 {
        return Err(format!("an ELF file for machine {}, not x86-64", u16_at(head, E_MACHINE)));
    }
    if u16_at(head, E_TYPE) != ET_EXEC || u16_at(head, E_PHNUM) == 0 {
        return Err("an ELF file that is not an executable with program headers (use vmlinux)".into());
    }
    let entry = u64::from_le_bytes(head[E_ENTRY..E_ENTRY + 8].try_into().unwrap_or_default());
    if entry == 0 {
        return Err("an ELF file without an entry point".into());
    }
    Ok(())
}

fn check_bzimage_head(head: &[u8]) -> Result<(), String> {
    if head.len() < HEAD_LEN {
        return Err("too short to hold an x86 boot sector and setup header".into());
    }
    if u16_at(head, BOOT_FLAG_OFFSET) != BOOT_FLAG || u32_at(head, HEADER_OFFSET) != HDRS_MAGIC {
        return Err(
            "neither an x86 boot sector with a HdrS setup header (bzImage) nor an ELF file (vmlinux)".into(),
        );
    }
    check_bzimage_header(u16_at(head, VERSION_OFFSET), u16_at(head, XLOADFLAGS_OFFSET))
}

/// The setup header's version and 64-bit entry, checked again on the header linux-loader parsed.
pub fn check_bzimage_header(version: u16, xloadflags: u16) -> Result<(), String> {
    if version < MIN_BOOT_PROTOCOL {
        return Err(format!("boot protocol {}.{} is older than 2.12", version >> 8, version & 0xff));
    }
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err("no 64-bit entry point (XLF_KERNEL_64); build it for x86_64".into());
    }
    Ok(())
}

/// An ELF header with the fields the checks read and, when `segment` is given, one PT_LOAD program header
/// after it placing the file's remaining bytes at that physical address, with `bss` more bytes in memory.
#[cfg(test)]
pub(crate) fn test_elf(
    class: u8,
    machine: u16,
    e_type: u16,
    entry: u64,
    segment: Option<(u64, &[u8], u64)>,
) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let mut b = vec![0u8; EHDR];
    b[..4].copy_from_slice(ELF_MAGIC);
    b[EI_CLASS] = class;
    b[EI_DATA] = ELFDATA2LSB;
    b[6] = 1; // EI_VERSION
    b[E_TYPE..E_TYPE + 2].copy_from_slice(&e_type.to_le_bytes());
    b[E_MACHINE..E_MACHINE + 2].copy_from_slice(&machine.to_le_bytes());
    b[E_ENTRY..E_ENTRY + 8].copy_from_slice(&entry.to_le_bytes());
    b[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    b[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
    b[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes()); // e_phentsize
    let Some((paddr, data, bss)) = segment else { return b };
    b[E_PHNUM..E_PHNUM + 2].copy_from_slice(&1u16.to_le_bytes());
    let mut ph = vec![0u8; PHDR];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[8..16].copy_from_slice(&((EHDR + PHDR) as u64).to_le_bytes()); // p_offset
    ph[16..24].copy_from_slice(&(paddr | 0xffff_ffff_8000_0000).to_le_bytes()); // p_vaddr
    ph[24..32].copy_from_slice(&paddr.to_le_bytes());
    ph[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes()); // p_filesz
    ph[40..48].copy_from_slice(&(data.len() as u64 + bss).to_le_bytes()); // p_memsz
    b.extend_from_slice(&ph);
    b.extend_from_slice(data);
    b
}

/// Writes `bytes` to a file of this process named after `name` in the temporary directory; its path.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn temp_image(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("daxvmm-image-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bzimage(boot_flag: u16, magic: u32, version: u16, xload: u16) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[BOOT_FLAG_OFFSET..BOOT_FLAG_OFFSET + 2].copy_from_slice(&boot_flag.to_le_bytes());
        b[HEADER_OFFSET..HEADER_OFFSET + 4].copy_from_slice(&magic.to_le_bytes());
        b[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&version.to_le_bytes());
        b[XLOADFLAGS_OFFSET..XLOADFLAGS_OFFSET + 2].copy_from_slice(&xload.to_le_bytes());
        b
    }

    #[test]
    fn bzimage_headers() {
        let good = temp_image("bz-good", &bzimage(0xaa55, HDRS_MAGIC, 0x020f, 1));
        assert_eq!(check_kernel(&good).unwrap(), KernelFormat::BzImage);
        std::fs::remove_file(good).unwrap();
        for (n, (bad, why)) in [
            (bzimage(0, HDRS_MAGIC, 0x020f, 1), "boot sector"),
            (bzimage(0xaa55, 0x1234, 0x020f, 1), "boot sector"),
            (bzimage(0xaa55, HDRS_MAGIC, 0x020a, 1), "2.12"),
            (bzimage(0xaa55, HDRS_MAGIC, 0x020f, 0), "64-bit"),
        ]
        .into_iter()
        .enumerate()
        {
            let p = temp_image(&format!("bz-bad-{n}"), &bad);
            let e = check_kernel(&p).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("daxvmm can boot"), "{e}");
            std::fs::remove_file(p).unwrap();
        }
        let e = check_kernel(Path::new("/etc/hostname")).unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
        assert!(matches!(check_kernel(Path::new("/nonexistent")), Err(LoaderError::OpenKernel { .. })));
    }

    fn elf_header(class: u8, machine: u16, e_type: u16, entry: u64, phnum: u16) -> Vec<u8> {
        let mut b = test_elf(class, machine, e_type, entry, None);
        b[E_PHNUM..E_PHNUM + 2].copy_from_slice(&phnum.to_le_bytes());
        b
    }

    #[test]
    fn elf_headers() {
        let good = temp_image("elf-good", &elf_header(ELFCLASS64, EM_X86_64, ET_EXEC, 0x100_0000, 2));
        assert_eq!(check_kernel(&good).unwrap(), KernelFormat::Elf);
        std::fs::remove_file(good).unwrap();
        for (n, (bad, why)) in [
            (elf_header(1, EM_X86_64, ET_EXEC, 0x100_0000, 2), "64-bit"),
            (elf_header(ELFCLASS64, 183, ET_EXEC, 0x100_0000, 2), "machine 183"),
            (elf_header(ELFCLASS64, EM_X86_64, 3, 0x100_0000, 2), "not an executable"),
            (elf_header(ELFCLASS64, EM_X86_64, ET_EXEC, 0x100_0000, 0), "not an executable"),
            (elf_header(ELFCLASS64, EM_X86_64, ET_EXEC, 0, 2), "entry point"),
            (ELF_MAGIC.to_vec(), "too short"),
        ]
        .into_iter()
        .enumerate()
        {
            let p = temp_image(&format!("elf-bad-{n}"), &bad);
            let e = check_kernel(&p).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            std::fs::remove_file(p).unwrap();
        }
    }
}
