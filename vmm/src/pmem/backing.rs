//! Host memory behind one emulated NVDIMM: a hugetlb memfd, anonymous memory with or without THP, or a
//! user's file mapped shared (on hugetlbfs it gets huge pages). Mappings are aligned to their page size
//! (at least 2 MiB) so guest-physical and host-virtual addresses can be co-aligned and KVM can map
//! large pages. Nothing is committed until touched, and a user's file is never truncated by a failed
//! start: sizes are checked before anything is written.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::file::{self, FileKind, Opened};
use super::hugetlb::{how_to_grow, read_pool};
use super::spec::{Backing, PmemSpec};
use crate::units::{format_size, GIB, MIB};

const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// What the host pages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingKind {
    /// hugetlb pages of this size (memfd or a hugetlbfs file).
    Hugetlb(u64),
    /// Anonymous or file memory advised to use transparent huge pages.
    Thp,
    /// Small pages.
    Small,
}

/// Errors preparing a pmem backing.
#[derive(Debug, Error)]
pub enum BackingError {
    /// The hugetlb pool is too small.
    #[error(
        "pmem{index}: {need} hugetlb pages of {page} are needed but the pool has {have} available; {how}"
    )]
    PoolTooSmall {
        /// Region index.
        index: usize,
        /// Pages needed.
        need: u64,
        /// Pages available.
        have: u64,
        /// Page size, formatted.
        page: String,
        /// How to fix it.
        how: String,
    },
    /// The host has no pool of that page size.
    #[error("pmem{index}: this host has no {page} hugetlb pool (/sys/kernel/mm/hugepages); use backing=auto or thp")]
    NoPool {
        /// Region index.
        index: usize,
        /// Page size.
        page: String,
    },
    /// The backing file cannot be used as it is.
    #[error("pmem{index}: file {path}: {why}")]
    File {
        /// Region index.
        index: usize,
        /// The path.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A system call failed.
    #[error("pmem{index}: {what}: {err}")]
    Os {
        /// Region index.
        index: usize,
        /// What was tried.
        what: &'static str,
        /// The OS error.
        err: std::io::Error,
    },
}

/// A mapped pmem backing. The memory stays mapped until this is dropped.
#[derive(Debug)]
pub struct HostMapping {
    addr: *mut u8,
    size: u64,
    kind: BackingKind,
    file: Option<PathBuf>,
    /// Mapped shared, so the guest's writes go to `file` (with `share=off` they stay in private copies).
    shared: bool,
    created: bool,
    // Keeps a memfd or the user's file open for the life of the mapping.
    _fd: Option<File>,
}

// SAFETY: the mapping is plain memory owned by this struct; the pointer is only an address, valid from
// any thread for as long as the struct lives.
unsafe impl Send for HostMapping {}
// SAFETY: as above; concurrent access is the guest's business, exactly as with guest RAM.
unsafe impl Sync for HostMapping {}

impl HostMapping {
    /// Host virtual address of the first byte.
    pub fn host_addr(&self) -> u64 {
        self.addr as u64
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Page kind.
    pub fn kind(&self) -> BackingKind {
        self.kind
    }
    /// The page size the mapping is aligned to (and, for hugetlb, made of).
    pub fn align(&self) -> u64 {
        match self.kind {
            BackingKind::Hugetlb(p) => p,
            _ => 2 * MIB,
        }
    }
    /// The backing file, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Removes the backing file if this run created it: for a start that failed before the guest ran,
    /// so nothing of the user's is touched and nothing new is left behind.
    pub fn discard_if_created(&self) {
        if let (true, Some(path)) = (self.created, &self.file) {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!("could not remove {} created by this failed start: {e}", path.display());
            }
        }
    }

    /// The file the guest's writes go to: a file-backed region mapped shared (`share=on`).
    pub fn durable_file(&self) -> Option<&Path> {
        self.file.as_deref().filter(|_| self.shared)
    }

