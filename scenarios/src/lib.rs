//! What the two sides of `daxvmm test` must agree on, defined once: the race scenarios' names (on the
//! guest's command line, in reports and in repro files), how many threads each runs, the sync point ids
//! every scenario thread passes, and the marker that announces a new file's block to the host's oracle.
//!
//! The host's scenario table (`race/src/library.rs`), the guest program `daxvmm-race`
//! (`images/refcount-test/src/race/`) and the integration tests (`tests/tests/race.rs`) all take the
//! scenarios from [`ScenarioId`], and the host table and the guest program match on it exhaustively: a
//! scenario added here without a host program or a guest implementation does not compile. No
//! dependencies and `no_std`, so the static musl guest build takes it as it is.

#![no_std]

use core::fmt;

/// One race scenario. The declaration order is the order `daxvmm test` runs them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScenarioId {
    /// ftruncate over a driver-pinned page races the unpin.
    TruncateUnpin,
    /// fallocate(PUNCH_HOLE) over a driver-pinned page races the unpin.
    PunchUnpin,
    /// The pinner unmaps first, then truncate races the unpin.
    PinMunmapTruncate,
    /// A PMD-mapped 2 MiB folio, pinned whole, races truncate.
    PmdTruncate,
    /// Two pins on one page, released by two threads, race truncate.
    TwoPins,
    /// The last unlink evicts an inode whose page is still pinned.
    EvictLivePin,
    /// Unmount while a closed file's page is pinned.
    UmountLivePin,
    /// An O_DIRECT read from a non-DAX device into a DAX mapping races truncate.
    OdirectTruncate,
    /// A vmsplice page reference outlives the mapping and races truncate.
    VmspliceMunmapTruncate,
    /// Truncate held inside the kernel on the busy page's wait queue, about to sleep, while the pin is
    /// released: the wake-up must not be lost.
    TruncateUnpinSleeping,
    /// Truncate held inside the kernel after its busy scan found the pinned page, before it waits,
    /// while the pin is released: the wait must see the page idle and not sleep.
    TruncateUnpinBusy,
    /// Truncate asleep on the wait queue; the unpinner held in the final put (the folio freed, the
    /// waiters not yet woken), then released: the wake-up path itself.
    TruncateUnpinWakeup,
    /// Eviction (the last unlink) held after its final busy scan found the pinned page, before it
    /// waits, while the pin is released.
    EvictUnpinBusy,
    /// Eviction held on the busy page's wait queue, about to sleep uninterruptibly, while the pin is
    /// released.
    EvictUnpinSleeping,
    /// Hole punch held after its busy scan found the pinned page, before it waits, while the pin is
    /// released.
    PunchUnpinBusy,
    /// Hole punch held on the busy page's wait queue, about to sleep, while the pin is released.
    PunchUnpinSleeping,
    /// Truncate over two pinned pages: held after the busy scan found the first while that one is
    /// released, then on the second one's wait queue while the second is released.
    TruncateTwoPages,
    /// Eviction over two pinned pages, held as truncate is in [`Self::TruncateTwoPages`], at the final
    /// break-layout's points.
    EvictTwoPages,
    /// Truncate asleep on a pinned page while another thread faults in and pins a lower page of the
    /// file (the wait dropped the layout lock); the first pin goes, truncate wakes and must find the
    /// new pin before it frees anything.
    TruncateLatePin,
    /// As [`Self::TruncateLatePin`] with the pages swapped: the new pin is on a page above the one
    /// truncate sleeps on.
    TruncateLatePinAbove,
    /// Truncate asleep on a pinned page is interrupted by a signal: it must fail with EINTR, not go on
    /// over the pinned page.
    TruncateSignal,
    /// A pin taken during the run through a PMD fault (2 MiB folio) on the file's first page; hole punch
    /// of another 4 KiB inside that folio must wait for it (the whole folio is busy). After the punch,
    /// 4 KiB write faults on the freed folio's former tail pages.
    PunchPmdSubpage,
    /// Truncate held after its busy scan found a page whose only reference is one vmsplice left in a
    /// pipe (the mapping is gone), while the pipe is drained: the drain's put is the last reference.
    TruncateVmspliceBusy,
    /// As [`Self::TruncateVmspliceBusy`], with a hole punch.
    PunchVmspliceBusy,
    /// As [`Self::TruncateUnpinBusy`], with the unpinner held inside the kernel where its unpin is
    /// about to drop the last pin (the pin still held), then let go.
    TruncateUnpinHeld,
    /// Truncate held after its busy scan found a driver-pinned page, while another thread asks
    /// io_uring to register that page as a fixed buffer (a long-term pin fs-dax must refuse), then the
    /// pin is released.
    TruncateIouringBusy,
    /// As [`Self::TruncateIouringBusy`], with a hole punch.
    PunchIouringBusy,
    /// Truncate held after its busy scan found a page that an O_DIRECT read (into a mapping of it)
    /// pinned during the run, while the read, held where it drops the pin, is let go.
    TruncateOdirectBusy,
    /// As [`Self::TruncateOdirectBusy`], with a hole punch.
    PunchOdirectBusy,
    /// Hole punch asleep on a pinned page (the wait dropped the layout lock) while another thread
    /// write-faults a page of the punched range back in; the pin goes, the punch wakes and must take that
    /// page too. A write through the mapping afterwards must reach the file.
    PunchLateFault,
    /// Truncate asleep on a pinned page while another thread maps another page of the file through a
    /// private mapping and forks: the child inherits that mapping of the DAX page and copies it on write.
    /// Truncate wakes and must unmap the parent's mapping too.
    TruncateForkCow,
    /// Truncate asleep on a 2 MiB folio pinned whole while another thread faults a second mapping of it
    /// in with a PMD and moves that mapping with mremap; truncate wakes and must unmap it where it moved.
    TruncateMremapPmd,
    /// The unpin starts before truncate queues itself on the pinned page and drops the pin after:
    /// the unpinner is held inside the kernel where it is about to drop the pin while truncate goes
    /// from its busy scan onto the page's wait queue (held there before sleeping); the free that the
    /// unpin then causes must wake it.
    TruncateUnpinStraddle,
    /// The pinned page is poisoned through a second process that maps it (madvise(MADV_HWPOISON)):
    /// memory failure must kill that process and unmap the page but leave the pin; then truncate, held
    /// after its busy scan found the page, while the pin is released.
    TruncatePoisonMapped,
    /// The pinned, unmapped page is poisoned by physical address (as a machine check reports it) while
    /// truncate is held after its busy scan found it; then the pin is released.
    TruncatePoisonBusy,
}

