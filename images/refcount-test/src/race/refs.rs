//! Page references that user space takes without the driver: the reference vmsplice leaves in a pipe
//! on each page it splices (a plain get, dropped when the pipe is drained), the pin an O_DIRECT read
//! takes on the pages of its buffer for the I/O ([`RawDev`], the non-DAX device it reads from), and the
//! long-term pin an io_uring fixed-buffer registration asks for (which fs-dax must refuse).
//! [`vmsplice_held`], [`odirect_held`] and [`iouring_held`] race them against truncate or hole punch
//! under the kernel's hold points; the unheld races, which also run without the driver, are `scenarios::vmsplice` and
//! `scenarios::odirect`.

use std::sync::Mutex;

use daxvmm_refcount_test::sys::{ename, errno, map_file, Map, TFile, PAGE};
use daxvmm_scenarios::{ScenarioId, AFTER, BEFORE};

use crate::ctx::{code, finding, note, Ctx};
use crate::error::RaceError;
use crate::files::{pfn_of, remove, FRESH, STALE};
use crate::racers::pinned_three;
use crate::scenarios::{held_device, one_page, operate, tagged, Op};
use crate::watchdog::Progress;

/// A pipe, both ends closed on drop.
#[derive(Debug)]
pub struct Pipe {
    read: libc::c_int,
    write: libc::c_int,
}

impl Pipe {
    pub fn new() -> Result<Pipe, RaceError> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(RaceError::Pipe(std::io::Error::last_os_error()));
        }
        Ok(Pipe { read: fds[0], write: fds[1] })
    }

    /// vmsplices the first page of `map` into the pipe: the pipe takes a reference on that page.
    pub fn splice(&self, map: &Map) -> Result<(), RaceError> {
        let iov = libc::iovec { iov_base: map.ptr.cast(), iov_len: PAGE };
        // SAFETY: iov describes the first page of a live mapping; vmsplice takes page references, it
        // does not keep the pointer.
        let n = unsafe { libc::vmsplice(self.write, &iov, 1, 0) };
        if n == PAGE as isize {
            Ok(())
        } else {
            Err(RaceError::Vmsplice { n, source: std::io::Error::last_os_error() })
        }
    }

    /// Reads one page from the pipe, which drops the reference on the page it came from; how many of
    /// the bytes read are [`FRESH`] (a file made after the truncate got that page's block).
    pub fn drain(&self) -> usize {
        let mut buf = [0u8; PAGE];
        // SAFETY: self.read is the pipe's read end; buf is a live buffer of PAGE bytes.
        let n = unsafe { libc::read(self.read, buf.as_mut_ptr().cast(), PAGE) };
        buf.iter().take(n.max(0) as usize).filter(|&&b| b == FRESH).count()
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // SAFETY: both ends are ours and closed once, here.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}

/// The `--raw` block device (a non-DAX NVDIMM), open for O_DIRECT reads; closed on drop.
#[derive(Debug)]
pub struct RawDev {
    fd: libc::c_int,
}

impl RawDev {
    pub fn open(raw: Option<&str>) -> Result<RawDev, RaceError> {
        let raw = raw.ok_or(RaceError::NoRawDevice)?;
        let c = std::ffi::CString::new(raw).map_err(RaceError::RawPath)?;
        // SAFETY: c is NUL-terminated and outlives the call.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECT | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(RaceError::OpenRaw { raw: raw.into(), source: std::io::Error::last_os_error() });
        }
        Ok(RawDev { fd })
    }

    /// An O_DIRECT read of `len` bytes from the device's start into `buf` (an address only: the kernel
    /// pins the pages behind it for the I/O and drops the pins before the read returns); what it
    /// returned, for a note.
    ///
    /// # Safety
    /// `buf` must be the start of a live writable mapping of at least `len` bytes (the kernel writes
    /// into it, or fails with EFAULT where the pages are gone).
    pub unsafe fn read_into(&self, buf: usize, len: usize) -> String {
        // SAFETY: the caller guarantees `buf` is a live writable mapping of `len` bytes.
        let n = unsafe { libc::pread(self.fd, buf as *mut libc::c_void, len, 0) };
        if n < 0 {
            ename(errno())
        } else {
            format!("{n} bytes")
        }
    }
}

