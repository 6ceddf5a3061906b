//! Opening the user's backing file of `--pmem SIZE,file=PATH` so that what is checked is what is used:
//! the path is opened once, without following a symbolic link (O_NOFOLLOW), and every check (file type,
//! size) is made on the open descriptor, so nothing can be swapped in between a check and its use.
//! Nothing is written here: sizing a file is the caller's, after every check passed.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::units::format_size;

/// What kind of file the descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file of this many bytes.
    Regular(u64),
    /// A block device of this many bytes (it cannot be resized).
    Block(u64),
}

/// An opened backing file.
#[derive(Debug)]
pub struct Opened {
    /// The descriptor.
    pub file: File,
    /// What it is.
    pub kind: FileKind,
    /// Whether this open created it.
    pub created: bool,
}

/// Opens `path` read-write without following a symbolic link, creating it (exclusively) when it does not
/// exist; `size` and `resize` are the `--pmem` request the file must fit. The error is the reason, to
/// follow the path in a message.
pub fn open(path: &Path, size: u64, resize: bool) -> Result<Opened, String> {
    let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let existing = OpenOptions::new().read(true).write(true).custom_flags(flags).open(path);
    let (mut file, created) = match existing {
        Ok(f) => (f, false),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("is a symbolic link; give the file's own path (daxvmm does not follow links to a file it may resize)".into())
        }
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => return Err("is a directory; name a file".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // O_EXCL: a file (or a dangling link) that appeared meanwhile is not ours to take.
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .custom_flags(flags)
                .open(path)
                .map_err(|e| e.to_string())?;
            (f, true)
        }
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let kind = if meta.is_file() {
        FileKind::Regular(meta.len())
    } else if meta.file_type().is_block_device() {
        let len = file.seek(SeekFrom::End(0)).map_err(|e| format!("cannot read its size: {e}"))?;
        FileKind::Block(len)
    } else {
        return Err("is not a regular file or a block device".into());
    };
    match kind {
        FileKind::Regular(len) if !created && len != size && !resize => Err(format!(
            "is {len} bytes but --pmem asks for {}; pass resize=on to change its size (shrinking drops the data past the new end)",
            format_size(size)
        )),
        FileKind::Block(_) if resize => Err("is a block device, which cannot be resized; drop resize=on".into()),
        FileKind::Block(len) if len != size => {
            Err(format!("is a block device of {len} bytes but --pmem asks for {}", format_size(size)))
        }
        _ => Ok(Opened { file, kind, created }),
    }
}

/// Opens the existing regular file `path` read-only without following a symbolic link, and checks that it
/// is `size` bytes. The error is the reason, to follow the path in a message.
pub fn open_existing_readonly(path: &Path, size: u64) -> Result<File, String> {
    let flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let file =
        OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => "is a symbolic link; give the file's own path".to_string(),
            _ => e.to_string(),
        })?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() != size {
        return Err(format!("is {} bytes but should be {}", meta.len(), format_size(size)));
    }
    Ok(file)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("daxvmm-pmem-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn creates_opens_and_checks_the_size_on_the_descriptor() {
        let p = temp("plain");
        let o = open(&p, 4096, false).unwrap();
        assert!(o.created && o.kind == FileKind::Regular(0), "{o:?}");
        drop(o);
        std::fs::write(&p, [7u8; 100]).unwrap();
        let e = open(&p, 4096, false).unwrap_err();
        assert!(e.contains("is 100 bytes") && e.contains("resize=on"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), [7u8; 100], "a refused file is untouched");
        let o = open(&p, 4096, true).unwrap();
        assert!(!o.created && o.kind == FileKind::Regular(100));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn refuses_links_directories_and_other_files() {
        let target = temp("target");
        std::fs::write(&target, [1u8; 10]).unwrap();
        let link = temp("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open(&link, 10, true).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), [1u8; 10], "resize=on through a link changed nothing");
        // A dangling link is not created through either.
        std::fs::remove_file(&target).unwrap();
        assert!(open(&link, 10, false).unwrap_err().contains("symbolic link"));
        assert!(!target.exists());
        std::fs::remove_file(&link).unwrap();
        assert!(open(&std::env::temp_dir(), 10, false).unwrap_err().contains("is a directory"));
        assert!(open(Path::new("/dev/null"), 10, false).unwrap_err().contains("not a regular file"));
    }
}
