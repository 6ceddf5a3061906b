//! The ioctl ABI of /dev/dax_refcount, mirroring `drivers/dax/refcount/dax_refcount.rs` (the driver's
//! header comment is the reference). All structures are `#[repr(C)]` without implicit padding; every
//! `reserved` field must be zero on input.

/// ioctl magic ("type") of every dax_refcount command.
pub const MAGIC: u32 = 0xDA;

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (MAGIC << 8) | nr
}

/// `_IOWR(0xDA, 1, struct dax_rc_pin)`
pub const DAX_RC_PIN: u32 = ioc(IOC_READ | IOC_WRITE, 1, std::mem::size_of::<Pin>());
/// `_IOW(0xDA, 2, struct dax_rc_unpin)`
pub const DAX_RC_UNPIN: u32 = ioc(IOC_WRITE, 2, std::mem::size_of::<Unpin>());
/// `_IOWR(0xDA, 3, struct dax_rc_query)`
pub const DAX_RC_QUERY: u32 = ioc(IOC_READ | IOC_WRITE, 3, std::mem::size_of::<Query>());
/// `_IOW(0xDA, 4, struct dax_rc_write)`
pub const DAX_RC_WRITE_THROUGH_PIN: u32 = ioc(IOC_WRITE, 4, std::mem::size_of::<Write>());
/// `_IOR(0xDA, 5, struct dax_rc_hook_stats)`
pub const DAX_RC_HOOK_STATS: u32 = ioc(IOC_READ, 5, std::mem::size_of::<HookStats>());

/// `_IOWR(0xDA, 6, struct dax_rc_sync)`
pub const DAX_RC_SYNC: u32 = ioc(IOC_READ | IOC_WRITE, 6, std::mem::size_of::<Sync>());
/// `_IOW(0xDA, 7, struct dax_rc_event)`
pub const DAX_RC_EVENT: u32 = ioc(IOC_WRITE, 7, std::mem::size_of::<Event>());
/// `_IOW(0xDA, 8, struct dax_rc_tag)`
pub const DAX_RC_TAG: u32 = ioc(IOC_WRITE, 8, std::mem::size_of::<Tag>());

/// `Pin::flags`: pin for writing (FOLL_WRITE).
pub const PIN_WRITE: u32 = 1 << 0;
/// `Pin::flags`: long-term pin (FOLL_LONGTERM); refused with EOPNOTSUPP on fs-dax pages.
pub const PIN_LONGTERM: u32 = 1 << 1;

/// `Unpin::flags`: release the pins but keep the handle's pfns, so QUERY can still read the (now
/// unreferenced) ZONE_DEVICE folios; a second UNPIN without the flag forgets the handle.
pub const UNPIN_KEEP_PFNS: u32 = 1 << 0;

/// `Query::flags`: the page is a ZONE_DEVICE page.
pub const Q_ZONE_DEVICE: u32 = 1 << 0;
/// `Query::flags`: the folio is an fs-dax folio (MEMORY_DEVICE_FS_DAX).
pub const Q_FSDAX: u32 = 1 << 1;
/// `Query::flags`: `pgmap_start`/`pgmap_offset` are valid (a dev_pagemap was found and held).
pub const Q_PGMAP: u32 = 1 << 2;
/// `Query::flags`: the handle was unpinned with UNPIN_KEEP_PFNS; the values were read by pfn.
pub const Q_RELEASED: u32 = 1 << 3;
/// `Query::flags`: the handle was pinned with PIN_WRITE.
pub const Q_WRITE: u32 = 1 << 4;

/// Maximum pages per PIN (a 2 MiB range).
pub const MAX_PIN_PAGES: u64 = 512;

/// PIN: pins `len` bytes at `addr` (page aligned, 1..=512 pages) with pin_user_pages_fast().
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Pin {
    /// in: user virtual address, page aligned
    pub addr: u64,
    /// in: length in bytes, a non-zero multiple of the page size
    pub len: u64,
    /// in: PIN_* flags
    pub flags: u32,
    /// out: number of pages pinned
    pub nr_pages: u32,
    /// out: handle, unique within the open file, never 0
    pub handle: u64,
}

