//! The held races whose third thread changes the file's mappings while truncate or a hole punch sleeps
//! on a pinned page (the wait drops the filesystem's layout lock, so faults, fork and mremap can run):
//! punch-late-fault (a write fault), truncate-fork-cow (fork of a private mapping, then a copy-on-write
//! in the child) and truncate-mremap-pmd (a PMD fault, then mremap of that mapping). Thread 0 truncates
//! or punches the file under its kernel hold points, thread 1 releases the pin, and after the run the
//! main thread checks through the changed mapping that nothing still maps a freed block.

use daxvmm_refcount_test::sys::{
    ename, errno, kernel_copy_byte, map_file, map_file_aligned, mmap_at, Dev, Map, TFile, PAGE, PMD,
};
use daxvmm_scenarios::{ScenarioId, MARKER_FAULT_TARGET};

use crate::ctx::{code, finding, note, Ctx};
use crate::error::RaceError;
use crate::files::{pfn_at, pin_file, pin_page, remove, PinnedPage};
use crate::racers::{three_threads, Pinned};
use crate::scenarios::{held_device, Op};

/// What a file's pages hold before the run (`Map::touch`).
const TOUCHED: u8 = 0x5a;
/// What the third thread writes inside the wait.
const INSIDE: u8 = 0xa7;
/// What is written through the mapping after the run.
const AFTER_RUN: u8 = 0xc3;

/// Tells the host which page thread 2 will fault in (its hold is on that page, not on the pinned one).
fn announce_target(ctx: &Ctx<'_>, dev: &Dev, addr: usize) {
    match pfn_at(dev, addr) {
        Some(pfn) => ctx.event(code::MARKER, 2, pfn, MARKER_FAULT_TARGET),
        None => note(ctx.run, "could not read the pfn of the page the run faults in"),
    }
}

/// After the run: gives `f` its `len` bytes back (a truncated file), writes [`AFTER_RUN`] through
/// `map` at `offset` (which maps file offset `base + offset`) and reads it back with pread. A mapping
/// the operation left in place would send the write to the freed block, not to the file: a finding
/// (`what` names the mapping).
fn write_reaches_file(
    ctx: &Ctx<'_>,
    f: &TFile,
    len: usize,
    (map, base): (&Map, usize),
    offset: usize,
    what: &str,
) {
    if !regrow(ctx, f, len) {
        return;
    }
    // SAFETY: offset < map.len, inside a live writable mapping of ours.
    unsafe { std::ptr::write_volatile(map.ptr.add(offset), AFTER_RUN) };
    let mut b = [0u8; 1];
    // SAFETY: f.fd is open; b is a live 1-byte buffer.
    let n = unsafe { libc::pread(f.fd, b.as_mut_ptr().cast(), 1, (base + offset) as libc::off_t) };
    if n != 1 || b[0] != AFTER_RUN {
        let read = if n == 1 { format!("{:#04x}", b[0]) } else { format!("{n} bytes") };
        finding(
            ctx.run,
            &format!("after the run, a write of {AFTER_RUN:#04x} through {what} did not reach the file (pread read {read})"),
        );
    }
}

/// Gives the truncated or punched file `f` its `len` bytes back (a hole), for a check through a
/// mapping; false (noted) when it cannot.
fn regrow(ctx: &Ctx<'_>, f: &TFile, len: usize) -> bool {
    match f.truncate(len) {
        Ok(()) => true,
        Err(e) => {
            note(ctx.run, &format!("could not extend the file again: {}", ename(e)));
            false
        }
    }
}

/// After truncate-fork-cow's run: gives `f` its `len` bytes back (a hole) and reads the first page
/// through the parent's private mapping, which never copied it: the read must fault the new hole in
/// (zeros). The bytes from before the run mean the mapping of the freed block outlived the truncate.
fn reads_the_hole(ctx: &Ctx<'_>, f: &TFile, len: usize, private: &Map) {
    if !regrow(ctx, f, len) {
        return;
    }
    let b = private.byte(0);
    if b != 0 {
        finding(
            ctx.run,
            &format!("after the truncate, the private mapping's never-copied page reads {b:#04x}, not the new hole's zeros: its mapping of the freed block outlived the truncate"),
        );
    }
}

