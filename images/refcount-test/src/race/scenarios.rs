//! The guest side of daxvmm's race scenario library (race/src/library.rs): each [`ScenarioId`]'s
//! threads, with the sync points ([`BEFORE`], [`AFTER`]) and events of the host's programs, in the same
//! order. [`run`] matches on every scenario, so one added to `daxvmm-scenarios` without a guest side
//! does not compile. Thread 0 is the
//! one that truncates (punches, unlinks); thread 1 (and 2) release what holds the page.
//!
//! The host's oracle judges a run from the events (pin, unpin, truncate returned, writes through pins,
//! new files' blocks) and the pmem contents; the guest reports a finding itself only where the host
//! cannot see (the vmsplice scenario on a kernel without the driver, which sends no events).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use daxvmm_refcount_test::sys::{ename, errno, map_file, Dev, TFile, PAGE, PMD};
use daxvmm_scenarios::{ScenarioId, AFTER, BEFORE};

use crate::ctx::{code, finding, note, Ctx};
use crate::error::RaceError;
use crate::files::{
    new_files, pfn_of, pin_file, pin_page, remove, umount, unlink, PinnedFile, PinnedPage, STALE,
};
use crate::refs::{Pipe, RawDev};
use crate::watchdog::Progress;

/// What thread 0 does to the pinned page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Truncate,
    Punch,
    /// Unlink the closed file: the last reference evicts the inode.
    Evict,
    /// Unmount the filesystem (the file closed, not unlinked): unmount evicts the inode.
    Umount,
}

/// How the page is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One 4 KiB page, still mapped.
    Page,
    /// One page, whose mapping the pinner removed before the race.
    Unmapped,
    /// A whole 2 MiB folio, PMD-mapped.
    Pmd,
    /// One page pinned twice; threads 1 and 2 release one pin each.
    TwoPins,
    /// Two pages, pinned separately: thread 1 releases the first, thread 2 the second.
    TwoPages,
}

/// Runs one run of `id` in `dir`; `Err` is why it could not run (a skip, not a violation).
pub fn run(ctx: &Ctx<'_>, id: ScenarioId, dir: &str, raw: Option<&str>) -> Result<(), RaceError> {
    match id {
        ScenarioId::TruncateUnpin => pinned_race(ctx, dir, Op::Truncate, Shape::Page),
        ScenarioId::TruncateUnpinSleeping
        | ScenarioId::TruncateUnpinBusy
        | ScenarioId::TruncateUnpinWakeup
        | ScenarioId::TruncateUnpinHeld
        | ScenarioId::TruncateUnpinStraddle => held_race(ctx, dir, id, Op::Truncate, Shape::Page),
        ScenarioId::EvictUnpinBusy | ScenarioId::EvictUnpinSleeping => {
            held_race(ctx, dir, id, Op::Evict, Shape::Unmapped)
        }
        ScenarioId::PunchUnpinBusy | ScenarioId::PunchUnpinSleeping => {
            held_race(ctx, dir, id, Op::Punch, Shape::Page)
        }
        ScenarioId::TruncateTwoPages => held_race(ctx, dir, id, Op::Truncate, Shape::TwoPages),
        ScenarioId::TruncateLatePin | ScenarioId::TruncateLatePinAbove => {
            crate::racers::late_pin(ctx, dir, id)
        }
        ScenarioId::TruncateSignal => crate::racers::signal(ctx, dir, id),
        ScenarioId::PunchPmdSubpage => crate::racers::pmd_subpage(ctx, dir, id),
        ScenarioId::PunchLateFault => crate::mappings::late_fault(ctx, dir, id),
        ScenarioId::TruncateForkCow => crate::mappings::fork_cow(ctx, dir, id),
        ScenarioId::TruncateMremapPmd => crate::mappings::mremap_pmd(ctx, dir, id),
        ScenarioId::EvictTwoPages => held_race(ctx, dir, id, Op::Evict, Shape::TwoPages),
        ScenarioId::PunchUnpin => pinned_race(ctx, dir, Op::Punch, Shape::Page),
        ScenarioId::PinMunmapTruncate => pinned_race(ctx, dir, Op::Truncate, Shape::Unmapped),
        ScenarioId::PmdTruncate => pinned_race(ctx, dir, Op::Truncate, Shape::Pmd),
        ScenarioId::TwoPins => pinned_race(ctx, dir, Op::Truncate, Shape::TwoPins),
        ScenarioId::EvictLivePin => pinned_race(ctx, dir, Op::Evict, Shape::Unmapped),
        ScenarioId::UmountLivePin => pinned_race(ctx, dir, Op::Umount, Shape::Unmapped),
        ScenarioId::OdirectTruncate => odirect(ctx, dir, raw),
        ScenarioId::VmspliceMunmapTruncate => vmsplice(ctx, dir),
        ScenarioId::TruncateVmspliceBusy => crate::refs::vmsplice_held(ctx, dir, id, Op::Truncate),
        ScenarioId::PunchVmspliceBusy => crate::refs::vmsplice_held(ctx, dir, id, Op::Punch),
        ScenarioId::TruncateIouringBusy => crate::refs::iouring_held(ctx, dir, id, Op::Truncate),
        ScenarioId::PunchIouringBusy => crate::refs::iouring_held(ctx, dir, id, Op::Punch),
        ScenarioId::TruncateOdirectBusy => crate::refs::odirect_held(ctx, dir, raw, id, Op::Truncate),
        ScenarioId::PunchOdirectBusy => crate::refs::odirect_held(ctx, dir, raw, id, Op::Punch),
        ScenarioId::TruncatePoisonMapped => crate::poison::mapped(ctx, dir, id),
        ScenarioId::TruncatePoisonBusy => crate::poison::busy(ctx, dir, id),
    }
}

