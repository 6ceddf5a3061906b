//! The fault-injection device's register protocol (docs/fault-injection.md is the prose version): the
//! register map, the decoding of one MMIO access into a [`Request`], the 64-bit event encoding and the
//! values a sync read returns. Pure functions and plain data; nothing here holds state.
//!
//! Every valid access is one naturally aligned 8-byte access, so that a guest request is a single KVM exit
//! and two vCPUs can never interleave halves of each other's requests.

use thiserror::Error;

use crate::layout::FAULT_INJECTOR_LEN;

/// Size in bytes of every register and of every valid access.
pub const REG_SIZE: usize = 8;
/// Length of the MMIO window the protocol decodes.
pub const WINDOW_LEN: u64 = FAULT_INJECTOR_LEN;
/// Value of [`Register::Magic`]: "DAXFAULT" in little-endian byte order.
pub const MAGIC: u64 = u64::from_le_bytes(*b"DAXFAULT");
/// Protocol version in [`Register::Version`]; bumped on any incompatible change.
pub const VERSION: u64 = 1;
/// Offset of the write-only event register.
pub const EVENT_OFFSET: u64 = 0x100;
/// Offset of the first sync point; the sync area runs to the end of the window.
pub const SYNC_BASE: u64 = 0x8000;
/// A sync read's offset is `SYNC_BASE + (thread << SYNC_THREAD_SHIFT) + (point << SYNC_POINT_SHIFT)`.
pub const SYNC_THREAD_SHIFT: u32 = 12;
/// See [`SYNC_THREAD_SHIFT`].
pub const SYNC_POINT_SHIFT: u32 = 3;
/// Scenario threads the sync area has room for (tags 0..MAX_THREADS).
pub const MAX_THREADS: u8 = ((WINDOW_LEN - SYNC_BASE) >> SYNC_THREAD_SHIFT) as u8;
/// Sync points per thread (ids 0..MAX_POINTS).
pub const MAX_POINTS: u16 = 1 << (SYNC_THREAD_SHIFT - SYNC_POINT_SHIFT);
/// The thread tag of an event whose sender does not know its scenario thread (a hook in kernel context).
pub const THREAD_ANY: u8 = 0xff;

/// Bits of an event's argument.
pub const ARG_BITS: u32 = 48;
/// Bits of the pfn in a pfn-carrying event's argument (bits 35:0; pfns below 2^36 = physical addresses
/// below 256 TiB).
pub const PFN_BITS: u32 = 36;
/// Bits of the detail field above the pfn (bits 47:36; an errno fits: MAX_ERRNO is 4095).
pub const DETAIL_BITS: u32 = ARG_BITS - PFN_BITS;

const _: () = assert!(EVENT_OFFSET < SYNC_BASE && SYNC_BASE < WINDOW_LEN);
const _: () = assert!(MAX_THREADS == 8 && MAX_POINTS == 512);
const _: () = assert!(KERNEL_POINT_BASE < MAX_POINTS);

/// The read-only identity and status registers at the start of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// 0x00: [`MAGIC`].
    Magic,
    /// 0x08: [`VERSION`].
    Version,
    /// 0x10: [`WINDOW_LEN`].
    WindowLen,
    /// 0x18: [`SYNC_BASE`].
    SyncBase,
    /// 0x20: [`MAX_THREADS`].
    SyncThreads,
    /// 0x28: [`MAX_POINTS`].
    SyncPoints,
    /// 0x30: bit 0 set while a schedule is armed (a hint: a guest may skip sync reads while it is clear).
    Status,
}

impl Register {
    /// Every register, in offset order.
    pub const ALL: [Register; 7] = [
        Self::Magic,
        Self::Version,
        Self::WindowLen,
        Self::SyncBase,
        Self::SyncThreads,
        Self::SyncPoints,
        Self::Status,
    ];

    /// The register's offset in the window.
    pub fn offset(self) -> u64 {
        8 * Self::ALL.iter().position(|&r| r == self).unwrap_or(0) as u64
    }

