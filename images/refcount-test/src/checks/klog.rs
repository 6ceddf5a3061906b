//! The kernel log after all the other checks: no WARN, BUG, Oops, KASAN/UBSAN report or hung task.

use super::CheckError;
use crate::sys::errno;
use crate::tap::{check, diag, Res};

pub const KLOG: &[&str] = &["kernel log has no WARN/BUG/Oops/KASAN/hung-task line"];

pub fn klog(out: &mut Vec<Res>) -> Result<(), CheckError> {
    // SAFETY: a NUL-terminated string literal; open() only reads it.
    let fd =
        unsafe { libc::open(c"/dev/kmsg".as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(CheckError::Kmsg(std::io::Error::last_os_error()));
    }
    let pats = [
        "WARNING:",
        "BUG:",
        "Oops",
        "KASAN",
        "UBSAN",
        "blocked for more than",
        "general protection",
        "refcount_t:",
        "kernel BUG",
    ];
    let mut bad = Vec::new();
    let mut lines = 0;
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: buf is a live, writable buffer of buf.len() bytes; read() writes at most that many.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            if errno() == libc::EPIPE {
                continue; // overwritten records: keep reading
            }
            break; // EAGAIN: the end
        }
        if n == 0 {
            break;
        }
        lines += 1;
        let rec = String::from_utf8_lossy(&buf[..n as usize]);
        let msg = rec.split_once(';').map(|x| x.1).unwrap_or(&rec).lines().next().unwrap_or("").to_string();
        if pats.iter().any(|p| msg.contains(p)) {
            bad.push(msg);
        }
    }
    // SAFETY: fd was opened above, is used by nobody else and is closed exactly once, here.
    unsafe { libc::close(fd) };
    diag(&format!("read {lines} kernel log records"));
    out.push(check(bad.is_empty() && lines > 0, || format!("{} bad lines: {}", bad.len(), bad.join(" | "))));
    Ok(())
}
