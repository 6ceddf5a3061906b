//! Files of a run: the pinned page a scenario races over, and the new files made after a truncate whose
//! blocks the host's oracle checks.

use std::ffi::CString;

use daxvmm_refcount_test::abi::PIN_WRITE;
use daxvmm_refcount_test::sys::{map_file, map_file_aligned, Dev, Map, TFile, PAGE, PMD};
use daxvmm_scenarios::MARKER_NEW_BLOCK;

use crate::ctx::{code, Ctx};
use crate::error::RaceError;

/// Pattern the pinner writes through its pin.
pub const STALE: u8 = 0xa5;
/// Pattern of the files made after the truncate.
pub const FRESH: u8 = 0x3c;
/// New files made after each truncate: enough that one of them likely gets the freed block.
pub const NEW_FILES: usize = 8;

/// A page (or 2 MiB folio) of a DAX file, mapped and pinned for writing through the driver.
#[derive(Debug)]
pub struct PinnedFile {
    pub path: String,
    pub file: Option<TFile>,
    pub map: Map,
    pub handle: u64,
    pub pfn: u64,
    /// Folio order the driver saw (9 for a PMD mapping).
    pub order: u32,
}

/// Creates `dir/name` of `len` bytes, maps it (2 MiB aligned for `len == PMD`), writes every page and
/// pins `pin_len` bytes from its start.
pub fn pin_file(
    dev: &Dev,
    dir: &str,
    name: &str,
    len: usize,
    pin_len: usize,
) -> Result<PinnedFile, RaceError> {
    let path = format!("{dir}/{name}");
    let file = TFile::create(dir, name, len)?;
    let map =
        if len >= PMD { map_file_aligned(file.fd, len, libc::MAP_SHARED)? } else { map_file(file.fd, len)? };
    map.touch();
    let p =
        dev.pin(map.addr(), pin_len, PIN_WRITE).map_err(|errno| RaceError::Ioctl { what: "PIN", errno })?;
    let q = dev.query(p.handle, 0).map_err(|errno| RaceError::Ioctl { what: "QUERY", errno })?;
    Ok(PinnedFile { path, file: Some(file), map, handle: p.handle, pfn: q.pfn, order: q.order })
}

/// One page pinned for writing through the driver: its handle and pfn.
#[derive(Debug, Clone, Copy)]
pub struct PinnedPage {
    pub handle: u64,
    pub pfn: u64,
}

/// Pins the page at `addr` (faulting it in if needed) for writing, and asks its pfn; `what` names the
/// pin in errors. A pin whose pfn cannot be read is released again.
pub fn pin_page(dev: &Dev, addr: usize, what: &'static str) -> Result<PinnedPage, RaceError> {
    let p = dev.pin(addr, PAGE, PIN_WRITE).map_err(|errno| RaceError::Ioctl { what, errno })?;
    match dev.query(p.handle, 0) {
        Ok(q) => Ok(PinnedPage { handle: p.handle, pfn: q.pfn }),
        Err(errno) => {
            let _ = dev.unpin(p.handle, 0);
            Err(RaceError::Ioctl { what: "QUERY", errno })
        }
    }
}

/// The pfn behind the first page of `map` (pin, query, unpin); `None` without the driver.
pub fn pfn_of(dev: Option<&Dev>, map: &Map) -> Option<u64> {
    pfn_at(dev?, map.addr())
}

/// The pfn behind the mapped page at `addr` (pin, query, unpin; the pin faults it in if needed).
pub fn pfn_at(dev: &Dev, addr: usize) -> Option<u64> {
    let p = dev.pin(addr, PAGE, 0).ok()?;
    let pfn = dev.query(p.handle, 0).ok().map(|q| q.pfn);
    let _ = dev.unpin(p.handle, 0);
    pfn
}

/// Makes [`NEW_FILES`] one-block files in `dir` filled with [`FRESH`] (written through the filesystem,
/// synced), and announces each block's pfn to the host. Returns their paths.
pub fn new_files(ctx: &Ctx<'_>, thread: u8, dir: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for i in 0..NEW_FILES {
        let name = format!("new-{}-{i}", ctx.run);
        let f = match TFile::create(dir, &name, PAGE) {
            Ok(f) => f,
            Err(e) => {
                crate::ctx::note(ctx.run, &format!("new file {name}: {e}"));
                break;
            }
        };
        paths.push(format!("{dir}/{name}"));
        let buf = [FRESH; PAGE];
        // SAFETY: f.fd is open; buf is a live buffer of PAGE bytes.
        let n = unsafe { libc::pwrite(f.fd, buf.as_ptr().cast(), PAGE, 0) };
        // SAFETY: f.fd is open.
        if n != PAGE as isize || unsafe { libc::fsync(f.fd) } != 0 {
            crate::ctx::note(ctx.run, &format!("writing {name}: {}", std::io::Error::last_os_error()));
            continue;
        }
        if let Ok(m) = map_file(f.fd, PAGE) {
            if let Some(pfn) = pfn_of(ctx.dev, &m) {
                ctx.event(code::MARKER, thread, pfn, MARKER_NEW_BLOCK | u16::from(FRESH));
            }
        }
    }
    paths
}

/// Removes files, ignoring ones already gone.
pub fn remove(paths: &[String]) {
    for p in paths {
        let _ = unlink(p);
    }
}

/// unlink(2) with the errno on failure.
pub fn unlink(path: &str) -> Result<(), i32> {
    // SAFETY: unlink only reads the NUL-terminated path, which outlives the call.
    path_call(path, |c| unsafe { libc::unlink(c) })
}

/// umount(2) with the errno on failure.
pub fn umount(path: &str) -> Result<(), i32> {
    // SAFETY: umount only reads the NUL-terminated path, which outlives the call.
    path_call(path, |c| unsafe { libc::umount(c) })
}

/// Calls a path system call with `path` as a C string; the errno when it returns non-zero.
fn path_call(path: &str, call: impl FnOnce(*const libc::c_char) -> libc::c_int) -> Result<(), i32> {
    let c = CString::new(path).map_err(|_| libc::EINVAL)?;
    if call(c.as_ptr()) == 0 {
        Ok(())
    } else {
        Err(daxvmm_refcount_test::sys::errno())
    }
}