    /// The register at `offset`, if any.
    pub fn at(offset: u64) -> Option<Self> {
        if !offset.is_multiple_of(8) {
            return None;
        }
        Self::ALL.get(usize::try_from(offset / 8).ok()?).copied()
    }

    /// The register's constant value; `None` for [`Register::Status`], which the injector answers.
    pub fn constant(self) -> Option<u64> {
        Some(match self {
            Self::Magic => MAGIC,
            Self::Version => VERSION,
            Self::WindowLen => WINDOW_LEN,
            Self::SyncBase => SYNC_BASE,
            Self::SyncThreads => u64::from(MAX_THREADS),
            Self::SyncPoints => u64::from(MAX_POINTS),
            Self::Status => return None,
        })
    }
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The guest reads.
    Read,
    /// The guest writes.
    Write,
}

/// What one MMIO access asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// A write of one encoded [`Event`] (the written value still has to decode).
    Event,
    /// A read that arrives at sync point `point` of scenario thread `thread` and returns a [`SyncOutcome`].
    Sync {
        /// Scenario thread tag, below [`MAX_THREADS`].
        thread: u8,
        /// Sync point id, below [`MAX_POINTS`].
        point: u16,
    },
    /// A read of an identity or status register.
    Identity(Register),
    /// Not a valid request: ignored on write, all-ones on read, counted.
    Invalid(ProtocolError),
}

/// A malformed guest access or event. Never fatal: counted by the injector and otherwise ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// The access does not fit inside the window.
    #[error("access of {size} bytes at {offset:#x} is outside the window")]
    OutOfWindow {
        /// Offset of the access.
        offset: u64,
        /// Its size.
        size: usize,
    },
    /// Every access must be 8 bytes.
    #[error("{size}-byte access at {offset:#x}: registers are 8 bytes")]
    WrongSize {
        /// Offset of the access.
        offset: u64,
        /// Its size.
        size: usize,
    },
    /// Every access must be 8-byte aligned.
    #[error("unaligned access at {offset:#x}")]
    Unaligned {
        /// Offset of the access.
        offset: u64,
    },
    /// No register at this offset.
    #[error("no register at {offset:#x}")]
    Unmapped {
        /// Offset of the access.
        offset: u64,
    },
    /// A write to an identity register or a sync point.
    #[error("write to read-only offset {offset:#x}")]
    ReadOnly {
        /// Offset of the access.
        offset: u64,
    },
    /// A read of the event register.
    #[error("read of write-only offset {offset:#x}")]
    WriteOnly {
        /// Offset of the access.
        offset: u64,
    },
    /// An event with a code outside [`EventCode`].
    #[error("unknown event code {code:#04x}")]
    UnknownEvent {
        /// The code.
        code: u8,
    },
    /// An event with a thread tag that is neither a scenario thread nor [`THREAD_ANY`].
    #[error("event with invalid thread tag {thread:#04x}")]
    BadThread {
        /// The tag.
        thread: u8,
    },
    /// A sync read that reached the bus adapter instead of the VMM's exit handler, which could not hold
    /// the vCPU without blocking every other vCPU on the bus lock; it read as all-ones.
    #[error("sync read at {offset:#x} came through the device bus, not the exit handler")]
    SyncViaBus {
        /// Offset of the access.
        offset: u64,
    },
}

impl ProtocolError {
    /// A stable name per kind, for counters and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::OutOfWindow { .. } => "out-of-window",
            Self::WrongSize { .. } => "wrong-size",
            Self::Unaligned { .. } => "unaligned",
            Self::Unmapped { .. } => "unmapped",
            Self::ReadOnly { .. } => "read-only",
            Self::WriteOnly { .. } => "write-only",
            Self::UnknownEvent { .. } => "unknown-event",
            Self::BadThread { .. } => "bad-thread",
            Self::SyncViaBus { .. } => "sync-via-bus",
        }
    }
}