/// Sync point every scenario thread passes just before its operation (truncate, unpin, ...).
pub const BEFORE: u16 = 1;
/// Sync point every scenario thread passes just after its operation returned.
pub const AFTER: u16 = 2;
/// Sync point of a thread that takes its pin during the run ([`BEFORE`] and [`AFTER`] around the pin):
/// just before it releases the pin.
pub const BEFORE_RELEASE: u16 = 3;
/// Just after that thread released its pin.
pub const AFTER_RELEASE: u16 = 4;

/// The guest kernel's hold points (`enum dax_refcount_point` in the guest patch
/// include/linux/dax_refcount.h; `KernelPoint` on the host, which a unit test of the race crate checks
/// against these): bit `id` of a tag mask asks the driver to hold a thread there.
pub mod kernel_point {
    /// dax_break_layout() found a busy page.
    pub const BUSY: u16 = 0;
    /// On the busy page's wait queue, about to sleep.
    pub const SLEEP: u16 = 1;
    /// The wait returned; the busy scan runs again next.
    pub const WOKEN: u16 = 2;
    /// No busy page is left: truncate or punch proceeds.
    pub const BROKEN: u16 = 3;
    /// As [`BUSY`], in the final break-layout of eviction and unmount.
    pub const FINAL_BUSY: u16 = 4;
    /// As [`SLEEP`], in the final break-layout (an uninterruptible sleep).
    pub const FINAL_SLEEP: u16 = 5;
    /// As [`WOKEN`], in the final break-layout.
    pub const FINAL_WOKEN: u16 = 6;
    /// As [`BROKEN`], in the final break-layout.
    pub const FINAL_BROKEN: u16 = 7;
    /// A DAX fault is about to map a page with a PTE.
    pub const PTE_INSERT: u16 = 8;
    /// A DAX fault is about to map a 2 MiB folio with a PMD.
    pub const PMD_INSERT: u16 = 9;
    /// dax_disassociate_entry(): the file lets go of a folio.
    pub const DISASSOCIATE: u16 = 10;
    /// free_zone_device_folio(): the last reference went, waiters not woken yet.
    pub const FREE: u16 = 11;
    /// GUP took a reference on an fs-dax folio.
    pub const GUP: u16 = 12;
    /// A FOLL_PIN pin on an fs-dax folio is about to be dropped (the pin still held).
    pub const UNPIN: u16 = 13;
    /// In a tag mask, bit `AGAIN_SHIFT + p` asks for a second hold at point `p` (bit `p` set too).
    pub const AGAIN_SHIFT: u16 = 16;
}

/// Bit in a marker event's detail saying "a new file's block, filled with the pattern in the low byte":
/// the guest announces such blocks, the host's oracle reads them back from pmem.
pub const MARKER_NEW_BLOCK: u16 = 0x100;
/// Bit in a marker event's detail saying "a page of the file that a thread maps again during the run":
/// the host's hold check accepts a fault's hold on such a page as on a pinned one.
pub const MARKER_FAULT_TARGET: u16 = 0x200;