impl Op {
    /// The system call, as the guest's findings and notes name it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Truncate => "ftruncate",
            Op::Punch => "fallocate(PUNCH_HOLE)",
            Op::Evict => "unlink (eviction)",
            Op::Umount => "umount",
        }
    }
}

fn start_and_return(op: Op) -> (u8, u8) {
    match op {
        Op::Punch => (code::PUNCH_START, code::PUNCH_RETURNED),
        Op::Truncate | Op::Evict | Op::Umount => (code::TRUNCATE_START, code::TRUNCATE_RETURNED),
    }
}

/// Punches `len` bytes at `offset` out of `f` (the size stays).
pub fn punch(f: &TFile, offset: usize, len: usize) -> Result<(), i32> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: f.fd is open; fallocate touches no memory of ours.
    if unsafe { libc::fallocate(f.fd, mode, offset as libc::off_t, len as libc::off_t) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// `op` on the one-page file `f` in the races over a single page: truncate to 0, or punch the page.
/// Eviction and unmount are not done to one open file: EINVAL.
pub fn one_page(f: &TFile, op: Op) -> Result<(), i32> {
    over(f, op, PAGE)
}

/// `op` on the first `len` bytes of the open file `f`: truncate to 0, or punch them; EINVAL for
/// eviction and unmount, which are not done to one open file.
pub fn over(f: &TFile, op: Op, len: usize) -> Result<(), i32> {
    match op {
        Op::Truncate => f.truncate(0),
        Op::Punch => punch(f, 0, len),
        Op::Evict | Op::Umount => Err(libc::EINVAL),
    }
}

/// Writes [`STALE`] over the first page of a pin and unpins it, announcing both.
pub fn write_and_unpin(ctx: &Ctx<'_>, dev: &Dev, thread: u8, handle: u64, pfn: u64, write: bool) {
    if write {
        match dev.write(handle, 0, 0, PAGE as u32, STALE) {
            Ok(()) => ctx.event(code::WRITE_THROUGH_PIN, thread, pfn, u16::from(STALE)),
            Err(e) => note(ctx.run, &format!("WRITE_THROUGH_PIN: {}", ename(e))),
        }
    }
    // Announced before it happens: the unpin wakes the truncating thread, whose truncate-returned event
    // must not be able to overtake this one in the host's log.
    ctx.event(code::UNPIN, thread, pfn, 0);
    if let Err(e) = dev.unpin(handle, 0) {
        note(ctx.run, &format!("UNPIN: {}", ename(e)));
    }
}

/// A pinned race (`op` on a page held as `shape`) whose threads the host holds inside the kernel too:
/// each thread tags itself for its scenario's kernel hold points around its operation. Needs a kernel
/// with the hold points (guest patches 0006 and 0007) and the fault injector; without them the run is
/// skipped, since nothing would be forced.
fn held_race(ctx: &Ctx<'_>, dir: &str, id: ScenarioId, op: Op, shape: Shape) -> Result<(), RaceError> {
    held_device(ctx)?;
    pinned_race_with(ctx, dir, op, shape, Some(id))
}

/// The driver, if the kernel has the hold points and the fault injector answers; else why a held race
/// cannot run.
pub fn held_device<'a>(ctx: &Ctx<'a>) -> Result<&'a Dev, RaceError> {
    let dev = ctx.dev.ok_or(RaceError::NoDriver)?;
    if !ctx.fault {
        return Err(RaceError::NoFaultInjector);
    }
    // Untagging a thread nobody tagged is harmless and tells whether the driver knows TAG.
    dev.tag(7, 0).map_err(RaceError::NoHoldPoints)?;
    Ok(dev)
}

