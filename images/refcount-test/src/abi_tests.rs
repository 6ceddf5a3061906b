//! Unit tests of [`crate::abi`], kept out of abi.rs so that file stays a verbatim mirror of the driver's
//! ABI: the ioctl numbers against the `_IOC` formulas of include/uapi/asm-generic/ioctl.h (and libc's
//! implementation of them), and the structure layouts against the C structures of the driver's header
//! comment.

use std::mem::offset_of;

use crate::abi::*;

/// `_IOC(dir, type, nr, size)` spelled out with the asm-generic constants: nr bits 0-7, type 8-15,
/// size 16-29, dir 30-31; `_IOC_WRITE` 1, `_IOC_READ` 2.
const fn c_ioc(dir: u32, ty: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | (ty << 8) | nr
}
const C_IOW: u32 = 1;
const C_IOR: u32 = 2;

#[test]
fn ioctl_numbers_follow_the_ioc_formulas() {
    assert_eq!(DAX_RC_PIN, c_ioc(C_IOR | C_IOW, 0xDA, 1, 32));
    assert_eq!(DAX_RC_UNPIN, c_ioc(C_IOW, 0xDA, 2, 16));
    assert_eq!(DAX_RC_QUERY, c_ioc(C_IOR | C_IOW, 0xDA, 3, 72));
    assert_eq!(DAX_RC_WRITE_THROUGH_PIN, c_ioc(C_IOW, 0xDA, 4, 32));
    assert_eq!(DAX_RC_SYNC, c_ioc(C_IOR | C_IOW, 0xDA, 6, 16));
    assert_eq!(DAX_RC_EVENT, c_ioc(C_IOW, 0xDA, 7, 8));
    assert_eq!(DAX_RC_HOOK_STATS, c_ioc(C_IOR, 0xDA, 5, 56));
    // The same numbers written out, as `printf("%#x", _IOWR(0xDA, 1, struct dax_rc_pin))` etc. print them.
    assert_eq!(
        [DAX_RC_PIN, DAX_RC_UNPIN, DAX_RC_QUERY, DAX_RC_WRITE_THROUGH_PIN, DAX_RC_HOOK_STATS],
        [0xc020_da01, 0x4010_da02, 0xc048_da03, 0x4020_da04, 0x8038_da05]
    );
}

#[test]
fn ioctl_numbers_match_libc() {
    assert_eq!(DAX_RC_PIN, libc::_IOWR::<Pin>(MAGIC, 1) as u32);
    assert_eq!(DAX_RC_UNPIN, libc::_IOW::<Unpin>(MAGIC, 2) as u32);
    assert_eq!(DAX_RC_QUERY, libc::_IOWR::<Query>(MAGIC, 3) as u32);
    assert_eq!(DAX_RC_WRITE_THROUGH_PIN, libc::_IOW::<Write>(MAGIC, 4) as u32);
    assert_eq!(DAX_RC_HOOK_STATS, libc::_IOR::<HookStats>(MAGIC, 5) as u32);
}

#[test]
fn layouts_match_the_c_structures() {
    assert_eq!(
        [offset_of!(Pin, addr), offset_of!(Pin, len), offset_of!(Pin, flags), offset_of!(Pin, nr_pages)],
        [0, 8, 16, 20]
    );
    assert_eq!(offset_of!(Pin, handle), 24);
    assert_eq!(
        [offset_of!(Unpin, handle), offset_of!(Unpin, flags), offset_of!(Unpin, reserved)],
        [0, 8, 12]
    );
    assert_eq!(
        [
            offset_of!(Query, handle),
            offset_of!(Query, index),
            offset_of!(Query, pfn),
            offset_of!(Query, phys_addr),
            offset_of!(Query, pgmap_start),
            offset_of!(Query, pgmap_offset),
            offset_of!(Query, ref_count),
            offset_of!(Query, mapcount),
            offset_of!(Query, order),
            offset_of!(Query, handle_pins),
            offset_of!(Query, flags),
            offset_of!(Query, reserved),
        ],
        [0, 8, 16, 24, 32, 40, 48, 52, 56, 60, 64, 68]
    );
    assert_eq!(
        [
            offset_of!(Write, handle),
            offset_of!(Write, index),
            offset_of!(Write, offset),
            offset_of!(Write, len),
            offset_of!(Write, pattern),
            offset_of!(Write, reserved),
        ],
        [0, 8, 16, 20, 24, 25]
    );
    assert_eq!(
        [
            offset_of!(HookStats, wait_begin),
            offset_of!(HookStats, wait_end),
            offset_of!(HookStats, wait_interrupted),
            offset_of!(HookStats, folio_free),
            offset_of!(HookStats, last_wait_pfn),
            offset_of!(HookStats, last_free_pfn),
            offset_of!(HookStats, hooks_registered),
            offset_of!(HookStats, reserved),
        ],
        [0, 8, 16, 24, 32, 40, 48, 52]
    );
}

#[test]
fn flag_bits_match_the_driver_header() {
    assert_eq!((PIN_WRITE, PIN_LONGTERM, UNPIN_KEEP_PFNS), (1, 2, 1));
    assert_eq!([Q_ZONE_DEVICE, Q_FSDAX, Q_PGMAP, Q_RELEASED, Q_WRITE], [1, 2, 4, 8, 16]);
    assert_eq!(MAX_PIN_PAGES, 512);
}