/// punch-late-fault: a two-page file, both pages mapped; thread 1 holds a pin on the second page, so the
/// punch of both pages sleeps on it. While it sleeps thread 2 writes to the first page through the
/// mapping, which faults it in again (held where the fault inserts the PTE); the pin goes, the punch
/// wakes and must take the first page too.
pub fn late_fault(ctx: &Ctx<'_>, dir: &str, id: ScenarioId) -> Result<(), RaceError> {
    let dev = held_device(ctx)?;
    let t = TwoPages::new(ctx, dev, dir, "fault")?;
    let ptr = t.map.addr();
    let p = Pinned { dev, file: &t.file, len: TwoPages::LEN, pin: t.pin, op: Op::Punch };
    // SAFETY: ptr is the start of `t.map`, a live writable mapping of two pages until after the race.
    three_threads(ctx, dir, id, &p, |_| unsafe { std::ptr::write_volatile(ptr as *mut u8, INSIDE) });
    write_reaches_file(ctx, &t.file, TwoPages::LEN, (&t.map, 0), 0, "the mapping the fault made");
    Ok(())
}

/// The file of punch-late-fault and truncate-fork-cow: two pages, mapped shared and written, the
/// second pinned through the driver (announced as thread 1's pin), the first announced as the page
/// thread 2 faults in. Removed when dropped.
struct TwoPages {
    path: String,
    map: Map,
    file: TFile,
    pin: PinnedPage,
}

impl TwoPages {
    const LEN: usize = 2 * PAGE;

    fn new(ctx: &Ctx<'_>, dev: &Dev, dir: &str, prefix: &str) -> Result<Self, RaceError> {
        let name = format!("{prefix}-{}", ctx.run);
        let file = TFile::create(dir, &name, Self::LEN)?;
        let map = map_file(file.fd, Self::LEN)?;
        map.touch();
        let pin = pin_page(dev, map.addr() + PAGE, "PIN")?;
        ctx.event(code::PIN, 1, pin.pfn, 0);
        announce_target(ctx, dev, map.addr());
        Ok(TwoPages { path: format!("{dir}/{name}"), map, file, pin })
    }
}

impl Drop for TwoPages {
    fn drop(&mut self) {
        self.map.unmap();
        remove(std::slice::from_ref(&self.path));
    }
}

/// truncate-fork-cow: a two-page file; thread 1 holds a pin on the second page, so truncate sleeps on
/// it. A private mapping of the file has a copy-on-write copy of its second page (so fork copies its page
/// tables). While truncate sleeps thread 2 reads the first page through the private mapping (held where
/// the fault maps the DAX page) and forks: the child inherits that mapping of the DAX page, must read the
/// file's bytes through it, writes its own (a copy on write) and exits. Truncate wakes after the unpin
/// and must unmap the first page from the private mapping: afterwards it must read the new hole.
pub fn fork_cow(ctx: &Ctx<'_>, dir: &str, id: ScenarioId) -> Result<(), RaceError> {
    let dev = held_device(ctx)?;
    let t = TwoPages::new(ctx, dev, dir, "cow")?;
    let len = TwoPages::LEN;
    let private = mmap_at(0, len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE, t.file.fd)?;
    // SAFETY: PAGE < len, inside the private mapping; the write gives it an anonymous copy of that page.
    unsafe { std::ptr::write_volatile(private.ptr.add(PAGE), INSIDE) };
    let ptr = private.addr();
    let p = Pinned { dev, file: &t.file, len, pin: t.pin, op: Op::Truncate };
    match three_threads(ctx, dir, id, &p, |_| fork_and_cow(ptr)) {
        Ok(0) => {}
        // Without holds the truncate may come first; under the forced schedule the page is inside the
        // file while truncate waits, so EFAULT there is a finding.
        Ok(status) if ctx.sleeps && exited_with(status, CUT_OFF) => note(
            ctx.run,
            "the page was past the end of the file when the run touched it (truncate came first)",
        ),
        Ok(status) => finding(ctx.run, &child_failure(status)),
        Err(e) => note(ctx.run, &format!("fork: {}", ename(e))),
    }
    reads_the_hole(ctx, &t.file, len, &private);
    Ok(())
}

/// Child exit codes of [`fork_and_cow`].
const CHILD_SAW_OTHER_BYTES: i32 = 2;
const CHILD_LOST_ITS_WRITE: i32 = 3;
/// The page was past the end of the file (EFAULT), in the child or already in the parent.
const CUT_OFF: i32 = 4;

fn exited_with(status: i32, code: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == code
}

