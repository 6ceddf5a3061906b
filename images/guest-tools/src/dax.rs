//! `daxvmm-dax-check`: small probes of a DAX mapping that busybox cannot do: the STATX_ATTR_DAX flag,
//! a MAP_SYNC mapping (which only DAX files accept) touched page by page, and sequential memcpy
//! bandwidth of a mapping. The bandwidth loop also runs on the host over anonymous or hugetlb memory,
//! so guest and host numbers come from the same code.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

use thiserror::Error;

/// STATX_ATTR_DAX (include/uapi/linux/stat.h).
pub const STATX_ATTR_DAX: u64 = 0x0020_0000;
const MAP_SHARED_VALIDATE: libc::c_int = 0x03;
const MAP_SYNC: libc::c_int = 0x80000;
const CHUNK: usize = 1 << 20;

/// Why a DAX probe could not give its answer.
#[derive(Debug, Error)]
pub enum DaxError {
    /// The path cannot be passed to the kernel.
    #[error("{path}: the path contains a NUL byte")]
    NulInPath {
        /// The path given.
        path: String,
    },
    /// statx failed (no such file, no permission, ...).
    #[error("statx {path}: {source}")]
    Statx {
        /// The file.
        path: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// The kernel does not say whether files are DAX (STATX_ATTR_DAX is Linux 5.8+).
    #[error("statx {path}: this kernel does not report the DAX attribute")]
    NoDaxAttribute {
        /// The file.
        path: String,
    },
    /// The file could not be created or opened.
    #[error("open {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// Blocks could not be allocated (is the filesystem full?).
    #[error("fallocate {path}: {source}")]
    Fallocate {
        /// The file.
        path: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// mmap failed.
    #[error("mmap: {source}")]
    Map {
        /// What the kernel said.
        source: io::Error,
    },
    /// A MAP_SYNC mapping was refused: the file is not DAX (or the kernel has no MAP_SYNC).
    #[error("mmap: {source} (MAP_SYNC is refused unless the file is DAX)")]
    MapSync {
        /// What the kernel said.
        source: io::Error,
    },
    /// msync failed.
    #[error("msync: {source}")]
    Msync {
        /// What the kernel said.
        source: io::Error,
    },
}

/// Whether `path` is a DAX file according to statx.
pub fn statx_dax(path: &str) -> Result<bool, DaxError> {
    let c = CString::new(path).map_err(|_| DaxError::NulInPath { path: path.to_string() })?;
    // struct statx is 256 bytes; stx_attributes is at byte 8, stx_attributes_mask at byte 56.
    let mut buf = [0u64; 32];
    // SAFETY: statx writes at most 256 bytes into `buf`, which is 256 bytes long; `c` is NUL-terminated.
    let rc =
        unsafe { libc::syscall(libc::SYS_statx, libc::AT_FDCWD, c.as_ptr(), 0, 0x0fffu32, buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(DaxError::Statx { path: path.to_string(), source: io::Error::last_os_error() });
    }
    let (attrs, mask) = (buf[1], buf[7]);
    if mask & STATX_ATTR_DAX == 0 {
        return Err(DaxError::NoDaxAttribute { path: path.to_string() });
    }
    Ok(attrs & STATX_ATTR_DAX != 0)
}

/// A shared mapping that unmaps itself.
pub(crate) struct Mapping {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

pub(crate) fn map(fd: libc::c_int, len: usize, flags: libc::c_int) -> Result<Mapping, DaxError> {
    // SAFETY: a new mapping chosen by the kernel; nothing else refers to that range.
    let p =
        unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        return Err(DaxError::Map { source: io::Error::last_os_error() });
    }
    Ok(Mapping { ptr: p.cast(), len })
}

/// Creates (or empties) `path` and allocates `len` bytes of blocks to it, so faults find blocks in place.
fn create_allocated(path: &str, len: usize) -> Result<std::fs::File, DaxError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|source| DaxError::Open { path: path.to_string(), source })?;
    // SAFETY: fallocate on our own descriptor.
    if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) } != 0 {
        return Err(DaxError::Fallocate { path: path.to_string(), source: io::Error::last_os_error() });
    }
    Ok(f)
}