/// Decodes one guest access of `size` bytes at window offset `offset`.
pub fn decode(offset: u64, size: usize, access: Access) -> Request {
    let fits = offset.checked_add(size as u64).is_some_and(|end| end <= WINDOW_LEN);
    let err = if !fits {
        ProtocolError::OutOfWindow { offset, size }
    } else if size != REG_SIZE {
        ProtocolError::WrongSize { offset, size }
    } else if !offset.is_multiple_of(REG_SIZE as u64) {
        ProtocolError::Unaligned { offset }
    } else if offset >= SYNC_BASE {
        let rel = offset - SYNC_BASE;
        return match access {
            Access::Read => Request::Sync {
                thread: (rel >> SYNC_THREAD_SHIFT) as u8,
                point: ((rel & ((1 << SYNC_THREAD_SHIFT) - 1)) >> SYNC_POINT_SHIFT) as u16,
            },
            Access::Write => Request::Invalid(ProtocolError::ReadOnly { offset }),
        };
    } else if offset == EVENT_OFFSET {
        return match access {
            Access::Write => Request::Event,
            Access::Read => Request::Invalid(ProtocolError::WriteOnly { offset }),
        };
    } else if let Some(reg) = Register::at(offset) {
        return match access {
            Access::Read => Request::Identity(reg),
            Access::Write => Request::Invalid(ProtocolError::ReadOnly { offset }),
        };
    } else {
        ProtocolError::Unmapped { offset }
    };
    Request::Invalid(err)
}

/// The window offset of sync point `point` of thread `thread`, if both are in range.
pub fn sync_offset(thread: u8, point: u16) -> Option<u64> {
    (thread < MAX_THREADS && point < MAX_POINTS).then(|| {
        SYNC_BASE + (u64::from(thread) << SYNC_THREAD_SHIFT) + (u64::from(point) << SYNC_POINT_SHIFT)
    })
}

/// How a sync read ended: the value the guest reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncOutcome {
    /// 0: the schedule reached this arrival and released it.
    Released,
    /// 1: the hold bound expired first (a deviation, reported).
    TimedOut,
    /// 2: no schedule armed (or it was disarmed while held): proceed.
    NotArmed,
    /// 3: the armed schedule has no pending step for this arrival (a deviation, reported): proceed.
    Unscheduled,
    /// 4: still held after one hold slice: take pending interrupts, then read the same address again.
    Retry,
}

impl SyncOutcome {
    /// The value the guest reads.
    pub fn code(self) -> u64 {
        match self {
            Self::Released => 0,
            Self::TimedOut => 1,
            Self::NotArmed => 2,
            Self::Unscheduled => 3,
            Self::Retry => 4,
        }
    }
}

/// The outcome as the fault log and repro files name it.
impl std::fmt::Display for SyncOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Released => "released",
            Self::TimedOut => "timed out",
            Self::NotArmed => "no schedule armed",
            Self::Unscheduled => "not in the schedule",
            Self::Retry => "still held, read again",
        })
    }
}

macro_rules! event_codes {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $text:literal;)*) => {
        /// What an event announces (bits 63:56 of the event register).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventCode {
            $($(#[$doc])* $name,)*
        }

        impl EventCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [EventCode] = &[$(Self::$name,)*];

            /// The code's wire value.
            pub fn code(self) -> u8 {
                match self { $(Self::$name => $code,)* }
            }

            /// The code with wire value `code`.
            pub fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some(Self::$name),)* _ => None }
            }

            /// A short name for logs and reports.
            pub fn name(self) -> &'static str {
                match self { $(Self::$name => $text,)* }
            }
        }
    };
}

