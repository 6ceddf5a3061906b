//! Writes the "newc" cpio format (the one `cpio -H newc`, the kernel's initramfs and busybox's `cpio -i`
//! read): the archive of a kernel tree's modules that a suite guest unpacks.

use std::io::{self, Write};

/// The "new ASCII" format without checksums.
const MAGIC: &[u8; 6] = b"070701";
/// Regular file, rw-r--r--.
const FILE_MODE: u32 = 0o100644;
/// The name of the entry that ends an archive.
const TRAILER: &str = "TRAILER!!!";

/// A writer of one archive: entries, then [`Writer::finish`].
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    next_inode: u32,
}

impl<W: Write> Writer<W> {
    /// An archive written to `out`.
    pub fn new(out: W) -> Self {
        Self { out, written: 0, next_inode: 1 }
    }

    /// Appends a regular file `name` (a relative path; `cpio -id` makes its directories).
    pub fn file(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: over 4 GiB, too large for cpio"))
        })?;
        let inode = self.next_inode;
        self.next_inode += 1;
        self.entry(name, inode, FILE_MODE, 1, size)?;
        self.put(data)?;
        self.pad()
    }

    /// Writes the trailer; the writer and the archive's length.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.entry(TRAILER, 0, 0, 1, 0)?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }

    fn entry(&mut self, name: &str, inode: u32, mode: u32, nlink: u32, size: u32) -> io::Result<()> {
        if name.is_empty() || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a cpio name must be non-empty text without NUL",
            ));
        }
        let name_size = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a cpio name of over 4 GiB"))?;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [inode, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, name_size, 0];
        let mut header = Vec::with_capacity(110);
        header.extend_from_slice(MAGIC);
        for f in fields {
            header.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.put(&header)?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Header plus name, and file data, each end on a 4-byte boundary.
    fn pad(&mut self) -> io::Result<()> {
        let zeros = [0u8; 3];
        let n = ((4 - self.written % 4) % 4) as usize;
        self.put(&zeros[..n])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Reads an archive back the way the format is specified: (name, data) per entry, up to the trailer.
    fn entries(mut a: &[u8]) -> Vec<(String, Vec<u8>)> {
        let field = |h: &[u8], i: usize| {
            usize::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16).unwrap()
        };
        let align = |n: usize| n.div_ceil(4) * 4;
        let mut out = Vec::new();
        loop {
            assert_eq!(&a[..6], MAGIC);
            let (size, name_size) = (field(a, 6), field(a, 11));
            let name = std::str::from_utf8(&a[110..110 + name_size - 1]).unwrap().to_string();
            assert_eq!(a[110 + name_size - 1], 0, "names end with NUL");
            let data_at = align(110 + name_size);
            if name == TRAILER {
                assert_eq!(a.len(), data_at, "nothing after the trailer");
                return out;
            }
            out.push((name, a[data_at..data_at + size].to_vec()));
            a = &a[align(data_at + size)..];
        }
    }

    #[test]
    fn files_read_back_with_their_names_and_data_at_four_byte_boundaries() {
        let mut w = Writer::new(Vec::new());
        w.file("daxvmm-modules", b"6.12.117\n").unwrap();
        w.file("6.12.117/kernel/drivers/md/dm-mod.ko", &[7u8; 5]).unwrap();
        w.file("e", b"").unwrap();
        let (bytes, len) = w.finish().unwrap();
        assert_eq!(len as usize, bytes.len());
        assert_eq!(bytes.len() % 4, 0);
        // The first header, field by field: inode 1, mode 0100644, 9 bytes, a name of 15 with its NUL.
        assert_eq!(&bytes[..14], b"07070100000001");
        assert_eq!(&bytes[14..22], b"000081a4");
        assert_eq!(&bytes[54..62], b"00000009");
        assert_eq!(&bytes[94..102], b"0000000f");
        let got = entries(&bytes);
        assert_eq!(
            got,
            vec![
                ("daxvmm-modules".to_string(), b"6.12.117\n".to_vec()),
                ("6.12.117/kernel/drivers/md/dm-mod.ko".to_string(), vec![7u8; 5]),
                ("e".to_string(), Vec::new()),
            ]
        );
    }

    #[test]
    fn a_name_with_nul_is_refused() {
        let mut w = Writer::new(Vec::new());
        assert!(w.file("a\0b", b"x").is_err());
        assert!(w.file("", b"x").is_err());
    }
}