fn pinned_race(ctx: &Ctx<'_>, dir: &str, op: Op, shape: Shape) -> Result<(), RaceError> {
    pinned_race_with(ctx, dir, op, shape, None)
}

/// Whether scenario `id`'s schedule lets thread 0 go from its sleep point before thread 1 starts
/// releasing: then thread 1 first waits until thread 0 is asleep, which no hold point can tell.
fn releases_after_sleep(id: ScenarioId) -> bool {
    id == ScenarioId::TruncateUnpinWakeup
}

/// How long a releasing thread waits for thread 0 to fall asleep ([`releases_after_sleep`]).
const ASLEEP_WITHIN: Duration = Duration::from_secs(5);

/// A releasing thread: between its sync points, writes [`STALE`] through `pin` and unpins
/// it, tagged for its kernel points of `held`, and tells the watchdog.
pub fn unpinner(
    ctx: &Ctx<'_>,
    dev: &Dev,
    progress: &Progress,
    held: Option<ScenarioId>,
    thread: u8,
    pin: PinnedPage,
) {
    ctx.place(thread);
    ctx.sync(thread, BEFORE);
    tagged(ctx, held, thread, || write_and_unpin(ctx, dev, thread, pin.handle, pin.pfn, true));
    progress.released();
    ctx.sync(thread, AFTER);
}

/// Runs `op` under `ctx.tag` for thread `thread`'s kernel points of `held` (if any), untagging after.
pub fn tagged<T>(ctx: &Ctx<'_>, held: Option<ScenarioId>, thread: u8, op: impl FnOnce() -> T) -> T {
    let points = held.map_or(0, |id| id.kernel_points(thread));
    if points != 0 {
        ctx.tag(thread, points);
    }
    let r = op();
    if points != 0 {
        ctx.tag(thread, 0);
    }
    r
}

