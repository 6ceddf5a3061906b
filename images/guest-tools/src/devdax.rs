//! The device-dax probe of `daxvmm-dax-check devdax`: whether a character device such as `/dev/dax0.0`
//! maps with its 2 MiB alignment. Touching every 4 KiB page of a 2 MiB mapping costs one page fault when
//! the kernel maps it with one PMD and 512 when it falls back to page table entries; the fault count comes
//! from the process's own minor-fault counter. A mapping shorter than the alignment must be refused.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use crate::dax::{map, DaxError};

/// The alignment a device-dax instance made by `ndctl create-namespace -m devdax` has by default.
pub const DEVDAX_ALIGN: usize = 2 << 20;
const PAGE: usize = 4096;

/// What [`probe`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevdaxProbe {
    /// Page faults taken while writing every 4 KiB page of one aligned mapping.
    pub faults: u64,
    /// Whether a mapping of one 4 KiB page was refused with EINVAL.
    pub small_map_refused: bool,
}

fn minor_faults() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the rusage it is given; zeroed is a valid rusage either way.
    unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init().ru_minflt as u64
    }
}

/// Maps the first [`DEVDAX_ALIGN`] bytes of `path` shared, writes `marker` at its start and one byte
/// into every other 4 KiB page, counting the faults, then tries a one-page mapping. There is no msync:
/// a character device has no fsync, and device-dax stores reach the media as plain memory writes.
pub fn probe(path: &str, marker: &[u8]) -> Result<DevdaxProbe, DaxError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| DaxError::Open { path: path.to_string(), source })?;
    let m = map(f.as_raw_fd(), DEVDAX_ALIGN, libc::MAP_SHARED)?;
    let marker = &marker[..marker.len().min(PAGE)];
    let before = minor_faults();
    for (i, b) in marker.iter().enumerate() {
        // SAFETY: i < PAGE <= DEVDAX_ALIGN, inside the mapping.
        unsafe { m.ptr.add(i).write_volatile(*b) };
    }
    for off in (PAGE..DEVDAX_ALIGN).step_by(PAGE) {
        // SAFETY: off < DEVDAX_ALIGN, inside the mapping.
        unsafe { m.ptr.add(off).write_volatile(0x5a) };
    }
    let faults = minor_faults() - before;
    let small_map_refused = match map(f.as_raw_fd(), PAGE, libc::MAP_SHARED) {
        Ok(_) => false,
        Err(DaxError::Map { source }) if source.raw_os_error() == Some(libc::EINVAL) => true,
        Err(e) => return Err(e),
    };
    Ok(DevdaxProbe { faults, small_map_refused })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A regular file accepts a one-page mapping, so the guest test's "refused" cannot come from a file
    /// that is not device-dax. (Its fault count proves nothing: a filesystem with large folios maps a
    /// whole 2 MiB folio in one fault too.)
    #[test]
    fn a_regular_file_maps_small() {
        let path = std::env::temp_dir().join(format!("daxvmm-devdax-probe-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; DEVDAX_ALIGN]).unwrap();
        let p = probe(path.to_str().unwrap(), b"marker").unwrap();
        let back = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&back[..6], b"marker");
        assert!(!p.small_map_refused, "{p:?}");
        assert!(p.faults >= 1, "{p:?}");
    }

    #[test]
    fn a_missing_device_is_an_open_error() {
        let e = probe("/nonexistent/dax0.0", b"m").unwrap_err();
        assert!(e.to_string().starts_with("open /nonexistent/dax0.0:"), "{e}");
    }
}