/// UNPIN: releases a handle's pins.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Unpin {
    pub handle: u64,
    /// UNPIN_* flags
    pub flags: u32,
    pub reserved: u32,
}

/// QUERY: the state of page `index` of a handle and of its folio.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Query {
    /// in
    pub handle: u64,
    /// in: page index within the handle, < nr_pages
    pub index: u64,
    /// out: page frame number
    pub pfn: u64,
    /// out: physical address of the page (pfn << PAGE_SHIFT), the guest-physical address in a VM
    pub phys_addr: u64,
    /// out: start of the dev_pagemap range the page belongs to (valid with Q_PGMAP)
    pub pgmap_start: u64,
    /// out: phys_addr - pgmap_start (valid with Q_PGMAP)
    pub pgmap_offset: u64,
    /// out: folio_ref_count()
    pub ref_count: i32,
    /// out: folio_mapcount()
    pub mapcount: i32,
    /// out: folio_order()
    pub order: u32,
    /// out: pins this handle holds on this page's folio (0 once released)
    pub handle_pins: u32,
    /// out: Q_* flags
    pub flags: u32,
    pub reserved: u32,
}

/// WRITE_THROUGH_PIN: memset(kmap_local(page) + offset, pattern, len) of a page pinned with PIN_WRITE.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Write {
    pub handle: u64,
    pub index: u64,
    /// offset + len <= page size, len > 0
    pub offset: u32,
    pub len: u32,
    pub pattern: u8,
    pub reserved: [u8; 7],
}

/// HOOK_STATS: global counters of the fs/dax refcount hook events since boot.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct HookStats {
    /// dax_break_layout() started waiting for a busy page
    pub wait_begin: u64,
    /// ... and finished waiting (any result)
    pub wait_end: u64,
    /// ... of which the wait was interrupted by a signal (non-zero result)
    pub wait_interrupted: u64,
    /// an fs-dax folio's last reference was dropped
    pub folio_free: u64,
    /// pfn of the page of the last wait begin/end event (u64::MAX: none yet)
    pub last_wait_pfn: u64,
    /// pfn of the last freed folio (u64::MAX: none yet)
    pub last_free_pfn: u64,
    /// 1 when the driver's hooks are registered with fs/dax
    pub hooks_registered: u32,
    pub reserved: u32,
}

/// SYNC: arrive at sync point `point` of scenario thread `thread` of the fault-injection device; returns
/// when the host lets the thread go (the driver re-reads while the host answers "retry").
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Sync {
    /// in: thread tag, 0..7
    pub thread: u32,
    /// in: sync point, 0..511
    pub point: u32,
    /// out: 0 released, 1 timed out, 2 not armed, 3 unscheduled
    pub outcome: u64,
}

/// EVENT: one encoded event for the fault-injection device (daxvmm's docs/fault-injection.md).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Event {
    /// in: code (bits 63:56, non-zero), thread tag (55:48), argument (47:0)
    pub value: u64,
}

/// TAG: the calling task becomes scenario thread `thread` for the kernel hold points in `points` (bit N:
/// `enum dax_refcount_point` N), each holding once; `points == 0` untags it.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Tag {
    /// in: thread tag, 0..7
    pub thread: u32,
    /// in: hold point mask
    pub points: u32,
}

const _: () = assert!(std::mem::size_of::<Tag>() == 8);
const _: () = assert!(std::mem::size_of::<Sync>() == 16);
const _: () = assert!(std::mem::size_of::<Event>() == 8);
const _: () = assert!(std::mem::size_of::<Pin>() == 32);
const _: () = assert!(std::mem::size_of::<Unpin>() == 16);
const _: () = assert!(std::mem::size_of::<Query>() == 72);
const _: () = assert!(std::mem::size_of::<Write>() == 32);
const _: () = assert!(std::mem::size_of::<HookStats>() == 56);
