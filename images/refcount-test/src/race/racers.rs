//! The held races whose pins are not all taken before the run, or whose third thread acts on truncate's
//! wait itself: a pin taken while truncate sleeps (truncate-late-pin), a signal while it waits
//! (truncate-signal), and a pin taken through a PMD fault before a hole punch inside its folio
//! (punch-pmd-subpage). Thread 0 truncates or punches under its kernel hold points; the other threads
//! pin, release or signal. Events, new files and the watchdog are those of the other pinned races
//! (scenarios.rs), so the host's oracle judges them the same way.

use std::sync::Mutex;
use std::time::Duration;

use daxvmm_refcount_test::sys::{ename, map_file, map_file_aligned, Dev, TFile, PAGE, PMD};
use daxvmm_scenarios::{ScenarioId, AFTER, AFTER_RELEASE, BEFORE, BEFORE_RELEASE};

use crate::ctx::{code, finding, note, Ctx};
use crate::error::RaceError;
use crate::files::{pin_file, pin_page, remove, PinnedPage};
use crate::scenarios::{held_device, operate, over, punch, tagged, unpinner, write_and_unpin, Op};
use crate::watchdog::Progress;

/// How long the signalling thread waits for thread 0 to start (only a sleep-based baseline run can
/// start it first; a forced schedule releases thread 0 long before).
const START_WITHIN: Duration = Duration::from_secs(1);

/// truncate-late-pin: a two-page file; thread 1 holds a pin on the second page, on which truncate
/// waits. While truncate sleeps (the wait dropped the filesystem's layout lock) thread 2 pins the first
/// page, which faults it in again; it releases it between its release points, after truncate waited for
/// it too. A kernel that does not scan from the start of the range after a wait frees the first page's
/// block under thread 2's pin. truncate-late-pin-above swaps the pages: the early pin on the first, the
/// late one on the second (a kernel that waits only for the pages its first scan found misses it).
pub fn late_pin(ctx: &Ctx<'_>, dir: &str, id: ScenarioId) -> Result<(), RaceError> {
    let dev = held_device(ctx)?;
    let name = format!("late-{}", ctx.run);
    let len = 2 * PAGE;
    let f = TFile::create(dir, &name, len)?;
    let map = map_file(f.fd, len)?;
    map.touch();
    let (early, late) = if id == ScenarioId::TruncateLatePinAbove { (0, PAGE) } else { (PAGE, 0) };
    let first = pin_page(dev, map.addr() + early, "PIN")?;
    ctx.event(code::PIN, 1, first.pfn, 0);
    // The address only: the kernel, not this program, touches the mapping from thread 2.
    let addr = map.addr() + late;
    let made = Mutex::new(Vec::new());
    let progress = &Progress::default();
    std::thread::scope(|s| {
        s.spawn(|| progress.watch(ctx.run, 2, Op::Truncate.name()));
        s.spawn(|| operate(ctx, progress, Some(id), Op::Truncate, first.pfn, dir, &made, || f.truncate(0)));
        s.spawn(|| unpinner(ctx, dev, progress, Some(id), 1, first));
        // A sleep-based run can pin after truncate removed the page: then there is no pin.
        s.spawn(|| pinner(ctx, dev, progress, id, 2, addr, "late PIN"));
    });
    drop(map);
    drop(f);
    remove(&made.into_inner().unwrap_or_else(|p| p.into_inner()));
    remove(&[format!("{dir}/{name}")]);
    Ok(())
}

/// truncate-signal: thread 1 holds a pin on the file's page; thread 2 signals thread 0 while its
/// truncate waits for that page (a handler without SA_RESTART). Truncate must fail with EINTR and leave
/// the page alone; thread 1 releases it after truncate returned.
pub fn signal(ctx: &Ctx<'_>, dir: &str, id: ScenarioId) -> Result<(), RaceError> {
    pinned_three(ctx, dir, id, Op::Truncate, "sig", |progress, _| {
        if let Err(e) = progress.interrupt(START_WITHIN) {
            note(ctx.run, &format!("could not signal the truncating thread: {}", ename(e)));
        }
    })
}

