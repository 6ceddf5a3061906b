//! The race scenario table: the host's view of each scenario of [`ScenarioId`] that the guest program
//! `daxvmm-race` (images/refcount-test/src/race/) runs, as [`Scenario`]s whose schedules the fault
//! injector enforces. The guest side of each entry runs the same sync points ([`BEFORE`], [`AFTER`]) in
//! the same program order; the names (from `daxvmm-scenarios`) are the ones both sides use on the kernel
//! command line, in reports and in repro files.

use daxvmm_devices::fault::{EventCode, Scenario, Schedule, StepKind, ThreadSpec};
use daxvmm_scenarios::{ScenarioId, AFTER, AFTER_RELEASE, BEFORE, BEFORE_RELEASE};

/// One entry of the library.
#[derive(Debug, Clone)]
pub struct LibraryEntry {
    /// Which scenario.
    pub id: ScenarioId,
    /// The scenario, with its name and thread programs.
    pub scenario: Scenario,
    /// One line for `daxvmm test --list` and reports.
    pub about: &'static str,
    /// Whether it needs the dax_refcount driver (pins through /dev/dax_refcount). Scenarios that do not
    /// (user-space references only) also run on kernels without the driver.
    pub needs_driver: bool,
    /// The schedules to run instead of every interleaving, for scenarios with kernel hold points: only
    /// orders the kernel can take (each forced, see the sequencer), with why the others cannot happen
    /// in `about`. Empty: every interleaving (or seeded samples).
    pub schedules: Vec<Schedule>,
}

impl LibraryEntry {
    /// The schedules the sequencer can force: the fixed ones, else every interleaving that leaves no
    /// order to timing ([`Schedule::leaves_order_to_timing`]); `None` when there are more than `limit`
    /// interleavings to look at (then a run samples).
    pub fn forcible(&self, limit: usize) -> Option<Vec<Schedule>> {
        if !self.schedules.is_empty() {
            return Some(self.schedules.clone());
        }
        let all = self.scenario.interleavings(limit).ok()?;
        Some(all.into_iter().filter(|s| !s.leaves_order_to_timing()).collect())
    }

    /// Guest threads, hence the vCPUs a run needs (each scenario thread gets its own vCPU).
    pub fn threads(&self) -> usize {
        self.scenario.threads().len()
    }
}

/// Thread `tag`, called `name`, with sync points [`BEFORE`] and [`AFTER`] around its operation.
fn thread(tag: u8, (name, before, after): (&str, &str, &str)) -> ThreadSpec {
    ThreadSpec::new(tag, name).sync(BEFORE, before).sync(AFTER, after)
}

/// A truncating (or punching, evicting) thread 0 and a releasing thread 1, each with a sync point
/// before and after its operation; `wait` adds the break-layout wait-begin event to thread 0, so a
/// schedule can put the release inside the kernel's wait.
fn two_threads(id: ScenarioId, t0: (&str, &str, &str), t1: (&str, &str, &str), wait: bool) -> Scenario {
    let mut a = ThreadSpec::new(0, t0.0).sync(BEFORE, t0.1);
    if wait {
        a = a.event(EventCode::WaitBegin);
    }
    let a = a.sync(AFTER, t0.2);
    well_formed(id, vec![a, thread(1, t1)])
}

fn well_formed(id: ScenarioId, threads: Vec<ThreadSpec>) -> Scenario {
    #[allow(clippy::expect_used)] // Constant programs, covered by the unit tests.
    Scenario::new(id.name(), threads).expect("library scenarios are well formed")
}