    /// The range [`Self::flush`] writes back, also for a flush from another thread (the guest's flush
    /// hint); `None` when there is nothing to write back (see [`Self::durable_file`]).
    pub fn flush_range(&self) -> Option<FlushRange> {
        self.durable_file().map(|_| FlushRange { addr: self.addr as usize, len: self.size as usize })
    }

    /// Writes dirty pages of a shared file-backed region back to the file (msync MS_SYNC); nothing for
    /// other regions.
    pub fn flush(&self) -> std::io::Result<()> {
        self.flush_range().map_or(Ok(()), FlushRange::flush)
    }

    /// Reads `buf.len()` bytes at `offset`: the host's own view of pmem, for checks that must not trust
    /// the guest. The oracle reads a running VM's pmem through [`super::view::PmemView`] instead, which can
    /// be detached before the mapping goes; this one serves the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Option<()> {
        let end = offset.checked_add(buf.len() as u64)?;
        if end > self.size {
            return None;
        }
        // SAFETY: the range lies inside the mapping (checked above); volatile-free copy is fine because
        // racing guest writes only make the snapshot stale, never invalid memory.
        unsafe { std::ptr::copy_nonoverlapping(self.addr.add(offset as usize), buf.as_mut_ptr(), buf.len()) };
        Some(())
    }
}

/// The host range of a shared file-backed region, which msync writes back to its file.
#[derive(Debug, Clone, Copy)]
pub struct FlushRange {
    addr: usize,
    len: usize,
}