impl ScenarioId {
    /// The kernel hold points thread `thread` asks the driver for (a mask of [`kernel_point`] bits), in
    /// the scenarios that hold threads inside the kernel; 0 elsewhere.
    pub const fn kernel_points(self, thread: u8) -> u32 {
        use kernel_point::*;
        const fn bit(p: u16) -> u32 {
            1 << p
        }
        const fn twice(p: u16) -> u32 {
            1 << p | 1 << (AGAIN_SHIFT + p)
        }
        match (self, thread) {
            (
                Self::TruncateUnpinSleeping
                | Self::PunchUnpinSleeping
                | Self::PunchLateFault
                | Self::TruncateForkCow
                | Self::TruncateMremapPmd
                | Self::TruncateUnpinStraddle,
                0,
            ) => bit(BUSY) | bit(SLEEP) | bit(WOKEN) | bit(BROKEN),
            (Self::TruncateUnpinWakeup, 0) => {
                bit(BUSY) | bit(SLEEP) | bit(WOKEN) | bit(BROKEN) | bit(DISASSOCIATE)
            }
            (
                Self::TruncateUnpinBusy
                | Self::PunchUnpinBusy
                | Self::PunchPmdSubpage
                | Self::TruncateVmspliceBusy
                | Self::PunchVmspliceBusy
                | Self::TruncateUnpinHeld
                | Self::TruncateIouringBusy
                | Self::PunchIouringBusy
                | Self::TruncateOdirectBusy
                | Self::PunchOdirectBusy
                | Self::TruncatePoisonMapped
                | Self::TruncatePoisonBusy,
                0,
            ) => bit(BUSY) | bit(WOKEN) | bit(BROKEN),
            (Self::PunchPmdSubpage, 1) => bit(PMD_INSERT) | bit(GUP),
            (Self::TruncateUnpinHeld | Self::TruncateUnpinStraddle, 1) => bit(UNPIN),
            (Self::TruncateOdirectBusy | Self::PunchOdirectBusy, 1) => bit(GUP) | bit(UNPIN),
            (Self::TruncateUnpinWakeup | Self::TruncateVmspliceBusy | Self::PunchVmspliceBusy, 1) => {
                bit(FREE)
            }
            (Self::EvictUnpinSleeping, 0) => {
                bit(FINAL_BUSY) | bit(FINAL_SLEEP) | bit(FINAL_WOKEN) | bit(FINAL_BROKEN)
            }
            (Self::EvictUnpinBusy, 0) => bit(FINAL_BUSY) | bit(FINAL_WOKEN) | bit(FINAL_BROKEN),
            (Self::TruncateTwoPages, 0) => bit(BUSY) | bit(WOKEN) | bit(SLEEP),
            (Self::EvictTwoPages, 0) => bit(FINAL_BUSY) | bit(FINAL_WOKEN) | bit(FINAL_SLEEP),
            (Self::TruncateLatePin | Self::TruncateLatePinAbove, 0) => twice(BUSY) | bit(SLEEP) | bit(WOKEN),
            (Self::TruncateLatePin | Self::TruncateLatePinAbove, 2) => bit(PTE_INSERT) | bit(GUP),
            (Self::TruncateSignal, 0) => bit(SLEEP),
            (Self::PunchLateFault | Self::TruncateForkCow, 2) => bit(PTE_INSERT),
            (Self::TruncateMremapPmd, 2) => bit(PMD_INSERT),
            _ => 0,
        }
    }

    /// Every scenario, in run order.
    pub const ALL: [Self; 35] = [
        Self::TruncateUnpin,
        Self::PunchUnpin,
        Self::PinMunmapTruncate,
        Self::PmdTruncate,
        Self::TwoPins,
        Self::EvictLivePin,
        Self::UmountLivePin,
        Self::OdirectTruncate,
        Self::VmspliceMunmapTruncate,
        Self::TruncateUnpinSleeping,
        Self::TruncateUnpinBusy,
        Self::TruncateUnpinWakeup,
        Self::EvictUnpinBusy,
        Self::EvictUnpinSleeping,
        Self::PunchUnpinBusy,
        Self::PunchUnpinSleeping,
        Self::TruncateTwoPages,
        Self::EvictTwoPages,
        Self::TruncateLatePin,
        Self::TruncateLatePinAbove,
        Self::TruncateSignal,
        Self::PunchPmdSubpage,
        Self::TruncateVmspliceBusy,
        Self::PunchVmspliceBusy,
        Self::TruncateUnpinHeld,
        Self::TruncateIouringBusy,
        Self::PunchIouringBusy,
        Self::TruncateOdirectBusy,
        Self::PunchOdirectBusy,
        Self::PunchLateFault,
        Self::TruncateForkCow,
        Self::TruncateMremapPmd,
        Self::TruncateUnpinStraddle,
        Self::TruncatePoisonMapped,
        Self::TruncatePoisonBusy,
    ];