/// A one-page file `dir/PREFIX-RUN` pinned through the driver: thread 0 does `op` on it (tagged for
/// its kernel points of `id`), thread 1 releases the pin, and thread 2 runs `third` between its sync
/// points, given the watchdog and the address of the file's mapped page.
pub fn pinned_three(
    ctx: &Ctx<'_>,
    dir: &str,
    id: ScenarioId,
    op: Op,
    prefix: &str,
    third: impl FnOnce(&Progress, usize) + Send,
) -> Result<(), RaceError> {
    let dev = held_device(ctx)?;
    let pf = pin_file(dev, dir, &format!("{prefix}-{}", ctx.run), PAGE, PAGE)?;
    ctx.event(code::PIN, 1, pf.pfn, 0);
    let addr = pf.map.addr();
    // pin_file always opens the file; only eviction races close it.
    if let Some(file) = pf.file.as_ref() {
        let pin = PinnedPage { handle: pf.handle, pfn: pf.pfn };
        let p = Pinned { dev, file, len: PAGE, pin, op };
        three_threads(ctx, dir, id, &p, |progress| third(progress, addr));
    }
    remove(std::slice::from_ref(&pf.path));
    Ok(())
}

/// The file of a three-thread race and the driver pin on one of its pages: thread 0 does `op` over its
/// first `len` bytes ([`over`]), thread 1 releases `pin`.
pub struct Pinned<'a> {
    pub dev: &'a Dev,
    pub file: &'a TFile,
    pub len: usize,
    pub pin: PinnedPage,
    pub op: Op,
}