/// A scenario held inside the kernel, with its one forced schedule `order` (pushed to `schedules`):
/// thread 0 (`t0`: name and sync point names) and the threads after it (thread 1 releases the page the
/// kernel waits on first), each with the steps `order` names for it, in that order: its sync points
/// (named by `threads`; a thread that pins during the run also has [`BEFORE_RELEASE`] and
/// [`AFTER_RELEASE`] around its unpin) and kernel points. The programs come from the schedule, so the two
/// cannot disagree. Returns what [`entry`]'s table has for every scenario: it needs the driver.
fn held(
    schedules: &mut Vec<Schedule>,
    id: ScenarioId,
    threads: &[(&str, &str, &str)],
    order: &str,
    about: &'static str,
) -> (Scenario, &'static str, bool) {
    let order = schedule(order);
    let program = |tag: u8, &(name, before, after): &(&str, &str, &str)| {
        let mine = order.steps().iter().filter(|s| s.thread == tag);
        mine.fold(ThreadSpec::new(tag, name), |t, s| match (s.kernel_point(), s.kind) {
            (Some(k), _) => t.kernel(k),
            (None, StepKind::Sync(BEFORE)) => t.sync(BEFORE, before),
            (None, StepKind::Sync(AFTER)) => t.sync(AFTER, after),
            (None, StepKind::Sync(BEFORE_RELEASE)) => t.sync(BEFORE_RELEASE, UNPINNER.1),
            (None, StepKind::Sync(AFTER_RELEASE)) => t.sync(AFTER_RELEASE, UNPINNER.2),
            #[allow(clippy::panic)] // Constant schedules, covered by the unit tests.
            (None, kind) => panic!("{id}: no name for step {kind:?}"),
        })
    };
    let scenario = well_formed(id, (0..).zip(threads).map(|(tag, t)| program(tag, t)).collect());
    schedules.push(order);
    (scenario, about, true)
}

/// Truncate sleeps on the first pin; a late pin is taken during that wait (its fault and its GUP held
/// there: both happen inside the wait), and released while truncate, woken by the first pin's release,
/// is held where its second busy scan found the late pin.
const LATE_PIN: &str =
    "0.s1 0.kbusy 0.ksleep 2.s1 2.kpte-insert 2.kgup 2.s2 1.s1 1.s2 0.kwoken 2.s3 2.s4 0.kbusy 0.s2";
/// As [`LATE_PIN`], with a fault (held where it inserts the PTE) instead of a pin inside the wait: the
/// scan after the wake-up finds that page mapped, not pinned. Thread 2 may fork after its fault.
const LATE_FAULT: &str = "0.s1 0.kbusy 0.ksleep 2.s1 2.kpte-insert 2.s2 1.s1 1.s2 0.kwoken 0.kbroken 0.s2";
/// As [`LATE_FAULT`], with a PMD fault (then mremap) inside the wait.
const LATE_PMD_FAULT: &str =
    "0.s1 0.kbusy 0.ksleep 2.s1 2.kpmd-insert 2.s2 1.s1 1.s2 0.kwoken 0.kbroken 0.s2";
/// Truncate or punch held after its busy scan found the pinned page, while the pin is released.
const BUSY: &str = "0.s1 1.s1 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2";
/// As [`BUSY`], with the page's last reference in a pipe: the drain is held where its put freed the
/// folio, before the waiters are woken (none is queued yet).
const VMSPLICE_BUSY: &str = "0.s1 1.s1 1.kfree 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2";
/// As [`BUSY`], with the pin taken during the run by an O_DIRECT read: held where GUP took it (before
/// truncate starts: GUP-fast holds its vCPU with interrupts off) and where the read drops it (while
/// truncate runs to its busy point).
const ODIRECT_BUSY: &str = "1.s1 1.kgup 0.s1 1.kunpin 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2";
/// As [`BUSY`], with thread 2's whole operation inside the window (the io_uring registration, the poison).
const THIRD_IN_BUSY: &str = "0.s1 2.s1 2.s2 1.s1 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2";
/// The page poisoned (thread 2) before truncate starts; then as [`BUSY`].
const POISON_FIRST: &str = "2.s1 2.s2 0.s1 1.s1 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2";
/// Truncate or punch held on the wait queue, about to sleep, while the pin is released.
const SLEEPING: &str = "0.s1 0.kbusy 1.s1 1.s2 0.ksleep 0.kwoken 0.kbroken 0.s2";

fn schedule(text: &str) -> Schedule {
    #[allow(clippy::expect_used)] // Constant texts, covered by the unit tests.
    text.parse().expect("library schedules parse")
}