/// Creates `path` with `len` bytes (fallocated), maps it shared (with MAP_SYNC when `sync`) and writes
/// one byte per 4 KiB page. MAP_SYNC succeeding proves the mapping is DAX; the faults show in the fs_dax
/// tracepoints (a PMD fault ends in NOPAGE, or NEEDDSYNC under MAP_SYNC; FALLBACK means 4 KiB pages).
pub fn touch(path: &str, len: usize, sync: bool) -> Result<(), DaxError> {
    let f = create_allocated(path, len)?;
    let m = if sync {
        map(f.as_raw_fd(), len, MAP_SHARED_VALIDATE | MAP_SYNC).map_err(|e| match e {
            DaxError::Map { source } => DaxError::MapSync { source },
            e => e,
        })?
    } else {
        map(f.as_raw_fd(), len, libc::MAP_SHARED)?
    };
    for off in (0..len).step_by(4096) {
        // SAFETY: off < len, inside the mapping.
        unsafe { m.ptr.add(off).write_volatile(0x5a) };
    }
    // SAFETY: msync over our own mapping.
    if unsafe { libc::msync(m.ptr.cast(), len, libc::MS_SYNC) } != 0 {
        return Err(DaxError::Msync { source: io::Error::last_os_error() });
    }
    Ok(())
}

/// Where the bandwidth loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BwTarget<'a> {
    /// A file, mapped shared (a DAX file in the guest).
    File(&'a str),
    /// Anonymous shared memory advised for transparent huge pages.
    Anon,
    /// hugetlb memory with 2 MiB pages.
    Hugetlb,
}

/// Sequential bandwidth in MB/s (10^6 bytes): (write, read).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bandwidth {
    /// memcpy into the mapping.
    pub write: f64,
    /// memcpy out of the mapping.
    pub read: f64,
}

/// Maps `len` bytes of `target`, faults it in once, then times `passes` memcpy passes each way.
pub fn bandwidth(target: BwTarget<'_>, len: usize, passes: u32) -> Result<Bandwidth, DaxError> {
    let len = len.div_ceil(CHUNK) * CHUNK;
    let (_file, m) = match target {
        BwTarget::File(path) => {
            let f = create_allocated(path, len)?;
            let m = map(f.as_raw_fd(), len, libc::MAP_SHARED)?;
            (Some(f), m)
        }
        BwTarget::Anon => {
            let m = map(-1, len, libc::MAP_SHARED | libc::MAP_ANONYMOUS)?;
            // SAFETY: advising our own mapping; a refusal only leaves small pages.
            unsafe { libc::madvise(m.ptr.cast(), len, libc::MADV_HUGEPAGE) };
            (None, m)
        }
        BwTarget::Hugetlb => {
            (None, map(-1, len, libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB)?)
        }
    };
    let mut buf = vec![0xa5u8; CHUNK];
    // Fault everything in first: the timed passes measure memory, not page faults.
    for off in (0..len).step_by(CHUNK) {
        // SAFETY: [off, off+CHUNK) lies inside the mapping; buf is CHUNK bytes.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), m.ptr.add(off), CHUNK) };
    }
    let total = len as f64 * f64::from(passes);
    let t = Instant::now();
    for _ in 0..passes {
        for off in (0..len).step_by(CHUNK) {
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), m.ptr.add(off), CHUNK) };
        }
    }
    let write = total / t.elapsed().as_secs_f64() / 1e6;
    let t = Instant::now();
    for _ in 0..passes {
        for off in (0..len).step_by(CHUNK) {
            // SAFETY: as above, in the other direction.
            unsafe { std::ptr::copy_nonoverlapping(m.ptr.add(off), buf.as_mut_ptr(), CHUNK) };
        }
        std::hint::black_box(&buf);
    }
    let read = total / t.elapsed().as_secs_f64() / 1e6;
    Ok(Bandwidth { write, read })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_on_anonymous_memory_is_positive() {
        let bw = bandwidth(BwTarget::Anon, 8 << 20, 2).unwrap();
        assert!(bw.write > 0.0 && bw.read > 0.0, "{bw:?}");
    }

    #[test]
    fn regular_tmp_file_is_not_dax() {
        let p = std::env::temp_dir().join(format!("daxvmm-dax-check-{}", std::process::id()));
        let p = p.to_str().unwrap();
        std::fs::write(p, b"x").unwrap();
        // Either the kernel reports the attribute (and it is clear) or it cannot tell; never "DAX".
        assert!(!statx_dax(p).unwrap_or(false));
        // MAP_SYNC is refused on a non-DAX file.
        let e = touch(p, 4096, true).unwrap_err();
        assert!(matches!(e, DaxError::MapSync { .. }) && e.to_string().contains("MAP_SYNC"), "{e}");
        touch(p, 8192, false).unwrap();
        std::fs::remove_file(p).unwrap();
    }
}