/// Runs thread 0 (`op` on the file, then new files, tagged for its kernel points of `id`), thread 1
/// (writes through the pin and releases it) and thread 2 (`third` between its sync points [`BEFORE`]
/// and [`AFTER`], tagged for its kernel points of `id`, given the watchdog), and returns what `third`
/// returned.
pub fn three_threads<T: Send>(
    ctx: &Ctx<'_>,
    dir: &str,
    id: ScenarioId,
    p: &Pinned<'_>,
    third: impl FnOnce(&Progress) -> T + Send,
) -> T {
    let made = Mutex::new(Vec::new());
    let progress = &Progress::default();
    let out = std::thread::scope(|s| {
        s.spawn(|| progress.watch(ctx.run, 1, p.op.name()));
        s.spawn(|| {
            operate(ctx, progress, Some(id), p.op, p.pin.pfn, dir, &made, || over(p.file, p.op, p.len))
        });
        s.spawn(|| unpinner(ctx, p.dev, progress, Some(id), 1, p.pin));
        let third = s.spawn(move || {
            ctx.place(2);
            ctx.sync(2, BEFORE);
            let out = tagged(ctx, Some(id), 2, || third(progress));
            ctx.sync(2, AFTER);
            out
        });
        third.join()
    });
    remove(&made.into_inner().unwrap_or_else(|p| p.into_inner()));
    match out {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A thread that pins the page at `addr` during the run, between its sync points [`BEFORE`] and
/// [`AFTER`] (tagged for its kernel points of `id`: the pin's fault and GUP), then writes through the pin
/// and releases it between [`BEFORE_RELEASE`] and [`AFTER_RELEASE`]. A pin that fails is noted (`what`
/// names it) and the thread passes its points without one.
fn pinner(
    ctx: &Ctx<'_>,
    dev: &Dev,
    progress: &Progress,
    id: ScenarioId,
    thread: u8,
    addr: usize,
    what: &'static str,
) {
    ctx.place(thread);
    ctx.sync(thread, BEFORE);
    let pin = match tagged(ctx, Some(id), thread, || pin_page(dev, addr, what)) {
        Ok(p) => {
            ctx.event(code::PIN, thread, p.pfn, 0);
            Some(p)
        }
        Err(e) => {
            note(ctx.run, &format!("no {what}: {e}"));
            None
        }
    };
    ctx.sync(thread, AFTER);
    ctx.sync(thread, BEFORE_RELEASE);
    if let Some(p) = pin {
        write_and_unpin(ctx, dev, thread, p.handle, p.pfn, true);
    }
    progress.released();
    ctx.sync(thread, AFTER_RELEASE);
}

/// punch-pmd-subpage: a 2 MiB file, mapped 2 MiB aligned and not touched; thread 1 pins its first page,
/// so the pin's fault maps the whole folio with a PMD (hold points pmd-insert, then gup). Thread 0
/// punches the second 4 KiB page: the folio is busy as a whole, so the punch must wait for the pin on
/// another page of it. After the run, 4 KiB write faults on every page of the freed folio (the punched
/// hole breaks the 2 MiB extent, so none can be a PMD fault): each must land where written.
pub fn pmd_subpage(ctx: &Ctx<'_>, dir: &str, id: ScenarioId) -> Result<(), RaceError> {
    let dev = held_device(ctx)?;
    let name = format!("pmd-{}", ctx.run);
    let f = TFile::create(dir, &name, PMD)?;
    let map = map_file_aligned(f.fd, PMD, libc::MAP_SHARED)?;
    let addr = map.addr();
    let made = Mutex::new(Vec::new());
    let progress = &Progress::default();
    std::thread::scope(|s| {
        s.spawn(|| progress.watch(ctx.run, 1, Op::Punch.name()));
        s.spawn(|| pinner(ctx, dev, progress, id, 1, addr, "PMD PIN"));
        // The punch's events name no page: the pin is taken once the threads run (the oracle counts
        // every pin held when the punch returns, whichever page its event names).
        s.spawn(|| operate(ctx, progress, Some(id), Op::Punch, 0, dir, &made, || punch(&f, PAGE, PAGE)));
    });
    drop(map);
    tail_faults(ctx, &f)?;
    drop(f);
    remove(&made.into_inner().unwrap_or_else(|p| p.into_inner()));
    remove(&[format!("{dir}/{name}")]);
    Ok(())
}

/// Writes a distinct byte to every 4 KiB page of `f`'s first 2 MiB through a new shared mapping (one
/// write fault each), then reads each back with pread; a page that does not hold its byte is a finding.
fn tail_faults(ctx: &Ctx<'_>, f: &TFile) -> Result<(), RaceError> {
    let map = map_file_aligned(f.fd, PMD, libc::MAP_SHARED)?;
    let byte = |i: usize| (i % 251) as u8 ^ 0x5a;
    for (i, off) in (0..PMD).step_by(PAGE).enumerate() {
        // SAFETY: off < PMD, inside the mapping, which is PROT_WRITE.
        unsafe { std::ptr::write_volatile((map.addr() as *mut u8).add(off), byte(i)) };
    }
    drop(map);
    let mut bad = Vec::new();
    for (i, off) in (0..PMD).step_by(PAGE).enumerate() {
        let mut b = [0u8; 1];
        // SAFETY: f.fd is open; b is a live 1-byte buffer.
        let n = unsafe { libc::pread(f.fd, b.as_mut_ptr().cast(), 1, off as libc::off_t) };
        if n != 1 || b[0] != byte(i) {
            bad.push(i);
        }
    }
    if !bad.is_empty() {
        let first: Vec<String> = bad.iter().take(8).map(|i| i.to_string()).collect();
        finding(
            ctx.run,
            &format!(
                "after the punch, {} of 512 pages of the freed 2 MiB folio lost a write made through a 4 KiB fault (pages {})",
                bad.len(),
                first.join(", ")
            ),
        );
    }
    Ok(())
}