impl Drop for RawDev {
    fn drop(&mut self) {
        // SAFETY: fd is ours and closed once, here.
        unsafe { libc::close(self.fd) };
    }
}

/// truncate-vmsplice-busy and punch-vmsplice-busy: a one-page file filled with [`STALE`] is vmspliced
/// into a pipe and unmapped, so the pipe's reference is the page's last. Thread 0 truncates or punches
/// it, held at its kernel points; thread 1 drains the pipe, tagged for the `free` point, so the kernel's
/// own event shows that the drain dropped the last reference to that pfn.
pub fn vmsplice_held(ctx: &Ctx<'_>, dir: &str, id: ScenarioId, op: Op) -> Result<(), RaceError> {
    let dev = held_device(ctx)?;
    let name = format!("vsh-{}", ctx.run);
    let f = TFile::create(dir, &name, PAGE)?;
    let mut map = map_file(f.fd, PAGE)?;
    // SAFETY: map is a live writable mapping of PAGE bytes.
    unsafe { std::ptr::write_bytes(map.ptr, STALE, PAGE) };
    let pfn = pfn_of(Some(dev), &map).unwrap_or(0);
    let pipe = Pipe::new()?;
    pipe.splice(&map)?;
    ctx.event(code::PIN, 1, pfn, 0);
    map.unmap();
    ctx.event(code::MUNMAP, 1, pfn, 0);
    let made = race_release(ctx, dir, id, op, pfn, &f, || {
        let leaked = tagged(ctx, Some(id), 1, || {
            // Announced before the drain drops the reference, as for UNPIN.
            ctx.event(code::UNPIN, 1, pfn, 0);
            pipe.drain()
        });
        if leaked > 0 {
            let what =
                format!("the pipe's reference read {leaked} bytes of a file created after the {}", op.name());
            finding(ctx.run, &what);
        }
    });
    drop(pipe);
    drop(f);
    remove(&made);
    remove(&[format!("{dir}/{name}")]);
    Ok(())
}

/// truncate-odirect-busy and punch-odirect-busy: thread 1 reads one page from the raw device with
/// O_DIRECT into a mapped page of the file; the read pins that page (held at `gup`), does the I/O and is
/// held again where it drops the pin (`unpin`). Meanwhile thread 0 truncates or punches the page, held
/// after its busy scan found it pinned; the read's unpin, let go, makes it idle before the wait. The pin
/// is announced before the read and its release after it, so the host's ordering check counts the pin
/// as held for the whole read.
pub fn odirect_held(
    ctx: &Ctx<'_>,
    dir: &str,
    raw: Option<&str>,
    id: ScenarioId,
    op: Op,
) -> Result<(), RaceError> {
    let dev = held_device(ctx)?;
    let rdev = RawDev::open(raw)?;
    let name = format!("dioh-{}", ctx.run);
    let f = TFile::create(dir, &name, PAGE)?;
    let map = map_file(f.fd, PAGE)?;
    map.touch();
    let pfn = pfn_of(Some(dev), &map).unwrap_or(0);
    // The address only: the kernel, not this program, touches the mapping from the reader thread.
    let buf = map.addr();
    let made = race_release(ctx, dir, id, op, pfn, &f, || {
        ctx.event(code::PIN, 1, pfn, 0);
        // SAFETY: buf is the start of `map`, a live writable mapping of PAGE bytes until after the race.
        let what = tagged(ctx, Some(id), 1, || unsafe { rdev.read_into(buf, PAGE) });
        ctx.event(code::UNPIN, 1, pfn, 0);
        note(ctx.run, &format!("O_DIRECT read into the DAX mapping: {what}"));
    });
    drop(map);
    drop(f);
    remove(&made);
    remove(&[format!("{dir}/{name}")]);
    Ok(())
}

/// An io_uring instance (one entry: it only registers buffers), closed on drop.
#[derive(Debug)]
struct Ring {
    fd: libc::c_int,
}