/// Reads the page at `addr` (a private mapping of the file; the fault maps the DAX page), forks, and
/// waits for the child, which checks the file's bytes through the inherited mapping, writes its own
/// and checks them. Returns the child's wait status.
///
/// The faults go through [`kernel_copy_byte`]: a page the truncate already cut off gives EFAULT
/// ([`CUT_OFF`], as a wait status), not SIGBUS.
fn fork_and_cow(addr: usize) -> Result<i32, i32> {
    if kernel_copy_byte(addr, false, 0).is_err() {
        return Ok(CUT_OFF << 8);
    }
    // SAFETY: the child only copies through pipes and calls _exit, all async-signal-safe; it touches
    // no lock or allocation another thread may hold.
    match unsafe { libc::fork() } {
        -1 => Err(errno()),
        0 => {
            let code = match kernel_copy_byte(addr, false, 0) {
                Err(_) => CUT_OFF,
                Ok(b) if b != TOUCHED => CHILD_SAW_OTHER_BYTES,
                Ok(_) => match kernel_copy_byte(addr, true, INSIDE)
                    .and_then(|_| kernel_copy_byte(addr, false, 0))
                {
                    Err(_) => CUT_OFF,
                    Ok(b) if b == INSIDE => 0,
                    Ok(_) => CHILD_LOST_ITS_WRITE,
                },
            };
            // SAFETY: ends the child without running anything of the parent's.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: pid is our child; status is a live int.
            while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
                if errno() != libc::EINTR {
                    return Err(errno());
                }
            }
            Ok(status)
        }
    }
}

fn child_failure(status: i32) -> String {
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(CHILD_SAW_OTHER_BYTES) => format!(
            "the forked child did not read the file's bytes ({TOUCHED:#04x}) through the mapping it inherited while truncate waited"
        ),
        Some(CHILD_LOST_ITS_WRITE) => "the forked child's copy-on-write of the file's page lost its write".into(),
        Some(CUT_OFF) => "the page the run forks over was past the end of the file (EFAULT) while truncate waited".into(),
        Some(code) => format!("the forked child exited {code}"),
        None => format!("the forked child died (wait status {status:#x})"),
    }
}

/// truncate-mremap-pmd: a 4 MiB file (two 2 MiB folios), its first folio pinned whole through a PMD
/// mapping (thread 1), so truncate sleeps on it. A second, untouched 2 MiB-aligned mapping of the whole
/// file has its second half read while truncate sleeps (a PMD fault of the second folio, held where it
/// inserts the PMD) and moved with mremap to another 2 MiB-aligned address, which moves the PMD itself.
/// Truncate wakes after the unpin and must unmap the moved mapping: afterwards a write through it must
/// reach the file. (The second folio, not the pinned one: a mapping of the folio truncate waits on keeps
/// it busy after the unpin, and nothing wakes truncate to unmap it.)
pub fn mremap_pmd(ctx: &Ctx<'_>, dir: &str, id: ScenarioId) -> Result<(), RaceError> {
    let dev = held_device(ctx)?;
    let name = format!("mremap-{}", ctx.run);
    let len = 2 * PMD;
    let pf = pin_file(dev, dir, &name, len, PMD)?;
    if pf.order != 9 {
        note(
            ctx.run,
            &format!("no PMD mapping (folio order {}): the moved mapping is of small pages", pf.order),
        );
    }
    ctx.event(code::PIN, 1, pf.pfn, 0);
    announce_target(ctx, dev, pf.map.addr() + PMD);
    // pin_file always opens the file; only eviction races close it.
    let Some(f) = pf.file.as_ref() else { return Ok(()) };
    let mut from = map_file_aligned(f.fd, len, libc::MAP_SHARED)?;
    let mut to = map_file_aligned(-1, PMD, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS)?;
    let (src, dst) = (from.addr() + PMD, to.addr());
    let pin = PinnedPage { handle: pf.handle, pfn: pf.pfn };
    let p = Pinned { dev, file: f, len, pin, op: Op::Truncate };
    let moved = three_threads(ctx, dir, id, &p, |_| {
        // Faults the second half of `from` in with a PMD; EFAULT (possible only without holds) when
        // truncate already cut it off, and then the mapping moves unpopulated.
        let _ = kernel_copy_byte(src, false, 0);
        let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
        // SAFETY: moves the second half of our own mapping onto our own placeholder at dst, PMD bytes.
        let r = unsafe { libc::mremap(src as *mut _, PMD, PMD, flags, dst as *mut libc::c_void) };
        if r == libc::MAP_FAILED {
            Err(errno())
        } else {
            Ok(())
        }
    });
    match moved {
        Ok(()) => {
            // Only the first half of `from` is left; the second now lives at dst, in place of `to`'s
            // placeholder.
            from.len = PMD;
            write_reaches_file(ctx, f, len, (&to, PMD), PAGE, "the moved mapping");
        }
        Err(e) => note(ctx.run, &format!("mremap: {}", ename(e))),
    }
    to.unmap();
    from.unmap();
    drop(pf);
    remove(&[format!("{dir}/{name}")]);
    Ok(())
}
