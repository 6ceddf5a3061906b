//! A filesystem's error reports through fanotify (FAN_FS_ERROR). Memory failure on an fs-dax page of
//! xfs (made with the reverse-mapping btree) goes through xfs's notify_failure, which reports the lost
//! file data as an EIO error event of the filesystem; the generic path (ext4, or xfs without the
//! btree) reports nothing. So whether an event comes tells which path handled a poison.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Bytes of `struct fanotify_event_metadata`.
const METADATA_LEN: usize = 24;

/// One FAN_FS_ERROR event: the error (a positive errno) and how many errors it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsError {
    /// The errno the filesystem reported.
    pub error: i32,
    /// How many errors were merged into this event.
    pub count: u32,
}

/// A watch for the error events of the filesystem that holds a path.
#[derive(Debug)]
pub struct FsErrorWatch {
    fd: OwnedFd,
}

impl FsErrorWatch {
    /// Watches the filesystem of `path` (needs CAP_SYS_ADMIN and a kernel with fanotify).
    pub fn new(path: &str) -> io::Result<Self> {
        let flags = libc::FAN_CLASS_NOTIF | libc::FAN_REPORT_FID | libc::FAN_NONBLOCK | libc::FAN_CLOEXEC;
        // SAFETY: fanotify_init takes flags and returns a new descriptor or -1.
        let raw = unsafe { libc::fanotify_init(flags, libc::O_RDONLY as libc::c_uint) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mark = libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM;
        // SAFETY: a valid fanotify descriptor and a NUL-terminated path that lives across the call.
        if unsafe {
            libc::fanotify_mark(fd.as_raw_fd(), mark, libc::FAN_FS_ERROR, libc::AT_FDCWD, c.as_ptr())
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(FsErrorWatch { fd })
    }

    /// The error events that arrive within `limit` (returns as soon as one has come).
    pub fn wait(&self, limit: Duration) -> io::Result<Vec<FsError>> {
        let deadline = Instant::now() + limit;
        loop {
            let events = self.read()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if !events.is_empty() || left.is_zero() {
                return Ok(events);
            }
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one live pollfd.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as libc::c_int) };
        }
    }

    /// The events queued now.
    fn read(&self) -> io::Result<Vec<FsError>> {
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a live buffer of its length.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(Vec::new()) } else { Err(e) };
        }
        Ok(parse(&buf[..n as usize]))
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The FAN_FS_ERROR events in what one read returned: each event's error record
/// (`struct fanotify_event_info_error`); malformed lengths end the parse.
fn parse(buf: &[u8]) -> Vec<FsError> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(meta), Some(mask)) =
        (u32_at(buf, at), u16_at(buf, at + 6), u64_at(buf, at + 8))
    {
        let (len, meta) = (len as usize, usize::from(meta));
        if len < METADATA_LEN || meta < METADATA_LEN || meta > len || at + len > buf.len() {
            break;
        }
        let mut info = at + meta;
        while info + 4 <= at + len {
            let (kind, ilen) = (buf[info], usize::from(u16_at(buf, info + 2).unwrap_or(0)));
            if ilen < 4 || info + ilen > at + len {
                break;
            }
            if kind == libc::FAN_EVENT_INFO_TYPE_ERROR && mask & libc::FAN_FS_ERROR != 0 && ilen >= 12 {
                let error = u32_at(buf, info + 4).unwrap_or(0) as i32;
                out.push(FsError { error, count: u32_at(buf, info + 8).unwrap_or(0) });
            }
            info += ilen;
        }
        at += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event as the kernel lays it out: metadata, then info records.
    fn event(mask: u64, infos: &[Vec<u8>]) -> Vec<u8> {
        let len = METADATA_LEN + infos.iter().map(Vec::len).sum::<usize>();
        let mut e = Vec::new();
        e.extend_from_slice(&(len as u32).to_le_bytes());
        e.extend_from_slice(&[3, 0]);
        e.extend_from_slice(&(METADATA_LEN as u16).to_le_bytes());
        e.extend_from_slice(&mask.to_le_bytes());
        e.extend_from_slice(&(-1i32).to_le_bytes());
        e.extend_from_slice(&0i32.to_le_bytes());
        infos.iter().for_each(|i| e.extend_from_slice(i));
        e
    }

    fn info(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut i = vec![kind, 0];
        i.extend_from_slice(&((4 + body.len()) as u16).to_le_bytes());
        i.extend_from_slice(body);
        i
    }

    #[test]
    fn error_records_of_fs_error_events_are_read() {
        let error = info(libc::FAN_EVENT_INFO_TYPE_ERROR, &[5, 0, 0, 0, 2, 0, 0, 0]);
        let fid = info(1, &[0; 20]);
        let mut buf = event(libc::FAN_FS_ERROR, &[error.clone(), fid]);
        buf.extend(event(libc::FAN_FS_ERROR, std::slice::from_ref(&error)));
        // Another event type with an error-shaped record is not an error event.
        buf.extend(event(0x2, &[error]));
        assert_eq!(parse(&buf), vec![FsError { error: 5, count: 2 }; 2]);
    }

    #[test]
    fn malformed_events_end_the_parse_without_panicking() {
        let good = event(libc::FAN_FS_ERROR, &[info(5, &[5, 0, 0, 0, 1, 0, 0, 0])]);
        assert_eq!(parse(&good[..good.len() - 1]), vec![], "truncated");
        let mut short = good.clone();
        short[0] = 8;
        assert_eq!(parse(&short), vec![], "event shorter than its metadata");
        let mut bad_info = good.clone();
        bad_info[METADATA_LEN + 2] = 0xff;
        assert_eq!(parse(&bad_info), vec![], "info record past the event");
        assert_eq!(parse(&[]), vec![]);
    }
}