event_codes! {
    /// A page was pinned; arg: pfn.
    PinTaken = 0x01, "pin";
    /// A pin was released; arg: pfn.
    Unpin = 0x02, "unpin";
    /// ftruncate() is about to be called; arg: pfn of the page the scenario is about, or 0.
    TruncateStart = 0x03, "truncate-start";
    /// ftruncate() returned; arg: detail = errno (0 on success), pfn as for the start.
    TruncateReturned = 0x04, "truncate-returned";
    /// fallocate(PUNCH_HOLE) is about to be called; arg as for truncate.
    PunchHoleStart = 0x05, "punch-hole-start";
    /// fallocate(PUNCH_HOLE) returned; arg as for truncate.
    PunchHoleReturned = 0x06, "punch-hole-returned";
    /// dax_break_layout() started waiting for a busy page; arg: pfn.
    WaitBegin = 0x07, "wait-begin";
    /// That wait ended; arg: detail = -ret (0 idle, 512 ERESTARTSYS), pfn.
    WaitEnd = 0x08, "wait-end";
    /// The last reference to an fs-dax folio was dropped; arg: pfn.
    FolioFree = 0x09, "folio-free";
    /// The pinner unmapped its mapping of the page; arg: pfn.
    Munmap = 0x0a, "munmap";
    /// A pattern was written through a pin; arg: detail = pattern byte, pfn.
    WriteThroughPin = 0x0b, "write-through-pin";
    /// The guest starts one run of a scenario; arg: run number.
    RunBegin = 0x0c, "run-begin";
    /// The guest finished that run; arg: run number.
    RunEnd = 0x0d, "run-end";
    /// A free-form marker; arg: anything.
    Marker = 0x0e, "marker";
    /// A tagged thread reached a kernel hold point; arg: detail = [`KernelPoint::id`], pfn.
    KernelPoint = 0x0f, "kernel-point";
}

/// Sync point ids from here on are kernel hold points: `KERNEL_POINT_BASE + KernelPoint::id()`.
pub const KERNEL_POINT_BASE: u16 = 256;

macro_rules! kernel_points {
    ($($(#[$doc:meta])* $name:ident = $id:literal, $text:literal, $atomic:literal;)*) => {
        /// A named place in the guest kernel where the fs/dax hooks can hold a tagged scenario thread
        /// (guest patch "dax: hold tagged threads at kernel points"). The hook writes a
        /// [`EventCode::KernelPoint`] event (detail = id, pfn) and then reads sync point
        /// `KERNEL_POINT_BASE + id` of the thread, which a schedule names `THREAD.kNAME`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum KernelPoint {
            $($(#[$doc])* $name,)*
        }

        impl KernelPoint {
            /// Every point, in id order.
            pub const ALL: &'static [KernelPoint] = &[$(Self::$name,)*];

            /// The id the guest kernel uses (bit `id` of the tag mask, detail of the event).
            pub fn id(self) -> u16 {
                match self { $(Self::$name => $id,)* }
            }

            /// The point with this id.
            pub fn from_id(id: u16) -> Option<Self> {
                match id { $($id => Some(Self::$name),)* _ => None }
            }

            /// Its name in schedules and reports.
            pub fn name(self) -> &'static str {
                match self { $(Self::$name => $text,)* }
            }

            /// The point with this name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($text => Some(Self::$name),)* _ => None }
            }

            /// Whether the kernel may be in atomic context there (spinlock held, interrupts off): a hold
            /// there stops the whole vCPU, never sleeps, and is cut short by the hold bound.
            pub fn atomic(self) -> bool {
                match self { $(Self::$name => $atomic,)* }
            }

            /// Whether a task released from this point goes to sleep at once (it waits for another
            /// thread to wake it), so a forced schedule goes on without waiting for it.
            pub fn blocks(self) -> bool {
                matches!(self, Self::Sleep | Self::FinalSleep)
            }

            /// The sync point id a hold at this point reads.
            pub fn sync_id(self) -> u16 {
                KERNEL_POINT_BASE + self.id()
            }

            /// The point a sync point id stands for, if it is a kernel point.
            pub fn from_sync_id(point: u16) -> Option<Self> {
                Self::from_id(point.checked_sub(KERNEL_POINT_BASE)?)
            }
        }
    };
}

kernel_points! {
    /// dax_break_layout() found a busy page (elevated refcount) and is about to wait for it.
    Busy = 0, "busy", false;
    /// On the page's wait queue in TASK_INTERRUPTIBLE, about to sleep: a wake-up now is not lost.
    Sleep = 1, "sleep", false;
    /// The wait returned (idle, or a signal); the busy scan runs again next.
    Woken = 2, "woken", false;
    /// No busy page is left: break-layout is done and truncate or hole punch proceeds.
    Broken = 3, "broken", false;
    /// dax_break_layout_final() (eviction, unmount) found a busy page.
    FinalBusy = 4, "final-busy", false;
    /// The final break-layout is on the wait queue, about to sleep (uninterruptibly).
    FinalSleep = 5, "final-sleep", false;
    /// The final break-layout's wait returned.
    FinalWoken = 6, "final-woken", false;
    /// The final break-layout found no busy page: the entries are deleted next.
    FinalBroken = 7, "final-broken", false;
    /// A DAX fault is about to map a page with a PTE (the folio has its fault reference).
    PteInsert = 8, "pte-insert", false;
    /// A DAX fault is about to map a folio with a PMD.
    PmdInsert = 9, "pmd-insert", false;
    /// dax_disassociate_entry(): the file lets go of a folio (under the mapping's xarray lock).
    Disassociate = 10, "disassociate", true;
    /// free_zone_device_folio(): the last reference to an fs-dax folio is gone, waiters not woken yet.
    Free = 11, "free", true;
    /// GUP took a reference on an fs-dax folio (pin or get; page-table lock held or interrupts off).
    Gup = 12, "gup", true;
    /// A FOLL_PIN pin on an fs-dax folio is about to be dropped: the pin is still held (gup_put_folio();
    /// an I/O's completion may hold locks).
    Unpin = 13, "unpin", true;
}

/// One decoded event: bits 63:56 code, 55:48 thread tag, 47:0 argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// What happened.
    pub code: EventCode,
    /// The scenario thread it happened on, or [`THREAD_ANY`].
    pub thread: u8,
    /// The argument, below 2^48.
    pub arg: u64,
}