/// Thread 0 truncates (punches, evicts) a page the driver pins; thread 1 (and 2) write through the pin
/// and release it. After its operation thread 0 makes new files, whose blocks the host checks for the
/// pattern written through a pin that outlived its block. `held`: the scenario whose kernel points the
/// threads tag themselves for (see [`held_race`]).
fn pinned_race_with(
    ctx: &Ctx<'_>,
    dir: &str,
    op: Op,
    shape: Shape,
    held: Option<ScenarioId>,
) -> Result<(), RaceError> {
    let dev = ctx.dev.ok_or(RaceError::NoDriver)?;
    let (len, pin_len) = match shape {
        Shape::Pmd => (PMD, PMD),
        Shape::TwoPages => (2 * PAGE, PAGE),
        Shape::Page | Shape::Unmapped | Shape::TwoPins => (PAGE, PAGE),
    };
    let mut pf: PinnedFile = pin_file(dev, dir, &format!("f-{}", ctx.run), len, pin_len)?;
    let pfn = pf.pfn;
    if shape == Shape::Pmd && pf.order != 9 {
        note(ctx.run, &format!("no PMD mapping (folio order {}): raced 2 MiB of small pages", pf.order));
    }
    ctx.event(code::PIN, 1, pfn, 0);
    // Thread 2's pin: on the same page, or on the second one (whose pfn the driver tells).
    let second = match shape {
        Shape::TwoPins | Shape::TwoPages => {
            let offset = if shape == Shape::TwoPages { PAGE } else { 0 };
            let p = pin_page(dev, pf.map.addr() + offset, "second PIN")?;
            ctx.event(code::PIN, 2, p.pfn, 0);
            Some(p)
        }
        Shape::Page | Shape::Unmapped | Shape::Pmd => None,
    };
    // Eviction needs the file unmapped (a mapping keeps the inode alive).
    if shape == Shape::Unmapped || matches!(op, Op::Evict | Op::Umount) {
        pf.map.unmap();
        ctx.event(code::MUNMAP, 1, pfn, 0);
    }
    if matches!(op, Op::Evict | Op::Umount) {
        pf.file = None;
    }
    let made = Mutex::new(Vec::new());
    let progress = &Progress::default();
    std::thread::scope(|s| {
        s.spawn(|| progress.watch(ctx.run, 1 + usize::from(second.is_some()), op.name()));
        s.spawn(|| {
            operate(ctx, progress, held, op, pfn, dir, &made, || match (op, pf.file.as_ref()) {
                (Op::Truncate, Some(f)) => f.truncate(0),
                (Op::Punch, Some(f)) => punch(f, 0, len),
                (Op::Evict, _) => unlink(&pf.path),
                (Op::Umount, _) => umount(dir),
                _ => Err(libc::EBADF),
            })
        });
        s.spawn(|| {
            ctx.place(1);
            ctx.sync(1, BEFORE);
            if held.is_some_and(releases_after_sleep) && !progress.wait_asleep(ASLEEP_WITHIN) {
                note(
                    ctx.run,
                    &format!("{} was not seen asleep within {ASLEEP_WITHIN:?}; releasing anyway", op.name()),
                );
            }
            // Two pins on one page: only the second writes (the first unpin frees nothing).
            let write = shape != Shape::TwoPins;
            tagged(ctx, held, 1, || write_and_unpin(ctx, dev, 1, pf.handle, pfn, write));
            progress.released();
            ctx.sync(1, AFTER);
        });
        if let Some(p) = second {
            s.spawn(move || unpinner(ctx, dev, progress, held, 2, p));
        }
    });
    if op == Op::Umount {
        remount(ctx, dir)?;
    }
    remove(&made.into_inner().unwrap_or_else(|p| p.into_inner()));
    remove(std::slice::from_ref(&pf.path));
    Ok(())
}

/// Thread 0 of a pinned race: between its sync points, `act` does `op` (tagged for its kernel points of
/// `held`), announced to the host and the watchdog (`pfn`: the pinned page). After a successful `op` it
/// makes new files in `dir` (listed in `made`), whose blocks the host checks.
#[allow(clippy::too_many_arguments)] // One call per race shape; a struct would only rename them.
pub fn operate(
    ctx: &Ctx<'_>,
    progress: &Progress,
    held: Option<ScenarioId>,
    op: Op,
    pfn: u64,
    dir: &str,
    made: &Mutex<Vec<String>>,
    act: impl FnOnce() -> Result<(), i32>,
) {
    let (start, returned) = start_and_return(op);
    ctx.place(0);
    ctx.sync(0, BEFORE);
    ctx.event(start, 0, pfn, 0);
    let t = Instant::now();
    progress.start();
    let r = tagged(ctx, held, 0, act);
    progress.returned();
    let e = r.err().unwrap_or(0);
    ctx.event(returned, 0, pfn, e as u16);
    note(ctx.run, &format!("{} returned {} after {} ms", op.name(), ename(e), t.elapsed().as_millis()));
    // Once unmounted, `dir` is no longer the DAX filesystem: no new files there.
    if e == 0 && op != Op::Umount {
        *made.lock().unwrap_or_else(|p| p.into_inner()) = new_files(ctx, 0, dir);
    }
    ctx.sync(0, AFTER);
}

/// Mounts the run's filesystem on `dir` again, unless the unmount failed and it is still there.
fn remount(ctx: &Ctx<'_>, dir: &str) -> Result<(), RaceError> {
    let (fs, dev) = ctx.mount;
    let mounted = std::fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(dir)))
        .unwrap_or(false);
    if mounted {
        return Ok(());
    }
    let out = std::process::Command::new("mount")
        .args(["-t", fs, "-o", "dax", dev, dir])
        .output()
        .map_err(RaceError::MountSpawn)?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(RaceError::Remount { dev: dev.into(), dir: dir.into(), stderr })
    }
}

