//! daxvmm's capabilities. It needs none: /dev/kvm, hugetlb pages and the user's files are reached through
//! ordinary permissions. When started with some (as root), it gives them up in three steps:
//!
//! - at start ([`drop_at_start`]): no_new_privs, an empty bounding and ambient set, securebits that keep
//!   root from regaining capabilities through a program, and every capability but
//!   `CAP_DAC_OVERRIDE`/`CAP_DAC_READ_SEARCH`, which a root user needs to reach files in other users'
//!   directories (`sudo daxvmm --kernel ~me/linux/...`);
//! - each thread that acts on guest input (vCPU, stdin) drops all of them before it first does
//!   ([`drop_all_on_this_thread`], from `seccomp::Filters::install`);
//! - `daxvmm run` of one guest drops the last two on the main thread once the guest is running and every
//!   file is open. `daxvmm test`, `repro` and `run --repeat` keep them on the main thread, which sets up
//!   each new guest.
//!
//! Capabilities are per thread in Linux; each step acts on the calling thread, and threads started later
//! inherit its sets.

use thiserror::Error;

/// `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH`: file access for a root user.
const FILE_ACCESS: u64 = (1 << 1) | (1 << 2);
/// `CAP_SETPCAP`: needed to empty the bounding set and set securebits.
const CAP_SETPCAP: u64 = 1 << 8;
/// SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |
/// SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED (linux/securebits.h): an exec as root grants nothing, and these
/// cannot be undone.
const SECUREBITS: libc::c_ulong = 0b1110_0011;
/// The highest capability number any kernel has defined so far is 40; [`drop_bounding_set`] stops at
/// the first number the kernel does not know.
const CAP_MAX: libc::c_ulong = 63;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// A step failed; daxvmm does not run with more privileges than it says.
#[derive(Debug, Error)]
pub enum PrivilegeError {
    /// A prctl or capset the kernel refused.
    #[error("cannot drop privileges ({0}): {1}")]
    Drop(&'static str, std::io::Error),
}

/// A thread's capability sets, as bit masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps {
    /// Effective.
    pub effective: u64,
    /// Permitted.
    pub permitted: u64,
    /// Inheritable.
    pub inheritable: u64,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's capabilities.
pub fn current() -> Result<Caps, PrivilegeError> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with version 3 writes two CapData (the kernel's __user_cap_data_struct, three u32)
    // into `data`, which is that long; pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(PrivilegeError::Drop("capget", std::io::Error::last_os_error()));
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(Caps {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

fn set(caps: Caps) -> Result<(), PrivilegeError> {
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e, eh) = split(caps.effective);
    let (p, ph) = split(caps.permitted);
    let (i, ih) = split(caps.inheritable);
    let data = [
        CapData { effective: e, permitted: p, inheritable: i },
        CapData { effective: eh, permitted: ph, inheritable: ih },
    ];
    // SAFETY: capset with version 3 reads two CapData from `data`; pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(PrivilegeError::Drop("capset", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn prctl(what: &'static str, option: libc::c_int, arg: libc::c_ulong) -> Result<(), PrivilegeError> {
    // SAFETY: the prctl options used here take integer arguments only.
    let rc = unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc != 0 {
        return Err(PrivilegeError::Drop(what, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Empties the bounding set, up to the first capability number the kernel does not know.
fn drop_bounding_set() -> Result<(), PrivilegeError> {
    for cap in 0..=CAP_MAX {
        // SAFETY: PR_CAPBSET_READ takes an integer; it returns -1 (EINVAL) past the last capability.
        let present = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) };
        if present < 0 {
            break;
        }
        if present == 1 {
            prctl("emptying the bounding set", libc::PR_CAPBSET_DROP, cap)?;
        }
    }
    Ok(())
}

/// The first step: run at start, before any other thread exists. Returns what the thread keeps.
pub fn drop_at_start() -> Result<Caps, PrivilegeError> {
    prctl("no_new_privs", libc::PR_SET_NO_NEW_PRIVS, 1)?;
    let caps = current()?;
    if caps.effective & CAP_SETPCAP != 0 {
        drop_bounding_set()?;
        prctl("securebits", libc::PR_SET_SECUREBITS, SECUREBITS)?;
    }
    if caps.permitted != 0 || caps.inheritable != 0 {
        // Ambient capabilities need both sets; emptying inheritable below clears them too, but say so.
        prctl("ambient set", libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong)?;
        let keep = caps.permitted & FILE_ACCESS;
        set(Caps { effective: keep, permitted: keep, inheritable: 0 })?;
    }
    current()
}

/// Drops every capability of the calling thread (a no-op without any).
pub fn drop_all_on_this_thread() -> Result<(), PrivilegeError> {
    if current()? == Caps::default() {
        return Ok(());
    }
    set(Caps::default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::print_stderr)]
mod tests {
    use super::*;

    /// The `CapBnd` line of /proc/thread-self/status.
    fn bounding() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
        u64::from_str_radix(line.trim_start_matches("CapBnd:").trim(), 16).unwrap()
    }

    /// Runs `body` in a thread of its own: capabilities are per thread, and the test harness's other
    /// threads must keep theirs.
    fn in_thread(body: impl FnOnce() + Send + 'static) {
        std::thread::spawn(body).join().unwrap();
    }

    #[test]
    fn the_sets_read_back_as_the_kernel_reports_them() {
        in_thread(|| {
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let field = |name: &str| {
                let line = status.lines().find(|l| l.starts_with(name)).unwrap();
                u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
            };
            let caps = current().unwrap();
            assert_eq!(caps.effective, field("CapEff:"));
            assert_eq!(caps.permitted, field("CapPrm:"));
            assert_eq!(caps.inheritable, field("CapInh:"));
        });
    }

    /// As root (CI): a file only root's DAC override can open is reachable after the first step and not
    /// after a thread drops everything; the bounding set is empty. Without capabilities: nothing to drop,
    /// and the steps succeed.
    #[test]
    fn the_steps_keep_file_access_then_drop_it() {
        let dir = std::env::temp_dir().join(format!("daxvmm-privileges-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let locked = dir.join("mode-000");
        std::fs::write(&locked, b"x").unwrap();
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        let path = locked.clone();
        in_thread(move || {
            let before = current().unwrap();
            let kept = drop_at_start().unwrap();
            assert_eq!(kept.effective, before.permitted & FILE_ACCESS, "{kept:?}");
            assert_eq!(kept.inheritable, 0);
            let opens = |p: &std::path::Path| std::fs::File::open(p).is_ok();
            if before.effective & CAP_SETPCAP == 0 {
                eprintln!(
                    "SKIPPED part of the_steps_keep_file_access_then_drop_it: not root, nothing to drop"
                );
                drop_all_on_this_thread().unwrap();
                assert!(!opens(&path), "a mode 000 file opened without capabilities");
                return;
            }
            assert_eq!(bounding(), 0, "the bounding set is not empty");
            assert!(opens(&path), "the first step took file access away");
            drop_all_on_this_thread().unwrap();
            assert_eq!(current().unwrap(), Caps::default());
            let err = std::fs::File::open(&path).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
