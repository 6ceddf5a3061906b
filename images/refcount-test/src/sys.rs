//! The system-call layer: errno and its names, the open /dev/dax_refcount ([`Dev`], one method per
//! ioctl), memory mappings unmapped on drop ([`Map`] and the `mmap` helpers) and test files in DIR
//! ([`TFile`]). Everything that touches a raw descriptor or pointer lives here, except the
//! scenario-specific calls (signals, timers, punch hole, unlink, /dev/kmsg) in the check modules.

use std::ffi::{CStr, CString, NulError};
use std::io;
use std::os::fd::RawFd;

use crate::abi::{
    Event, HookStats, Pin, Query, Sync, Tag, Unpin, Write, DAX_RC_EVENT, DAX_RC_HOOK_STATS, DAX_RC_PIN,
    DAX_RC_QUERY, DAX_RC_SYNC, DAX_RC_TAG, DAX_RC_UNPIN, DAX_RC_WRITE_THROUGH_PIN,
};

pub const PAGE: usize = 4096;
pub const PMD: usize = 2 << 20;
pub const MAP_SHARED_VALIDATE: libc::c_int = 0x03;
pub const MAP_SYNC: libc::c_int = 0x80000;
const DEV: &CStr = c"/dev/dax_refcount";

/// Why a system call of this layer failed. The messages are the programs' output (the TAP bail-out and
/// check lines, `@@race skip` reasons), so they stay short: what failed and the system's reason; the
/// variants' docs say what to do.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// /dev/dax_refcount could not be opened: the guest kernel lacks the dax_refcount driver (boot one
    /// built with daxvmm's guest-kernel patches) or the device node is missing (devtmpfs not mounted).
    #[error("open {}: {source}", DEV.to_string_lossy())]
    OpenDev {
        /// What open(2) said.
        source: io::Error,
    },
    /// mmap(2) failed: out of memory or address space, or a file that cannot be mapped as asked (MAP_SYNC
    /// needs a DAX mount: mount DIR with `-o dax`).
    #[error("mmap: {source}")]
    Mmap {
        /// What mmap(2) said.
        source: io::Error,
    },
    /// A test file's path has a NUL byte: give a DIR without one.
    #[error("open {path}: {source}")]
    PathNul {
        /// The path.
        path: String,
        /// Where the NUL is.
        source: NulError,
    },
    /// A test file could not be created: DIR must exist and be writable (the DAX mount).
    #[error("open {path}: {source}")]
    Create {
        /// The path.
        path: String,
        /// What open(2) said.
        source: io::Error,
    },
    /// Blocks could not be allocated for a test file: the filesystem on DIR is full (or does not
    /// support fallocate); make it larger or clean it.
    #[error("fallocate {path} {len}: {source}")]
    Fallocate {
        /// The path.
        path: String,
        /// Bytes asked for.
        len: usize,
        /// What fallocate(2) said.
        source: io::Error,
    },
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn ename(e: i32) -> String {
    let name = match e {
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::ENOENT => "ENOENT",
        libc::ENOTTY => "ENOTTY",
        libc::EPERM => "EPERM",
        libc::ESTALE => "ESTALE",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EINTR => "EINTR",
        libc::ENOSPC => "ENOSPC",
        libc::ENXIO => "ENXIO",
        libc::ENOMEM => "ENOMEM",
        libc::ENODEV => "ENODEV",
        0 => "success",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// An open /dev/dax_refcount.
#[derive(Debug)]
pub struct Dev {
    fd: RawFd,
}

impl Dev {
    pub fn open() -> Result<Dev, SysError> {
        // SAFETY: DEV is a NUL-terminated string constant; open() only reads it.
        let fd = unsafe { libc::open(DEV.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(SysError::OpenDev { source: io::Error::last_os_error() });
        }
        Ok(Dev { fd })
    }

    /// ioctl with a raw argument; Err(errno) on failure.
    pub fn raw(&self, cmd: u32, arg: usize) -> Result<i64, i32> {
        // SAFETY: the driver only touches user memory through copy_{from,to}_user, which fail cleanly on
        // bad pointers; callers pass either valid buffers of the command's size or deliberately bad ones.
        let rc = unsafe { libc::ioctl(self.fd, cmd as _, arg) };
        if rc < 0 {
            Err(errno())
        } else {
            Ok(rc as i64)
        }
    }

    pub fn io<T>(&self, cmd: u32, v: &mut T) -> Result<(), i32> {
        self.raw(cmd, v as *mut T as usize).map(|_| ())
    }

    pub fn pin(&self, addr: usize, len: usize, flags: u32) -> Result<Pin, i32> {
        let mut a = Pin { addr: addr as u64, len: len as u64, flags, ..Default::default() };
        self.io(DAX_RC_PIN, &mut a).map(|_| a)
    }

    pub fn unpin(&self, handle: u64, flags: u32) -> Result<(), i32> {
        let mut a = Unpin { handle, flags, reserved: 0 };
        self.io(DAX_RC_UNPIN, &mut a)
    }

    pub fn query(&self, handle: u64, index: u64) -> Result<Query, i32> {
        let mut a = Query { handle, index, ..Default::default() };
        self.io(DAX_RC_QUERY, &mut a).map(|_| a)
    }

    pub fn write(&self, handle: u64, index: u64, offset: u32, len: u32, pattern: u8) -> Result<(), i32> {
        let mut a = Write { handle, index, offset, len, pattern, reserved: [0; 7] };
        self.io(DAX_RC_WRITE_THROUGH_PIN, &mut a)
    }

    /// Arrives at a fault-injection sync point; the outcome code once the host lets the thread go.
    pub fn sync(&self, thread: u8, point: u16) -> Result<u64, i32> {
        let mut a = Sync { thread: thread.into(), point: point.into(), outcome: 0 };
        self.io(DAX_RC_SYNC, &mut a).map(|_| a.outcome)
    }

    /// Tags the calling task as scenario thread `thread` for the kernel hold points in `points` (0 untags).
    pub fn tag(&self, thread: u8, points: u32) -> Result<(), i32> {
        let mut a = Tag { thread: thread.into(), points };
        self.io(DAX_RC_TAG, &mut a)
    }

    /// Sends one encoded fault-injection event.
    pub fn event(&self, value: u64) -> Result<(), i32> {
        let mut a = Event { value };
        self.io(DAX_RC_EVENT, &mut a)
    }

    pub fn stats(&self) -> Result<HookStats, i32> {
        let mut a = HookStats::default();
        self.io(DAX_RC_HOOK_STATS, &mut a).map(|_| a)
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: fd was opened by Dev::open, is owned by this Dev only and is closed exactly once, here.
        unsafe { libc::close(self.fd) };
    }
}

/// A mapping unmapped on drop (unless already unmapped).
#[derive(Debug)]
pub struct Map {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Map {
    pub fn addr(&self) -> usize {
        self.ptr as usize
    }
    pub fn unmap(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: ptr/len describe a mapping we created and nobody else refers to.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
            self.ptr = std::ptr::null_mut();
        }
    }
    /// Writes one byte per page (write faults, so every page gets mapped writable).
    pub fn touch(&self) {
        for off in (0..self.len).step_by(PAGE) {
            // SAFETY: off < len, inside our mapping, which every caller maps PROT_WRITE.
            unsafe { std::ptr::write_volatile(self.ptr.add(off), 0x5a) };
        }
    }
    pub fn byte(&self, off: usize) -> u8 {
        assert!(off < self.len);
        // SAFETY: off < len (asserted), inside our mapping, which every caller maps readable.
        unsafe { std::ptr::read_volatile(self.ptr.add(off)) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        self.unmap();
    }
}

pub fn mmap_at(hint: usize, len: usize, prot: i32, flags: i32, fd: RawFd) -> Result<Map, SysError> {
    // SAFETY: either a kernel-chosen address or MAP_FIXED inside a reservation we own.
    let p = unsafe { libc::mmap(hint as *mut _, len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        return Err(SysError::Mmap { source: io::Error::last_os_error() });
    }
    Ok(Map { ptr: p.cast(), len })
}

pub fn map_file(fd: RawFd, len: usize) -> Result<Map, SysError> {
    mmap_at(0, len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd)
}

/// Maps `len` bytes of `fd` at a 2 MiB-aligned address (so a PMD fault is possible).
pub fn map_file_aligned(fd: RawFd, len: usize, flags: i32) -> Result<Map, SysError> {
    let mut resv = mmap_at(0, len + PMD, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)?;
    let aligned = (resv.addr() + PMD - 1) & !(PMD - 1);
    // Give the reservation back around the aligned window; the window itself is replaced by MAP_FIXED.
    let (start, end) = (resv.addr(), resv.addr() + resv.len);
    resv.ptr = std::ptr::null_mut();
    // SAFETY: the head and tail of our own reservation.
    unsafe {
        if aligned > start {
            libc::munmap(start as *mut _, aligned - start);
        }
        if end > aligned + len {
            libc::munmap((aligned + len) as *mut _, end - aligned - len);
        }
    }
    mmap_at(aligned, len, libc::PROT_READ | libc::PROT_WRITE, flags | libc::MAP_FIXED, fd)
}

pub fn anon(len: usize, prot: i32) -> Result<Map, SysError> {
    mmap_at(0, len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)
}

/// A file in DIR, created empty, with `len` bytes allocated (fallocate) so faults find blocks in place.
#[derive(Debug)]
pub struct TFile {
    pub fd: RawFd,
}

impl TFile {
    pub fn create(dir: &str, name: &str, len: usize) -> Result<TFile, SysError> {
        let path = format!("{dir}/{name}");
        let c = match CString::new(path.as_str()) {
            Ok(c) => c,
            Err(source) => return Err(SysError::PathNul { path, source }),
        };
        // SAFETY: c is NUL-terminated and outlives the call.
        let fd = unsafe {
            libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC, 0o644)
        };
        if fd < 0 {
            return Err(SysError::Create { path, source: io::Error::last_os_error() });
        }
        let f = TFile { fd };
        // SAFETY: fd is our open descriptor; fallocate touches no memory of ours.
        if unsafe { libc::fallocate(fd, 0, 0, len as libc::off_t) } != 0 {
            return Err(SysError::Fallocate { path, len, source: io::Error::last_os_error() });
        }
        Ok(f)
    }
    pub fn truncate(&self, len: usize) -> Result<(), i32> {
        // SAFETY: fd is our open descriptor; ftruncate touches no memory of ours.
        if unsafe { libc::ftruncate(self.fd, len as libc::off_t) } != 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }
}

impl Drop for TFile {
    fn drop(&mut self) {
        // SAFETY: fd was opened by TFile::create, is owned by this TFile only and is closed exactly once.
        unsafe { libc::close(self.fd) };
    }
}

/// Copies one byte between `addr` and a pipe inside the kernel: `to_user` false reads the byte at
/// `addr` (a read fault), true writes `v` there (a write fault, copy on write in a private mapping).
/// A fault the kernel cannot satisfy, such as a page past the end of a file a truncate shrank, fails
/// with EFAULT instead of killing the program with SIGBUS: without holds (the `--sleeps` baseline) a
/// racer may touch a mapping after the truncate returned. Async-signal-safe (a forked child may call it).
pub fn kernel_copy_byte(addr: usize, to_user: bool, v: u8) -> Result<u8, i32> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a live array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(errno());
    }
    let mut b = [v];
    // SAFETY: the pipe's ends are ours; `addr` is only reached by the kernel's user copy, which checks
    // it; `b` is a live one-byte buffer.
    let r = unsafe {
        if to_user {
            if libc::write(fds[1], b.as_ptr().cast(), 1) == 1 {
                libc::read(fds[0], addr as *mut libc::c_void, 1)
            } else {
                -1
            }
        } else if libc::write(fds[1], addr as *const libc::c_void, 1) == 1 {
            libc::read(fds[0], b.as_mut_ptr().cast(), 1)
        } else {
            -1
        }
    };
    let e = errno();
    // SAFETY: closes the two descriptors pipe2 returned, once.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    if r == 1 {
        Ok(b[0])
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ename_names_the_driver_errnos() {
        assert_eq!(ename(libc::EFAULT), "EFAULT");
        assert_eq!(ename(libc::EOPNOTSUPP), "EOPNOTSUPP");
        assert_eq!(ename(libc::ENXIO), "ENXIO");
        assert_eq!(ename(0), "success");
        assert_eq!(ename(libc::EBUSY), format!("errno {}", libc::EBUSY));
    }

    #[test]
    fn dev_path() {
        assert_eq!(DEV.to_string_lossy(), "/dev/dax_refcount");
    }

    /// The messages are printed as TAP and `@@race skip` text: they keep the wording of the String
    /// errors they replaced.
    #[test]
    fn error_messages() {
        let os = |e| io::Error::from_raw_os_error(e);
        let eno = os(libc::ENOENT).to_string();
        assert_eq!(
            SysError::OpenDev { source: os(libc::ENOENT) }.to_string(),
            format!("open /dev/dax_refcount: {eno}")
        );
        assert_eq!(SysError::Mmap { source: os(libc::ENOENT) }.to_string(), format!("mmap: {eno}"));
        assert_eq!(
            SysError::Create { path: "/mnt/x".into(), source: os(libc::ENOENT) }.to_string(),
            format!("open /mnt/x: {eno}")
        );
        assert_eq!(
            SysError::Fallocate { path: "/mnt/x".into(), len: 4096, source: os(libc::ENOENT) }.to_string(),
            format!("fallocate /mnt/x 4096: {eno}")
        );
        let Err(e) = TFile::create("/tmp/a\0b", "f", 0) else { panic!("a path with a NUL opened") };
        let nul = CString::new("/tmp/a\0b/f").expect_err("a NUL byte");
        assert_eq!(e.to_string(), format!("open /tmp/a\0b/f: {nul}"));
    }

    #[test]
    fn kernel_copies_fail_with_efault_past_the_end_of_a_file() -> Result<(), SysError> {
        let dir = std::env::temp_dir().to_string_lossy().into_owned();
        let name = format!("kcopy-{}", std::process::id());
        let f = TFile::create(&dir, &name, PAGE)?;
        let map = map_file(f.fd, 2 * PAGE)?;
        assert_eq!(kernel_copy_byte(map.addr(), true, 0x7e), Ok(0x7e));
        assert_eq!(kernel_copy_byte(map.addr(), false, 0), Ok(0x7e));
        assert_eq!(map.byte(0), 0x7e, "the write went through the mapping");
        // The second page lies past the end of the one-page file: a user access would be SIGBUS.
        assert_eq!(kernel_copy_byte(map.addr() + PAGE, false, 0), Err(libc::EFAULT));
        assert_eq!(kernel_copy_byte(map.addr() + PAGE, true, 1), Err(libc::EFAULT));
        let _ = std::fs::remove_file(format!("{dir}/{name}"));
        Ok(())
    }
}