/// The xfstests generic/503 pattern: an O_DIRECT read from a non-DAX block device into a DAX mapping (the
/// block layer pins the DAX pages for the I/O) races truncate of the mapped file. No driver pins.
fn odirect(ctx: &Ctx<'_>, dir: &str, raw: Option<&str>) -> Result<(), RaceError> {
    let rdev = RawDev::open(raw)?;
    let name = format!("dio-{}", ctx.run);
    let len = 4 * PAGE;
    let res = (|| {
        let f = TFile::create(dir, &name, len)?;
        let map = map_file(f.fd, len)?;
        map.touch();
        let pfn = pfn_of(ctx.dev, &map).unwrap_or(0);
        // The address only: the kernel, not this program, touches the mapping from the reader thread.
        let buf = map.addr();
        std::thread::scope(|s| {
            s.spawn(|| {
                ctx.place(0);
                ctx.sync(0, BEFORE);
                ctx.event(code::TRUNCATE_START, 0, pfn, 0);
                let e = f.truncate(0).err().unwrap_or(0);
                ctx.event(code::TRUNCATE_RETURNED, 0, pfn, e as u16);
                ctx.sync(0, AFTER);
            });
            s.spawn(|| {
                ctx.place(1);
                ctx.sync(1, BEFORE);
                // SAFETY: buf is the start of `map`, a live writable mapping of `len` bytes until the
                // scope ends.
                let what = unsafe { rdev.read_into(buf, len) };
                note(ctx.run, &format!("O_DIRECT read into the DAX mapping: {what}"));
                ctx.sync(1, AFTER);
            });
        });
        Ok::<(), RaceError>(())
    })();
    drop(rdev);
    remove(&[format!("{dir}/{name}")]);
    res
}

/// vmsplice keeps a reference on a DAX page in a pipe after its mapping is gone; thread 0 truncates the
/// file, thread 1 drains the pipe (dropping the reference) once truncate returned, or after 1 s. Before
/// 6.15 truncate does not wait for such a page: it returns at once, frees the block, and the pipe can then
/// read another file's data. Needs no driver, so it runs on any kernel; the guest reports what it saw.
fn vmsplice(ctx: &Ctx<'_>, dir: &str) -> Result<(), RaceError> {
    let name = format!("vs-{}", ctx.run);
    let f = TFile::create(dir, &name, PAGE)?;
    let mut map = map_file(f.fd, PAGE)?;
    // SAFETY: map is a live writable mapping of PAGE bytes.
    unsafe { std::ptr::write_bytes(map.ptr, STALE, PAGE) };
    let pfn = pfn_of(ctx.dev, &map).unwrap_or(0);
    let pipe = Pipe::new()?;
    let result = pipe.splice(&map).map(|()| {
        ctx.event(code::PIN, 1, pfn, 0);
        map.unmap();
        ctx.event(code::MUNMAP, 1, pfn, 0);
        let returned = AtomicBool::new(false);
        let draining = AtomicBool::new(false);
        let made = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                ctx.place(0);
                ctx.sync(0, BEFORE);
                ctx.event(code::TRUNCATE_START, 0, pfn, 0);
                let r = f.truncate(0);
                let early = !draining.load(Ordering::Acquire);
                returned.store(true, Ordering::Release);
                let e = r.err().unwrap_or(0);
                ctx.event(code::TRUNCATE_RETURNED, 0, pfn, e as u16);
                if e == 0 && early {
                    finding(
                        ctx.run,
                        "truncate returned while a vmsplice reference to the page was still held: the kernel did not wait for the page to go idle",
                    );
                }
                if e == 0 {
                    *made.lock().unwrap_or_else(|p| p.into_inner()) = new_files(ctx, 0, dir);
                }
                ctx.sync(0, AFTER);
            });
            s.spawn(|| {
                ctx.place(1);
                ctx.sync(1, BEFORE);
                let t = Instant::now();
                while !returned.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(1) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                draining.store(true, Ordering::Release);
                // Announced before the drain drops the reference, as for UNPIN.
                ctx.event(code::UNPIN, 1, pfn, 0);
                let leaked = pipe.drain();
                if leaked > 0 {
                    finding(
                        ctx.run,
                        &format!("the stale vmsplice reference read {leaked} bytes of a file created after the truncate"),
                    );
                }
                ctx.sync(1, AFTER);
            });
        });
        remove(&made.into_inner().unwrap_or_else(|p| p.into_inner()));
    });
    drop(pipe);
    drop(f);
    remove(&[format!("{dir}/{name}")]);
    result
}