/// `IORING_REGISTER_BUFFERS` and `IORING_UNREGISTER_BUFFERS` of io_uring_register(2).
const IORING_REGISTER_BUFFERS: libc::c_uint = 0;
const IORING_UNREGISTER_BUFFERS: libc::c_uint = 1;

impl Ring {
    fn new() -> Result<Ring, RaceError> {
        // struct io_uring_params: 120 bytes, all zero but what the kernel fills in.
        let mut params = [0u32; 30];
        // SAFETY: params is a live, writable 120-byte io_uring_params the kernel fills in.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
        if fd < 0 {
            return Err(RaceError::IoUring(std::io::Error::last_os_error()));
        }
        Ok(Ring { fd: fd as libc::c_int })
    }

    /// Registers `len` bytes at `addr` as a fixed buffer (the kernel pins them FOLL_LONGTERM); the
    /// errno when it refuses.
    fn register(&self, addr: usize, len: usize) -> Result<(), i32> {
        let iov = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
        // SAFETY: iov is one live iovec; the kernel reads it and pins the pages it names, it does not
        // keep the pointer to iov.
        let r = unsafe {
            libc::syscall(libc::SYS_io_uring_register, self.fd, IORING_REGISTER_BUFFERS, &iov, 1u32)
        };
        if r == 0 {
            Ok(())
        } else {
            Err(errno())
        }
    }
}

impl Ring {
    /// Lets go of the registered buffers.
    fn unregister(&self) {
        // SAFETY: fd is an open ring; IORING_UNREGISTER_BUFFERS takes no argument.
        unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.fd,
                IORING_UNREGISTER_BUFFERS,
                std::ptr::null::<u8>(),
                0u32,
            )
        };
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: fd is ours and closed once, here (closing the ring drops any registered buffer).
        unsafe { libc::close(self.fd) };
    }
}

/// truncate-iouring-busy and punch-iouring-busy: a one-page file pinned through the driver, as in
/// truncate-unpin-busy; while thread 0 is held after its busy scan found the pin, thread 2 asks io_uring
/// to register the page as a fixed buffer, a FOLL_LONGTERM pin that fs-dax must refuse (EOPNOTSUPP);
/// then thread 1 releases the driver's pin. A registration that succeeds is a finding (the buffer is
/// let go again at once, so truncate can finish).
pub fn iouring_held(ctx: &Ctx<'_>, dir: &str, id: ScenarioId, op: Op) -> Result<(), RaceError> {
    held_device(ctx)?;
    let ring = Ring::new()?;
    pinned_three(ctx, dir, id, op, "uring", |_, addr| match ring.register(addr, PAGE) {
        Err(libc::EOPNOTSUPP) => note(ctx.run, "io_uring fixed-buffer registration refused: EOPNOTSUPP"),
        Err(e) => finding(
            ctx.run,
            &format!(
                "io_uring fixed-buffer registration of an fs-dax page failed with {}, not EOPNOTSUPP",
                ename(e)
            ),
        ),
        Ok(()) => {
            finding(
                ctx.run,
                "io_uring registered an fs-dax page as a fixed buffer: a long-term pin fs-dax must refuse",
            );
            ring.unregister();
        }
    })
}

/// Thread 0 does `op` on `f` (its page at `pfn`) under its kernel points of `id`, and thread 1 runs
/// `release` between its sync points, then tells the watchdog; returns the files thread 0 made after
/// `op`.
fn race_release(
    ctx: &Ctx<'_>,
    dir: &str,
    id: ScenarioId,
    op: Op,
    pfn: u64,
    f: &TFile,
    release: impl FnOnce() + Send,
) -> Vec<String> {
    let made = Mutex::new(Vec::new());
    let progress = &Progress::default();
    std::thread::scope(|s| {
        s.spawn(|| progress.watch(ctx.run, 1, op.name()));
        s.spawn(|| operate(ctx, progress, Some(id), op, pfn, dir, &made, || one_page(f, op)));
        s.spawn(move || {
            ctx.place(1);
            ctx.sync(1, BEFORE);
            release();
            progress.released();
            ctx.sync(1, AFTER);
        });
    });
    made.into_inner().unwrap_or_else(|p| p.into_inner())
}