impl Event {
    /// An event with a raw argument; `None` if `arg` or `thread` is out of range.
    pub fn new(code: EventCode, thread: u8, arg: u64) -> Option<Self> {
        (arg >> ARG_BITS == 0 && valid_thread(thread)).then_some(Self { code, thread, arg })
    }

    /// An event whose argument is `detail << 36 | pfn`; `None` if a field is out of range.
    pub fn with_pfn(code: EventCode, thread: u8, pfn: u64, detail: u16) -> Option<Self> {
        if pfn >> PFN_BITS != 0 || u32::from(detail) >> DETAIL_BITS != 0 {
            return None;
        }
        Self::new(code, thread, u64::from(detail) << PFN_BITS | pfn)
    }

    /// The pfn field (bits 35:0 of the argument).
    pub fn pfn(&self) -> u64 {
        self.arg & ((1 << PFN_BITS) - 1)
    }

    /// The detail field (bits 47:36 of the argument).
    pub fn detail(&self) -> u16 {
        (self.arg >> PFN_BITS) as u16
    }

    /// The value the guest writes to the event register.
    pub fn encode(&self) -> u64 {
        u64::from(self.code.code()) << 56 | u64::from(self.thread) << 48 | self.arg
    }

    /// Decodes a value written to the event register.
    pub fn decode(raw: u64) -> Result<Self, ProtocolError> {
        let code = (raw >> 56) as u8;
        let thread = (raw >> 48) as u8;
        let code = EventCode::from_code(code).ok_or(ProtocolError::UnknownEvent { code })?;
        if !valid_thread(thread) {
            return Err(ProtocolError::BadThread { thread });
        }
        Ok(Self { code, thread, arg: raw & ((1 << ARG_BITS) - 1) })
    }
}

/// `pin from thread 1, arg 0x1234` (`from a kernel hook` for [`THREAD_ANY`]), as the fault log shows it.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code.name())?;
        match self.thread {
            THREAD_ANY => f.write_str(" from a kernel hook")?,
            t => write!(f, " from thread {t}")?,
        }
        write!(f, ", arg {:#x}", self.arg)
    }
}

fn valid_thread(thread: u8) -> bool {
    thread < MAX_THREADS || thread == THREAD_ANY
}
