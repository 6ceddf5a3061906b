//! The check families, one module each, and the helpers they share. Each family is a const array of
//! check names (printed in this order, numbered consecutively across families by `main`) and a scenario
//! function that pushes one result per name.
//!
//! The invariants are those of docs/dax-refcount.md (the fs-dax refcount series, Linux 6.15+, here
//! 7.2): a pinned fs-dax page holds the pin bias (1024) on a small folio or one reference per pinned page
//! on a large one; each mapping holds one reference and one mapcount; an idle folio has refcount 0;
//! truncate waits for pins (interruptibly); FOLL_LONGTERM pins of fs-dax pages are refused.

pub mod fuzz;
pub mod input;
pub mod klog;
pub mod longterm;
pub mod pmd;
pub mod small;
pub mod truncate;

use std::ffi::NulError;
use std::io;

use crate::abi::{Pin, Query};
use crate::sys::{ename, Dev, SysError};

/// GUP_PIN_COUNTING_BIAS (include/linux/mm.h): what one FOLL_PIN adds to a small folio's refcount.
pub const PIN_BIAS: i32 = 1024;

pub fn q_str(q: &Query) -> String {
    format!(
        "pfn {:#x} order {} ref_count {} mapcount {} handle_pins {} flags {:#x} pgmap_offset {:#x}",
        q.pfn, q.order, q.ref_count, q.mapcount, q.handle_pins, q.flags, q.pgmap_offset
    )
}

/// Why a check family stopped before its last check (its unreached checks fail with this message), or
/// why one check failed on a call rather than on its condition. The messages are TAP text: what failed and
/// the errno's name; the variants' docs say what to do.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Opening the device, mapping memory or making a test file failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// A pin the check needs was refused: EFAULT or EOPNOTSUPP on a DAX file means DIR is not mounted
    /// with `-o dax` (or the NVDIMM is not in fsdax mode); EINVAL means the driver's ABI differs from
    /// src/abi.rs (rebuild the guest kernel and this program from the same tree).
    #[error("PIN {addr:#x}+{len:#x} flags {flags}: {}", ename(*.errno))]
    Pin {
        /// Start of the range.
        addr: usize,
        /// Bytes.
        len: usize,
        /// PIN flags.
        flags: u32,
        /// The ioctl's errno.
        errno: i32,
    },
    /// A QUERY of a handle the check made failed: a driver bug (ENOENT: the handle vanished) or an ABI
    /// mismatch (rebuild the guest kernel and this program from the same tree).
    #[error("QUERY handle {handle} index {index}: {}", ename(*.errno))]
    Query {
        /// The handle.
        handle: u64,
        /// The page index.
        index: u64,
        /// The ioctl's errno.
        errno: i32,
    },
    /// Another driver ioctl failed (`what` names it); ENOTTY means the driver lacks the command (rebuild
    /// the guest kernel with the current patches).
    #[error("{what}: {}", ename(*.errno))]
    Ioctl {
        /// The ioctl and what it was for, as the check's messages name it.
        what: &'static str,
        /// The ioctl's errno.
        errno: i32,
    },
    /// /dev/kmsg could not be read: the guest must run this program as root with /dev mounted.
    #[error("open /dev/kmsg: {0}")]
    Kmsg(io::Error),
    /// A test file's path has a NUL byte: give a DIR without one.
    #[error("unlink: {0}")]
    UnlinkPath(NulError),
}

/// Names the ioctl of an errno result: `d.stats().ioctl("HOOK_STATS")?`.
pub trait IoctlResult<T> {
    /// The errno as [`CheckError::Ioctl`] named `what`.
    fn ioctl(self, what: &'static str) -> Result<T, CheckError>;
}

impl<T> IoctlResult<T> for Result<T, i32> {
    fn ioctl(self, what: &'static str) -> Result<T, CheckError> {
        self.map_err(|errno| CheckError::Ioctl { what, errno })
    }
}

pub fn query(d: &Dev, handle: u64, index: u64) -> Result<Query, CheckError> {
    d.query(handle, index).map_err(|errno| CheckError::Query { handle, index, errno })
}

pub fn pin(d: &Dev, addr: usize, len: usize, flags: u32) -> Result<Pin, CheckError> {
    d.pin(addr, len, flags).map_err(|errno| CheckError::Pin { addr, len, flags, errno })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages are TAP text: they keep the wording of the String errors they replaced.
    #[test]
    fn messages() {
        let pin = CheckError::Pin { addr: 0x7f00_0000_1000, len: 0x1000, flags: 1, errno: libc::EFAULT };
        assert_eq!(pin.to_string(), "PIN 0x7f0000001000+0x1000 flags 1: EFAULT");
        let query = CheckError::Query { handle: 3, index: 0, errno: libc::ENOENT };
        assert_eq!(query.to_string(), "QUERY handle 3 index 0: ENOENT");
        assert_eq!(
            Err::<(), i32>(libc::ENOTTY).ioctl("UNPIN keep").expect_err("an errno").to_string(),
            "UNPIN keep: ENOTTY"
        );
        let sys = SysError::Mmap { source: io::Error::from_raw_os_error(libc::ENOMEM) };
        let text = sys.to_string();
        assert_eq!(CheckError::from(sys).to_string(), text);
    }
}