    /// The name both sides use.
    pub const fn name(self) -> &'static str {
        match self {
            Self::TruncateUnpin => "truncate-unpin",
            Self::PunchUnpin => "punch-unpin",
            Self::PinMunmapTruncate => "pin-munmap-truncate",
            Self::PmdTruncate => "pmd-truncate",
            Self::TwoPins => "two-pins",
            Self::EvictLivePin => "evict-live-pin",
            Self::UmountLivePin => "umount-live-pin",
            Self::OdirectTruncate => "odirect-truncate",
            Self::VmspliceMunmapTruncate => "vmsplice-munmap-truncate",
            Self::TruncateUnpinSleeping => "truncate-unpin-sleeping",
            Self::TruncateUnpinBusy => "truncate-unpin-busy",
            Self::TruncateUnpinWakeup => "truncate-unpin-wakeup",
            Self::EvictUnpinBusy => "evict-unpin-busy",
            Self::EvictUnpinSleeping => "evict-unpin-sleeping",
            Self::PunchUnpinBusy => "punch-unpin-busy",
            Self::PunchUnpinSleeping => "punch-unpin-sleeping",
            Self::TruncateTwoPages => "truncate-two-pages",
            Self::EvictTwoPages => "evict-two-pages",
            Self::TruncateLatePin => "truncate-late-pin",
            Self::TruncateLatePinAbove => "truncate-late-pin-above",
            Self::TruncateSignal => "truncate-signal",
            Self::PunchPmdSubpage => "punch-pmd-subpage",
            Self::TruncateVmspliceBusy => "truncate-vmsplice-busy",
            Self::PunchVmspliceBusy => "punch-vmsplice-busy",
            Self::TruncateUnpinHeld => "truncate-unpin-held",
            Self::TruncateIouringBusy => "truncate-iouring-busy",
            Self::PunchIouringBusy => "punch-iouring-busy",
            Self::TruncateOdirectBusy => "truncate-odirect-busy",
            Self::PunchOdirectBusy => "punch-odirect-busy",
            Self::PunchLateFault => "punch-late-fault",
            Self::TruncateForkCow => "truncate-fork-cow",
            Self::TruncateMremapPmd => "truncate-mremap-pmd",
            Self::TruncateUnpinStraddle => "truncate-unpin-straddle",
            Self::TruncatePoisonMapped => "truncate-poison-mapped",
            Self::TruncatePoisonBusy => "truncate-poison-busy",
        }
    }

    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Guest threads, tagged 0 (the one that truncates, punches, unlinks or unmounts) and up (the ones
    /// that release what holds the page; in [`Self::TruncateLatePin`] thread 2 pins, then releases, as
    /// thread 1 does in [`Self::PunchPmdSubpage`]; in [`Self::TruncateSignal`] thread 2 sends the
    /// signal, in [`Self::TruncateIouringBusy`] it asks io_uring for a long-term pin, in
    /// [`Self::PunchLateFault`] it write-faults a page of the range, in [`Self::TruncateForkCow`] it forks,
    /// in [`Self::TruncateMremapPmd`] it moves a mapping, in the poison scenarios it poisons the page);
    /// each gets its own vCPU.
    pub const fn threads(self) -> u8 {
        match self {
            Self::TwoPins
            | Self::TruncateTwoPages
            | Self::EvictTwoPages
            | Self::TruncateLatePin
            | Self::TruncateLatePinAbove
            | Self::TruncateSignal
            | Self::TruncateIouringBusy
            | Self::PunchIouringBusy
            | Self::PunchLateFault
            | Self::TruncateForkCow
            | Self::TruncateMremapPmd
            | Self::TruncatePoisonMapped
            | Self::TruncatePoisonBusy => 3,
            _ => 2,
        }
    }
}

impl fmt::Display for ScenarioId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for (i, s) in ScenarioId::ALL.iter().enumerate() {
            assert_eq!(ScenarioId::from_name(s.name()), Some(*s));
            assert!(ScenarioId::ALL[..i].iter().all(|o| o.name() != s.name()));
        }
        assert_eq!(ScenarioId::from_name("no-such-scenario"), None);
    }

    #[test]
    fn all_lists_every_scenario_in_declaration_order() {
        for (i, s) in ScenarioId::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        assert_eq!(ScenarioId::ALL.len(), ScenarioId::TruncatePoisonBusy as usize + 1);
        assert!(ScenarioId::ALL.iter().all(|s| (2..=3).contains(&s.threads())));
    }
}
