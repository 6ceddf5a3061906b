//! `--disk PATH[,ro]`: raw image files the guest sees as virtio-blk disks (/dev/vda, /dev/vdb, ... in
//! the order given). This module owns the option's syntax, opening and locking the image, the file
//! worker's serve step (the device model reads and writes the image as a `File` backend).
//!
//! An image is locked for the run (shared with `ro`, exclusive without), so two daxvmm processes never
//! write one image, and a read-only disk is opened read-only: the guest cannot change the file.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use daxvmm_devices::bus::lock;
use daxvmm_devices::virtio::blk::{Blk, BLK_S_OK};
use daxvmm_devices::virtio::mmio::MmioTransport;
use thiserror::Error;
use vm_memory::GuestMemoryMmap;

use super::worker::Counts;

/// Sector size of the disk's capacity; an image's size must be a multiple of it.
const SECTOR: u64 = 512;

/// One `--disk` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The raw image file.
    pub path: PathBuf,
    /// The guest may only read it.
    pub read_only: bool,
}

/// Why a `--disk` was refused.
#[derive(Debug, Error)]
pub enum DiskError {
    /// The option does not parse.
    #[error("--disk {given}: {why} (expected PATH[,ro], e.g. --disk root.img,ro)")]
    Syntax {
        /// What the user wrote.
        given: String,
        /// What is wrong with it.
        why: String,
    },
    /// The image cannot be opened or inspected.
    #[error("--disk {path}: {what}: {err}")]
    Open {
        /// The image.
        path: String,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        err: std::io::Error,
    },
    /// The image is not something a disk can be made of.
    #[error("--disk {path}: {why}")]
    Unusable {
        /// The image.
        path: String,
        /// Why not.
        why: String,
    },
}

impl DiskSpec {
    /// Parses `PATH[,ro]`.
    pub fn parse(s: &str) -> Result<Self, DiskError> {
        let syntax = |why: &str| DiskError::Syntax { given: s.to_string(), why: why.to_string() };
        // A path with a comma cannot be given, as with --pmem's file=.
        let mut parts = s.split(',');
        let path = parts.next().unwrap_or_default();
        let read_only = match (parts.next(), parts.next()) {
            (None, _) => false,
            (Some("ro"), None) => true,
            (Some("ro"), Some(other)) | (Some(other), _) => {
                return Err(syntax(&format!("unknown or repeated option '{other}'")))
            }
        };
        if path.is_empty() {
            return Err(syntax("no image path"));
        }
        Ok(DiskSpec { path: PathBuf::from(path), read_only })
    }
}

/// An opened, locked image.
#[derive(Debug)]
pub struct Disk {
    file: File,
    path: PathBuf,
    read_only: bool,
    size: u64,
}

impl Disk {
    /// Opens and locks the image of `spec`; checks that it is a regular file whose size is a non-zero
    /// multiple of 512 bytes.
    pub fn open(spec: &DiskSpec) -> Result<Self, DiskError> {
        let shown = spec.path.display().to_string();
        let os = |what: &'static str| {
            let path = shown.clone();
            move |err| DiskError::Open { path, what, err }
        };
        let unusable = |why: String| DiskError::Unusable { path: shown.clone(), why };
        let file = match std::fs::OpenOptions::new().read(true).write(!spec.read_only).open(&spec.path) {
            Ok(f) => f,
            Err(e) if !spec.read_only && is_not_writable(&e) => {
                return Err(unusable(format!("not writable here ({e}); add ,ro to give it read-only")))
            }
            Err(e) => return Err(os("cannot open it")(e)),
        };
        let meta = file.metadata().map_err(os("cannot stat it"))?;
        if !meta.is_file() {
            return Err(unusable("not a regular file (only raw image files can be disks)".into()));
        }
        let size = meta.len();
        if size == 0 || size % SECTOR != 0 {
            return Err(unusable(format!("its size ({size} bytes) must be a non-zero multiple of 512")));
        }
        let how = if spec.read_only { libc::LOCK_SH } else { libc::LOCK_EX };
        // SAFETY: flock on a descriptor this function owns; it changes no memory.
        if unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                return Err(unusable("another process holds a lock on it (another daxvmm using it?)".into()));
            }
            return Err(os("cannot lock it")(err));
        }
        Ok(Disk { file, path: spec.path.clone(), read_only: spec.read_only, size })
    }

    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the guest may only read it.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device model for disk `index`; its serial number (GET_ID, /sys/block/vdX/serial) is
    /// "daxvmm-disk`index`".
    pub fn device(&self, index: usize) -> Result<Blk, daxvmm_devices::virtio::blk::BlkError> {
        Blk::new(self.size, self.read_only, serial(index))
    }
}