const TRUNCATOR: (&str, &str, &str) = ("truncator", "before-truncate", "after-truncate");
const UNPINNER: (&str, &str, &str) = ("unpinner", "before-unpin", "after-unpin");
/// Thread 2 of the two-page scenarios: releases the second page.
const SECOND_UNPINNER: (&str, &str, &str) = ("second-unpinner", UNPINNER.1, UNPINNER.2);
const EVICTOR: (&str, &str, &str) = ("evictor", "before-unlink", "after-unlink");
const PUNCHER: (&str, &str, &str) = ("puncher", "before-punch", "after-punch");
/// Thread 2 of truncate-late-pin: pins a page while truncate sleeps, releases it later.
const LATE_PINNER: (&str, &str, &str) = ("late-pinner", "before-pin", "after-pin");
/// Thread 1 of punch-pmd-subpage: pins (through a PMD fault) during the run, releases it later.
const PMD_PINNER: (&str, &str, &str) = ("pmd-pinner", "before-pin", "after-pin");
/// Thread 1 of the vmsplice scenarios: drains the pipe that holds the page's last reference.
const DRAINER: (&str, &str, &str) = ("drainer", "before-drain", "after-drain");
/// Thread 1 of the O_DIRECT scenarios: reads from the raw NVDIMM into a mapping of the file.
const DIO_READER: (&str, &str, &str) = ("dio-reader", "before-read", "after-read");
/// Thread 2 of the io_uring scenarios: asks io_uring to register the pinned page as a fixed buffer.
const REGISTRAR: (&str, &str, &str) = ("registrar", "before-register", "after-register");
/// Thread 2 of punch-late-fault: write-faults a page of the punched range while the punch sleeps.
const FAULTER: (&str, &str, &str) = ("faulter", "before-fault", "after-fault");
/// Thread 2 of truncate-fork-cow: faults a page in through a private mapping and forks.
const FORKER: (&str, &str, &str) = ("forker", "before-fork", "after-fork");
/// Thread 2 of truncate-mremap-pmd: faults a second mapping in with a PMD and moves it.
const REMAPPER: (&str, &str, &str) = ("remapper", "before-mremap", "after-mremap");
/// Thread 2 of the poison scenarios: poisons the pinned page.
const POISONER: (&str, &str, &str) = ("poisoner", "before-poison", "after-poison");
/// Thread 2 of truncate-signal: sends the truncating thread a signal.
const SIGNALER: (&str, &str, &str) = ("signaler", "before-signal", "after-signal");