impl FlushRange {
    /// msync(MS_SYNC) of the range.
    pub fn flush(self) -> std::io::Result<()> {
        // SAFETY: msync only writes back the pages of this range; it touches no memory of ours, and on a
        // range that is no longer mapped it fails with ENOMEM.
        if unsafe { libc::msync(self.addr as *mut libc::c_void, self.len, libc::MS_SYNC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for HostMapping {
    fn drop(&mut self) {
        // SAFETY: addr/size are the mapping created in `map`, unmapped only here.
        unsafe { libc::munmap(self.addr.cast(), self.size as usize) };
    }
}

fn os_err(index: usize, what: &'static str) -> impl FnOnce(std::io::Error) -> BackingError {
    move |err| BackingError::Os { index, what, err }
}

/// Chooses the backing for a region without a file.
fn choose_memory_backing(index: usize, spec: &PmemSpec, pools: &Path) -> Result<BackingKind, BackingError> {
    let hugetlb = |page: u64| -> Result<BackingKind, BackingError> {
        let pool = read_pool(pools, page).ok_or(BackingError::NoPool { index, page: format_size(page) })?;
        let need = spec.size / page;
        if pool.available() < need {
            return Err(BackingError::PoolTooSmall {
                index,
                need,
                have: pool.available(),
                page: format_size(page),
                how: how_to_grow(page, need),
            });
        }
        Ok(BackingKind::Hugetlb(page))
    };
    match spec.backing {
        Backing::Hugetlb2M => hugetlb(2 * MIB),
        Backing::Hugetlb1G => hugetlb(GIB),
        Backing::Thp => Ok(BackingKind::Thp),
        Backing::Anon => Ok(BackingKind::Small),
        Backing::Auto => match hugetlb(2 * MIB) {
            Ok(k) => Ok(k),
            Err(e) => {
                log::info!(
                    "{e}; falling back to anonymous memory with transparent huge pages (backing=auto)"
                );
                Ok(BackingKind::Thp)
            }
        },
    }
}

/// Checks the opened backing file `o` at `path` against `spec` (its filesystem's page size, the backing
/// asked for) and only then sizes it; its page kind.
fn prepare_file(index: usize, spec: &PmemSpec, path: &Path, o: &Opened) -> Result<BackingKind, BackingError> {
    let bad = |why: String| BackingError::File { index, path: path.display().to_string(), why };
    // SAFETY: fstatfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open and `st` is writable.
    if unsafe { libc::fstatfs(o.file.as_raw_fd(), &mut st) } != 0 {
        return Err(bad(std::io::Error::last_os_error().to_string()));
    }
    let kind = if st.f_type as i64 == HUGETLBFS_MAGIC {
        let page = st.f_bsize as u64;
        if !spec.size.is_multiple_of(page) {
            return Err(bad(format!(
                "is on hugetlbfs with {} pages; make the size a multiple of that",
                format_size(page)
            )));
        }
        BackingKind::Hugetlb(page)
    } else {
        match spec.backing {
            Backing::Hugetlb2M | Backing::Hugetlb1G => {
                return Err(bad("is not on hugetlbfs; mount one (mount -t hugetlbfs none /mnt/huge) and put the file there, or use backing=auto".into()))
            }
            Backing::Thp => BackingKind::Thp,
            _ => BackingKind::Small,
        }
    };
    if o.created || (spec.resize && matches!(o.kind, FileKind::Regular(_))) {
        o.file.set_len(spec.size).map_err(|e| bad(format!("cannot set its size: {e}")))?;
    }
    Ok(kind)
}

fn memfd(index: usize, kind: BackingKind) -> Result<File, BackingError> {
    let name = CString::new(format!("daxvmm-pmem{index}")).map_err(|_| BackingError::Os {
        index,
        what: "memfd name",
        err: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let flags = libc::MFD_CLOEXEC
        | match kind {
            BackingKind::Hugetlb(p) if p == GIB => libc::MFD_HUGETLB | libc::MFD_HUGE_1GB,
            BackingKind::Hugetlb(_) => libc::MFD_HUGETLB | libc::MFD_HUGE_2MB,
            _ => 0,
        };
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(os_err(index, "memfd_create")(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Reserves `size + align` bytes of address space and returns an `align`-aligned start inside it,
/// with the slack around `size` already released.
fn reserve_aligned(index: usize, size: u64, align: u64) -> Result<*mut u8, BackingError> {
    let total = (size + align) as usize;
    // SAFETY: a fresh PROT_NONE anonymous reservation; nothing else refers to it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(os_err(index, "reserving address space")(std::io::Error::last_os_error()));
    }
    let start = (base as u64).div_ceil(align) * align;
    let head = start - base as u64;
    let tail = total as u64 - head - size;
    // SAFETY: both ranges lie inside the reservation just made and outside [start, start+size).
    unsafe {
        if head > 0 {
            libc::munmap(base, head as usize);
        }
        if tail > 0 {
            libc::munmap((start + size) as *mut libc::c_void, tail as usize);
        }
    }
    Ok(start as *mut u8)
}

/// Maps the backing for region `index` as `spec` asks. `pools` is normally /sys/kernel/mm/hugepages.
pub fn map(index: usize, spec: &PmemSpec, pools: &Path) -> Result<HostMapping, BackingError> {
    let opened = match &spec.file {
        Some(path) => Some(file::open(path, spec.size, spec.resize).map_err(|why| BackingError::File {
            index,
            path: path.display().to_string(),
            why,
        })?),
        None => None,
    };
    let created = opened.as_ref().is_some_and(|o| o.created);
    let result = map_backing(index, spec, pools, opened);
    if result.is_err() && created {
        // A file this failed start created holds nothing of the user's: do not leave it behind.
        if let Some(p) = &spec.file {
            let _ = std::fs::remove_file(p);
        }
    }
    let (fd, kind, addr) = result?;
    let shared = spec.share;
    Ok(HostMapping { addr, size: spec.size, kind, file: spec.file.clone(), shared, created, _fd: fd })
}

/// Everything of [`map`] after the user's file (if any) is open: its checks and sizing, or the memory
/// backing, then the mapping.
fn map_backing(
    index: usize,
    spec: &PmemSpec,
    pools: &Path,
    opened: Option<Opened>,
) -> Result<(Option<File>, BackingKind, *mut u8), BackingError> {
    let (fd, kind) = match (opened, &spec.file) {
        (Some(o), Some(path)) => {
            let kind = prepare_file(index, spec, path, &o)?;
            (Some(o.file), kind)
        }
        _ => {
            let kind = choose_memory_backing(index, spec, pools)?;
            let fd = match kind {
                BackingKind::Hugetlb(_) => Some(memfd(index, kind)?),
                _ => None,
            };
            if let Some(f) = &fd {
                f.set_len(spec.size).map_err(os_err(index, "sizing the memfd"))?;
            }
            (fd, kind)
        }
    };
    let addr = map_fd(index, spec, fd.as_ref(), kind)?;
    Ok((fd, kind, addr))
}

fn map_fd(
    index: usize,
    spec: &PmemSpec,
    fd: Option<&File>,
    kind: BackingKind,
) -> Result<*mut u8, BackingError> {
    let align = match kind {
        BackingKind::Hugetlb(p) => p,
        _ => 2 * MIB,
    };
    let start = reserve_aligned(index, spec.size, align)?;
    let mut flags = libc::MAP_FIXED | libc::MAP_NORESERVE;
    flags |= match fd {
        Some(_) if spec.share || spec.file.is_none() => libc::MAP_SHARED,
        Some(_) => libc::MAP_PRIVATE,
        None => libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
    };
    if spec.prefault {
        flags |= libc::MAP_POPULATE;
    }
    let raw_fd = fd.map_or(-1, |f| f.as_raw_fd());
    // SAFETY: MAP_FIXED over the reservation we own at `start`, exactly `size` bytes long.
    let p = unsafe {
        libc::mmap(start.cast(), spec.size as usize, libc::PROT_READ | libc::PROT_WRITE, flags, raw_fd, 0)
    };
    if p == libc::MAP_FAILED {
        let err = std::io::Error::last_os_error();
        // SAFETY: releasing our own reservation.
        unsafe { libc::munmap(start.cast(), spec.size as usize) };
        return Err(os_err(index, "mapping the backing")(err));
    }
    let advice = match kind {
        BackingKind::Thp => Some(libc::MADV_HUGEPAGE),
        BackingKind::Small if fd.is_none() => Some(libc::MADV_NOHUGEPAGE),
        _ => None,
    };
    if let Some(a) = advice {
        // SAFETY: advising our own mapping; failure only means the hint is ignored.
        if unsafe { libc::madvise(p, spec.size as usize, a) } != 0 {
            log::warn!("pmem{index}: madvise failed: {}", std::io::Error::last_os_error());
        }
    }
    Ok(p.cast())
}

/// A line for the start-up log: what backs the region and why.
pub fn describe(index: usize, m: &HostMapping) -> String {
    let what = match (m.kind(), m.file()) {
        (BackingKind::Hugetlb(p), Some(f)) => {
            format!("hugetlbfs file {} ({} pages)", f.display(), format_size(p))
        }
        (BackingKind::Hugetlb(p), None) => format!("hugetlb memfd ({} pages)", format_size(p)),
        (BackingKind::Thp, Some(f)) => format!("file {} (THP advised)", f.display()),
        (BackingKind::Thp, None) => "anonymous memory with transparent huge pages".to_string(),
        (BackingKind::Small, Some(f)) => format!("file {} (4K pages)", f.display()),
        (BackingKind::Small, None) => "anonymous memory (4K pages)".to_string(),
    };
    format!("pmem{index}: {} backed by {what}", format_size(m.size()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(s: &str) -> PmemSpec {
        PmemSpec::parse(s).unwrap()
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("daxvmm-backing-{}-{name}", std::process::id()))
    }

    fn no_pools() -> PathBuf {
        tmp("no-pools")
    }

    #[test]
    fn anonymous_thp_mapping_is_aligned_and_lazy() {
        let m = map(0, &spec("64M,backing=thp"), &no_pools()).unwrap();
        assert_eq!(m.host_addr() % (2 * MIB), 0);
        assert_eq!(m.kind(), BackingKind::Thp);
        let mut b = [1u8; 16];
        m.read(m.size() - 16, &mut b).unwrap();
        assert_eq!(b, [0; 16]);
        assert!(m.read(m.size() - 8, &mut b).is_none());
        assert!(describe(0, &m).contains("transparent huge pages"));
    }

    #[test]
    fn auto_falls_back_without_a_pool_and_explicit_hugetlb_refuses() {
        let m = map(1, &spec("4M"), &no_pools()).unwrap();
        assert_eq!(m.kind(), BackingKind::Thp);
        let e = map(1, &spec("4M,backing=hugetlb-2m"), &no_pools()).unwrap_err();
        assert!(matches!(e, BackingError::NoPool { .. }), "{e}");
    }

    #[test]
    fn pool_too_small_names_the_sysctl() {
        let root = tmp("pools");
        let dir = super::super::hugetlb::pool_dir(&root, 2 * MIB);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["free_hugepages", "resv_hugepages", "nr_overcommit_hugepages", "surplus_hugepages"] {
            std::fs::write(dir.join(f), "1").unwrap();
        }
        let e = map(0, &spec("16G,backing=hugetlb-2m"), &root).unwrap_err().to_string();
        assert!(e.contains("8192 hugetlb pages") && e.contains("nr_hugepages"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn file_is_created_persists_and_is_never_truncated() {
        let path = tmp("file.img");
        let _ = std::fs::remove_file(&path);
        let s = spec(&format!("4M,file={}", path.display()));
        {
            let m = map(0, &s, &no_pools()).unwrap();
            // SAFETY: the test writes inside the 4 MiB mapping it owns.
            unsafe { *(m.host_addr() as *mut u8).add(4096) = 0xa5 };
            m.flush().unwrap();
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * MIB);
        let m = map(0, &s, &no_pools()).unwrap();
        let mut b = [0u8];
        m.read(4096, &mut b).unwrap();
        assert_eq!(b[0], 0xa5, "data survives a remap");
        drop(m);
        // Wrong size: refused, file untouched.
        let e = map(0, &spec(&format!("8M,file={}", path.display())), &no_pools()).unwrap_err().to_string();
        assert!(e.contains("resize=on"), "{e}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * MIB);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data[4096], 0xa5);
        // Not on hugetlbfs: refused for an explicit hugetlb backing, file untouched.
        assert!(
            map(0, &spec(&format!("4M,file={},backing=hugetlb-2m", path.display())), &no_pools()).is_err()
        );
        assert_eq!(std::fs::read(&path).unwrap()[4096], 0xa5);
        // resize=on grows it and keeps the data.
        let m = map(0, &spec(&format!("8M,file={},resize=on", path.display())), &no_pools()).unwrap();
        let mut b = [0u8];
        m.read(4096, &mut b).unwrap();
        assert_eq!(b[0], 0xa5);
        drop(m);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn only_files_this_run_created_are_discarded() {
        let path = tmp("discard.img");
        let _ = std::fs::remove_file(&path);
        let s = spec(&format!("2M,file={}", path.display()));
        map(0, &s, &no_pools()).unwrap().discard_if_created();
        assert!(!path.exists(), "a file created by a failed start is removed");
        std::fs::write(&path, vec![7u8; 2 << 20]).unwrap();
        map(0, &s, &no_pools()).unwrap().discard_if_created();
        assert_eq!(std::fs::read(&path).unwrap()[0], 7, "an existing file is kept as it was");
        std::fs::remove_file(&path).unwrap();
        // A check that fails after the file was created (it is not on hugetlbfs) removes it too.
        let e = map(0, &spec(&format!("2M,file={},backing=hugetlb-2m", path.display())), &no_pools())
            .unwrap_err();
        assert!(e.to_string().contains("is not on hugetlbfs"), "{e}");
        assert!(!path.exists(), "the file this failed start created is gone");
    }

    #[test]
    fn directory_is_refused() {
        let e =
            map(0, &spec(&format!("4M,file={}", std::env::temp_dir().display())), &no_pools()).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }
}