fn is_not_writable(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS)
}

/// The 20-byte GET_ID answer of disk `index`, NUL-padded.
pub fn serial(index: usize) -> [u8; 20] {
    let mut id = [0u8; 20];
    let text = format!("daxvmm-disk{index}");
    let n = text.len().min(id.len());
    id[..n].copy_from_slice(&text.as_bytes()[..n]);
    id
}

/// What the summary calls one request of `disk`.
pub(super) fn what(disk: &Disk) -> String {
    let ro = if disk.read_only { ", read-only" } else { "" };
    format!("requests ({}{ro})", disk.path.display())
}

/// The serve step of device `name`: takes the requests, runs their I/O on the image without the
/// transport's lock (a vCPU may meanwhile touch the device's registers), and completes them.
pub(super) fn serve(
    transport: Arc<Mutex<MmioTransport<Blk>>>,
    mem: GuestMemoryMmap,
    disk: Disk,
) -> impl FnMut(&Counts) + Send + 'static {
    let mut file = disk.file;
    move |counts| {
        let taken = lock(&transport).take_requests();
        if taken.is_empty() {
            return;
        }
        let mut done = Vec::with_capacity(taken.len());
        for r in &taken {
            // A read writes straight into guest memory: after a reset those buffers are the driver's
            // again, so a request from before it is not run at all.
            if lock(&transport).epoch() != r.epoch() {
                continue;
            }
            done.push(r.execute(&mem, &mut file));
        }
        counts.add(done.len(), done.iter().filter(|d| d.status() != BLK_S_OK).count());
        lock(&transport).complete_requests(done);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A scratch directory of this test process, removed when dropped.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("daxvmm-disk-{}-{test}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        fn image(&self, name: &str, len: u64) -> PathBuf {
            let p = self.0.join(name);
            File::create(&p).unwrap().set_len(len).unwrap();
            p
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn spec_parses_path_and_ro() {
        let d = DiskSpec::parse("/img/root.img,ro").unwrap();
        assert_eq!(d, DiskSpec { path: "/img/root.img".into(), read_only: true });
        let d = DiskSpec::parse("scratch.img").unwrap();
        assert_eq!(d, DiskSpec { path: "scratch.img".into(), read_only: false });
        for bad in ["", ",ro", "x.img,rw", "x.img,ro,ro"] {
            let e = DiskSpec::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--disk {bad}: ")) && e.contains("PATH[,ro]"), "{bad}: {e}");
        }
    }

    #[test]
    fn open_checks_size_kind_and_lock() {
        let dir = Scratch::new("open");
        let spec = DiskSpec { path: dir.image("a.img", 1 << 20), read_only: false };
        let disk = Disk::open(&spec).unwrap();
        assert_eq!(disk.size(), 1 << 20);
        let e = Disk::open(&spec).unwrap_err().to_string();
        assert!(e.contains("another process holds a lock"), "{e}");
        let e = Disk::open(&DiskSpec { read_only: true, ..spec.clone() }).unwrap_err().to_string();
        assert!(e.contains("another process holds a lock"), "a reader must not share a written image: {e}");
        drop(disk);
        let ro = DiskSpec { read_only: true, ..spec };
        let (a, b) = (Disk::open(&ro).unwrap(), Disk::open(&ro).unwrap());
        assert!(a.read_only() && b.read_only(), "readers share an image");

        for (name, len) in [("empty.img", 0), ("odd.img", 1000)] {
            let e = Disk::open(&DiskSpec { path: dir.image(name, len), read_only: true }).unwrap_err();
            assert!(e.to_string().contains("non-zero multiple of 512"), "{e}");
        }
        let e = Disk::open(&DiskSpec { path: dir.0.clone(), read_only: true }).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = Disk::open(&DiskSpec { path: dir.0.join("none"), read_only: false }).unwrap_err();
        assert!(e.to_string().contains("cannot open it: No such file"), "{e}");
    }

    #[test]
    fn serials_name_the_disk_index() {
        assert_eq!(&serial(0)[..12], b"daxvmm-disk0");
        assert!(serial(0)[12..].iter().all(|&b| b == 0));
        assert_eq!(&serial(7)[..12], b"daxvmm-disk7");
    }
}