/// The entry of scenario `id`.
pub fn entry(id: ScenarioId) -> LibraryEntry {
    let umount = ("unmounter", "before-umount", "after-umount");
    let mut schedules = Vec::new();
    let (scenario, about, needs_driver) = match id {
        ScenarioId::TruncateUnpin => (
            two_threads(id, TRUNCATOR, UNPINNER, true),
            "ftruncate over a pinned page races the unpin; data written through the pin after truncate started must not reach a reused block",
            true,
        ),
        ScenarioId::PunchUnpin => (
            two_threads(id, PUNCHER, UNPINNER, true),
            "fallocate(PUNCH_HOLE) over a pinned page races the unpin",
            true,
        ),
        ScenarioId::PinMunmapTruncate => (
            two_threads(id, TRUNCATOR, UNPINNER, true),
            "the pinner unmaps first, then truncate races the unpin (truncate must still wait: fixed in 6.15)",
            true,
        ),
        ScenarioId::PmdTruncate => (
            two_threads(id, TRUNCATOR, UNPINNER, true),
            "a 2 MiB PMD-mapped folio pinned whole races truncate; its final put splits it",
            true,
        ),
        ScenarioId::TwoPins => (
            well_formed(
                id,
                vec![
                    thread(0, TRUNCATOR),
                    thread(1, ("first-unpinner", UNPINNER.1, UNPINNER.2)),
                    thread(2, ("second-unpinner", UNPINNER.1, UNPINNER.2)),
                ],
            ),
            "two pins on one page, released by two threads in either order, race truncate",
            true,
        ),
        ScenarioId::EvictLivePin => (
            two_threads(id, EVICTOR, UNPINNER, false),
            "the last unlink evicts an inode whose page is still pinned (7.2 waits uninterruptibly)",
            true,
        ),
        ScenarioId::UmountLivePin => (
            two_threads(id, umount, UNPINNER, false),
            "unmount of the filesystem while a closed file's page is pinned (7.2 waits in the inode's eviction)",
            true,
        ),
        ScenarioId::OdirectTruncate => (
            two_threads(id, TRUNCATOR, DIO_READER, false),
            "O_DIRECT read from a non-DAX block device into a DAX mapping races truncate (xfstests generic/503 pattern, no driver pins)",
            false,
        ),
        ScenarioId::VmspliceMunmapTruncate => (
            two_threads(id, TRUNCATOR, DRAINER, false),
            "vmsplice holds a page reference, the mapping goes, truncate races the pipe drain (the pre-6.15 bug; runs without the driver)",
            false,
        ),
        ScenarioId::TruncateUnpinSleeping => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER],
            SLEEPING,
            "truncate held in the kernel on the busy page's wait queue, about to sleep, while the pin is released: the wake-up comes before the sleep and must not be lost (the one feasible order: after the busy scan, or no page is busy; before the sleep point is let go)",
        ),
        ScenarioId::TruncateUnpinBusy => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER],
            BUSY,
            "truncate held in the kernel after its busy scan found the pinned page, while the pin is released; the wait must find the page idle without sleeping (the one feasible order: unpin after the scan, before the wait)",
        ),
        ScenarioId::TruncateUnpinWakeup => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER],
            "0.s1 0.kbusy 0.ksleep 1.s1 1.kfree 1.s2 0.kwoken 0.kbroken 0.kdisassociate 0.s2",
            "truncate asleep on the wait queue; the unpin's final put held after the folio is freed, before the waiters are woken (the one feasible order: truncate cannot wake before that put); truncate held again where it lets go of the freed folio",
        ),
        ScenarioId::EvictUnpinBusy => held(
            &mut schedules,
            id,
            &[EVICTOR, UNPINNER],
            "0.s1 1.s1 1.s2 0.kfinal-busy 0.kfinal-woken 0.kfinal-broken 0.s2",
            "the last unlink of a closed file evicts it; eviction held in the kernel after its final busy scan found the pinned page, while the pin is released (the one feasible order: unpin after the scan, before the wait)",
        ),
        ScenarioId::EvictUnpinSleeping => held(
            &mut schedules,
            id,
            &[EVICTOR, UNPINNER],
            "0.s1 0.kfinal-busy 1.s1 1.s2 0.kfinal-sleep 0.kfinal-woken 0.kfinal-broken 0.s2",
            "eviction held on the pinned page's wait queue, about to sleep uninterruptibly, while the pin is released: the wake-up must not be lost (the one feasible order)",
        ),
        ScenarioId::PunchUnpinBusy => held(
            &mut schedules,
            id,
            &[PUNCHER, UNPINNER],
            BUSY,
            "fallocate(PUNCH_HOLE) held in the kernel after its busy scan found the pinned page, while the pin is released (as truncate-unpin-busy)",
        ),
        ScenarioId::PunchUnpinSleeping => held(
            &mut schedules,
            id,
            &[PUNCHER, UNPINNER],
            SLEEPING,
            "fallocate(PUNCH_HOLE) held on the busy page's wait queue, about to sleep, while the pin is released (as truncate-unpin-sleeping)",
        ),
        ScenarioId::TruncateTwoPages => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER, SECOND_UNPINNER],
            "0.s1 1.s1 1.s2 0.kbusy 0.kwoken 2.s1 2.s2 0.ksleep 0.s2",
            "truncate over two pinned pages, held after its busy scan found the first while that pin is released, then on the second page's wait queue, about to sleep, while the second is released: the wait on the first must not end the busy scan (the one feasible order that releases the first page inside the wait: the second wait starts only after the first ends, and only on a page still pinned)",
        ),
        ScenarioId::EvictTwoPages => held(
            &mut schedules,
            id,
            &[EVICTOR, UNPINNER, SECOND_UNPINNER],
            "0.s1 1.s1 1.s2 0.kfinal-busy 0.kfinal-woken 2.s1 2.s2 0.kfinal-sleep 0.s2",
            "the last unlink evicts a closed file with two pinned pages; eviction held at its final break-layout's points as truncate is in truncate-two-pages (the one feasible order, as there)",
        ),
        ScenarioId::TruncateLatePin => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER, LATE_PINNER],
            LATE_PIN,
            "truncate found the second page pinned and sleeps on it (the wait dropped the layout lock); meanwhile a third thread faults the first page in again and pins it; the second pin goes, truncate wakes and must scan the whole range again and find the new pin (held there, its second busy hold, while the new pin goes; then its wait finds the page idle) (the one order that puts a new pin inside the wait, below the page waited on, and keeps it past the wake-up's scan)",
        ),
        ScenarioId::TruncateLatePinAbove => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER, LATE_PINNER],
            LATE_PIN,
            "as truncate-late-pin with the pages swapped: truncate sleeps on the first page and the new pin is on the second, which a scan after the wait must still find (the one order, as there)",
        ),
        ScenarioId::TruncateSignal => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER, SIGNALER],
            "0.s1 0.ksleep 2.s1 2.s2 0.s2 1.s1 1.s2",
            "truncate about to sleep on a pinned page gets a signal (a handler without SA_RESTART): it must fail with EINTR and leave the page alone; the pin goes after truncate returned (the one order that interrupts the wait with the pin still held)",
        ),
        ScenarioId::PunchPmdSubpage => held(
            &mut schedules,
            id,
            &[PUNCHER, PMD_PINNER],
            "1.s1 1.kpmd-insert 1.kgup 1.s2 0.s1 1.s3 1.s4 0.kbusy 0.kwoken 0.kbroken 0.s2",
            "a pin taken during the run on the first page of a 2 MiB file, held at its PMD fault and at GUP; hole punch of the second 4 KiB page, held after its busy scan found the pinned folio, while the pin is released; then 4 KiB write faults on every page of the freed folio (the one order: the punch's busy scan must come after the pin, and a folio is busy as a whole)",
        ),
        ScenarioId::TruncateVmspliceBusy => held(
            &mut schedules,
            id,
            &[TRUNCATOR, DRAINER],
            VMSPLICE_BUSY,
            "vmsplice leaves a page reference in a pipe and the mapping goes; truncate held after its busy scan found that page, while the pipe is drained (its put held where it freed the folio): the wait must find the page idle (the one feasible order, as truncate-unpin-busy; the reference is a plain get, not a DMA pin)",
        ),
        ScenarioId::PunchVmspliceBusy => held(
            &mut schedules,
            id,
            &[PUNCHER, DRAINER],
            VMSPLICE_BUSY,
            "as truncate-vmsplice-busy, with fallocate(PUNCH_HOLE) over the page",
        ),
        ScenarioId::TruncateUnpinHeld => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER],
            "0.s1 1.s1 1.kunpin 1.s2 0.kbusy 0.kwoken 0.kbroken 0.s2",
            "as truncate-unpin-busy, with the unpinner held inside the kernel where its unpin is about to drop the last pin (the pin still held) while truncate is held after its busy scan found the page; then the unpin goes on and the wait must find the page idle (the one feasible order, as there)",
        ),
        ScenarioId::TruncateUnpinStraddle => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER],
            "0.s1 1.s1 0.kbusy 1.kunpin 0.ksleep 1.s2 0.kwoken 0.kbroken 0.s2",
            "the unpin straddles truncate's queueing: held inside the kernel where it is about to drop the pin, it started while truncate was held after its busy scan; truncate then queues itself on the page (held before sleeping) and the unpin drops the pin: the free must wake truncate, or it sleeps through its only wake-up (the one feasible order of those points: truncate cannot queue before its busy scan)",
        ),
        ScenarioId::TruncateIouringBusy => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER, REGISTRAR],
            THIRD_IN_BUSY,
            "truncate held after its busy scan found the driver-pinned page; meanwhile io_uring is asked to register that page as a fixed buffer, a FOLL_LONGTERM pin fs-dax must refuse with EOPNOTSUPP (a registration that succeeds is a finding); then the pin is released and the wait must find the page idle (the order of truncate-unpin-busy, the registration inside its window)",
        ),
        ScenarioId::PunchIouringBusy => held(
            &mut schedules,
            id,
            &[PUNCHER, UNPINNER, REGISTRAR],
            THIRD_IN_BUSY,
            "as truncate-iouring-busy, with fallocate(PUNCH_HOLE) over the page",
        ),
        ScenarioId::TruncateOdirectBusy => held(
            &mut schedules,
            id,
            &[TRUNCATOR, DIO_READER],
            ODIRECT_BUSY,
            "an O_DIRECT read from the raw NVDIMM into a mapped page of the file pins it for the I/O (held where GUP took the pin, then where the read drops it, the pin still held); truncate runs to its busy scan, which finds the page pinned, and is held there while the read's unpin is let go: the wait must find the page idle (the one feasible order: the pin must come before the busy scan, and truncate must not start while GUP-fast holds its vCPU with interrupts off)",
        ),
        ScenarioId::PunchOdirectBusy => held(
            &mut schedules,
            id,
            &[PUNCHER, DIO_READER],
            ODIRECT_BUSY,
            "as truncate-odirect-busy, with fallocate(PUNCH_HOLE) over the page",
        ),
        ScenarioId::PunchLateFault => held(
            &mut schedules,
            id,
            &[PUNCHER, UNPINNER, FAULTER],
            LATE_FAULT,
            "fallocate(PUNCH_HOLE) of a two-page file sleeps on its pinned second page (the wait dropped the layout lock); meanwhile a third thread write-faults the first page back in (held where the fault inserts the PTE); the pin goes, the punch wakes, scans again and must take the newly mapped page too; afterwards a write through the same mapping must reach the file (the one order that puts a fault inside the wait: before, it waits for the layout lock; after, the punch holds it)",
        ),
        ScenarioId::TruncateForkCow => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER, FORKER],
            LATE_FAULT,
            "truncate of a two-page file sleeps on its pinned second page; meanwhile a third thread reads the first page through a MAP_PRIVATE mapping (held where the fault maps the DAX page) and forks: the child inherits that mapping, must read the file's bytes through it and copy the page on its write; the pin goes, truncate wakes and must unmap the parent's mapping; afterwards, the file grown again, that never-copied page must read the new hole (the one order that forks inside the wait, as punch-late-fault)",
        ),
        ScenarioId::TruncateMremapPmd => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER, REMAPPER],
            LATE_PMD_FAULT,
            "truncate of a 2 MiB file sleeps on its folio, pinned whole; meanwhile a third thread faults a second 2 MiB-aligned mapping of the file in with a PMD (held there) and moves it with mremap to another aligned address; the pin goes, truncate wakes and must unmap the mapping where it moved; afterwards a write through it must reach the file (the one order that moves a mapping inside the wait, as punch-late-fault)",
        ),
        ScenarioId::TruncatePoisonMapped => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER, POISONER],
            POISON_FIRST,
            "a second process maps the pinned page and poisons it with madvise(MADV_HWPOISON): memory failure (xfs: notify_failure through the reverse map; ext4: the generic path) must kill that process with SIGBUS BUS_MCEERR_AR at the page's address and unmap the page, but leave the pin; truncate, held after its busy scan found the page, while the pin is released (written through first, as a device still would): the wait must find the page idle (the one order that poisons a mapped page: once truncate starts, its busy scan unmaps the page and holds the layout lock a new fault needs)",
        ),
        ScenarioId::TruncatePoisonBusy => held(
            &mut schedules,
            id,
            &[TRUNCATOR, UNPINNER, POISONER],
            THIRD_IN_BUSY,
            "the pinned page, mapped by no process, is poisoned by physical address (/sys/devices/system/memory/hard_offline_page, the memory-failure entry a machine check takes) while truncate is held after its busy scan found it: memory failure must recover the page without dropping the pin; then the pin is released and the wait must find the page idle (the order of truncate-unpin-busy, the poison inside its window)",
        ),
    };
    LibraryEntry { id, scenario, about, needs_driver, schedules }
}

/// Every scenario, in the order `daxvmm test` runs them.
pub fn library() -> Vec<LibraryEntry> {
    ScenarioId::ALL.into_iter().map(entry).collect()
}

/// The library entry called `name`.
pub fn find(name: &str) -> Option<LibraryEntry> {
    ScenarioId::from_name(name).map(entry)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let lib = library();
        for (i, e) in lib.iter().enumerate() {
            assert!(lib[..i].iter().all(|o| o.scenario.name() != e.scenario.name()));
            assert_eq!(find(e.scenario.name()).unwrap().scenario, e.scenario);
            assert!(!e.about.is_empty());
            assert_eq!(e.scenario.name(), e.id.name());
            assert_eq!(e.threads(), usize::from(e.id.threads()), "{}: the guest runs as many threads", e.id);
        }
        assert!(find("no-such-scenario").is_none());
    }

    #[test]
    fn interleaving_counts() {
        let count = |n: &str| find(n).unwrap().scenario.interleaving_count().unwrap();
        // 3 steps + 2 steps: C(5,2).
        assert_eq!(count("truncate-unpin"), 10);
        assert_eq!(count("evict-live-pin"), 6);
        // Three threads of two steps: 6! / (2! 2! 2!).
        assert_eq!(count("two-pins"), 90);
        assert_eq!(find("two-pins").unwrap().threads(), 3);
    }

    #[test]
    fn held_scenarios_have_forced_schedules_that_match_their_programs_and_guest_masks() {
        use daxvmm_devices::fault::{KernelPoint, StepKind};
        use daxvmm_scenarios::kernel_point as kp;
        let held: Vec<LibraryEntry> = library().into_iter().filter(|e| !e.schedules.is_empty()).collect();
        assert_eq!(held.len(), 26);
        for e in &held {
            for s in &e.schedules {
                e.scenario.check(s).unwrap();
                assert!(!s.leaves_order_to_timing(), "{}: {s}", e.id);
            }
            // The guest tags each thread for exactly the kernel points of its host program.
            for t in e.scenario.threads() {
                // A point listed twice is held twice: its second bit too.
                let mask = t.steps.iter().fold(0u32, |m, s| match s.kind {
                    StepKind::Sync(p) => match KernelPoint::from_sync_id(p).map(|k| 1 << k.id()) {
                        Some(bit) if m & bit != 0 => m | bit << kp::AGAIN_SHIFT,
                        Some(bit) => m | bit,
                        None => m,
                    },
                    StepKind::Event(_) => m,
                });
                assert_eq!(mask, e.id.kernel_points(t.tag), "{} thread {}", e.id, t.tag);
            }
        }
        // The ids the guest uses are the host's.
        for (id, k) in
            [(kp::BUSY, KernelPoint::Busy), (kp::SLEEP, KernelPoint::Sleep), (kp::WOKEN, KernelPoint::Woken)]
                .into_iter()
                .chain([(kp::BROKEN, KernelPoint::Broken), (kp::FREE, KernelPoint::Free)])
                .chain([(kp::FINAL_BUSY, KernelPoint::FinalBusy), (kp::FINAL_SLEEP, KernelPoint::FinalSleep)])
                .chain([
                    (kp::FINAL_WOKEN, KernelPoint::FinalWoken),
                    (kp::FINAL_BROKEN, KernelPoint::FinalBroken),
                ])
                .chain([(kp::PTE_INSERT, KernelPoint::PteInsert), (kp::PMD_INSERT, KernelPoint::PmdInsert)])
                .chain([(kp::DISASSOCIATE, KernelPoint::Disassociate), (kp::GUP, KernelPoint::Gup)])
                .chain([(kp::UNPIN, KernelPoint::Unpin)])
        {
            assert_eq!(id, k.id(), "{k:?}");
        }
    }

    #[test]
    fn every_kernel_hold_point_is_held_by_some_schedule() {
        use daxvmm_devices::fault::KernelPoint;
        let held: Vec<KernelPoint> = library()
            .iter()
            .flat_map(|e| {
                e.schedules.iter().flat_map(|s| s.steps().iter().filter_map(|st| st.kernel_point()))
            })
            .collect();
        for k in KernelPoint::ALL {
            assert!(held.contains(k), "no schedule holds a thread at kernel point {}", k.name());
        }
    }

    #[test]
    fn driverless_scenarios_are_the_fallback_pair() {
        let names: Vec<String> = library()
            .into_iter()
            .filter(|e| !e.needs_driver)
            .map(|e| e.scenario.name().to_string())
            .collect();
        assert_eq!(names, ["odirect-truncate", "vmsplice-munmap-truncate"]);
    }
}
