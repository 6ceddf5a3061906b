//! The poison races: memory failure on a page the driver pins, then truncate over it. In
//! truncate-poison-mapped a child process maps the page and poisons it with madvise(MADV_HWPOISON),
//! which enters memory failure at the page's user address as a machine check in user mode does; in
//! truncate-poison-busy the page, mapped by nobody, is poisoned by physical address
//! (`hard_offline_page`) while truncate is held after its busy scan found it. Thread 0 truncates,
//! thread 1 writes through the pin and releases it, thread 2 poisons. The host's oracle judges ordering
//! and new files as in the other pinned races; the guest reports what only it sees: how the mapping
//! process ended, and the kernel's memory-failure verdict for the page.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use daxvmm_guest_tools::fs_error::FsErrorWatch;
use daxvmm_refcount_test::sys::{ename, PAGE};
use daxvmm_scenarios::ScenarioId;

use crate::ctx::{code, finding, note, Ctx};
use crate::error::RaceError;
use crate::files::{pin_file, remove, PinnedPage};
use crate::racers::{three_threads, Pinned};
use crate::scenarios::{held_device, Op};

/// `si_code` of a SIGBUS for a machine check that must be handled now (`<asm-generic/siginfo.h>`).
const BUS_MCEERR_AR: i32 = 4;
/// `si_code` of a SIGBUS for a machine check that may be handled later.
const BUS_MCEERR_AO: i32 = 5;

/// Exit statuses of the poisoning child: how it ended.
mod end {
    /// madvise returned 0 and no signal came.
    pub const NOT_KILLED: i32 = 1;
    /// SIGBUS, BUS_MCEERR_AR at the poisoned page's address: what memory failure must do.
    pub const AR_AT_PAGE: i32 = 2;
    /// SIGBUS, BUS_MCEERR_AR at another address.
    pub const AR_ELSEWHERE: i32 = 3;
    /// SIGBUS, BUS_MCEERR_AO.
    pub const AO: i32 = 4;
    /// SIGBUS with another code.
    pub const OTHER_BUS: i32 = 5;
    /// madvise failed: 64 + errno (up to 191).
    pub const MADVISE_FAILED: i32 = 64;
}

/// How long a race waits for the filesystem's error event after memory failure (the kernel reports it
/// from a worker; the generic path sends none, so ext4 waits this long every time).
const FS_ERROR_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The address the child poisons, for its SIGBUS handler (set before the fork).
static POISONED: AtomicUsize = AtomicUsize::new(0);

/// truncate-poison-mapped: a child process maps the pinned page and poisons it; it must die of SIGBUS
/// BUS_MCEERR_AR at that address, and the pin must survive the poison (truncate still waits for it).
pub fn mapped(ctx: &Ctx<'_>, dir: &str, id: ScenarioId) -> Result<(), RaceError> {
    poisoned_race(ctx, dir, id, false, |_, addr| match poison_in_child(addr) {
        Ok(end::AR_AT_PAGE) => note(
            ctx.run,
            "the process mapping the page died of SIGBUS BUS_MCEERR_AR at the address of the page",
        ),
        Ok(status) => {
            finding(ctx.run, &format!("the process that poisoned its mapped page {}", child_end(status)))
        }
        Err(e) => note(ctx.run, &format!("could not start the poisoning process: {}", ename(e))),
    })
}

/// truncate-poison-busy: the unmapped pinned page is poisoned by physical address while truncate is held
/// after its busy scan found it.
pub fn busy(ctx: &Ctx<'_>, dir: &str, id: ScenarioId) -> Result<(), RaceError> {
    poisoned_race(ctx, dir, id, true, |pfn, _| {
        let path = "/sys/devices/system/memory/hard_offline_page";
        match std::fs::write(path, format!("{:#x}", pfn << 12)) {
            Ok(()) => note(ctx.run, "hard_offline_page took the page"),
            Err(e) => finding(ctx.run, &format!("hard_offline_page of the pinned page failed: {e}")),
        }
    })
}

/// A one-page file pinned through the driver (its mapping removed first if `unmap`), raced by thread 0's
/// truncate, thread 1's release of the pin and thread 2's `poison(pfn, address of the mapping)`; then
/// which path handled the poison (xfs's notify_failure reports the lost data as a filesystem error
/// event, the generic path does not) and the kernel's memory-failure verdict for the page, which must be
/// "Recovered".
fn poisoned_race(
    ctx: &Ctx<'_>,
    dir: &str,
    id: ScenarioId,
    unmap: bool,
    poison: impl FnOnce(u64, usize) + Send,
) -> Result<(), RaceError> {
    let dev = held_device(ctx)?;
    let mut pf = pin_file(dev, dir, &format!("poison-{}", ctx.run), PAGE, PAGE)?;
    ctx.event(code::PIN, 1, pf.pfn, 0);
    let (pfn, addr) = (pf.pfn, pf.map.addr());
    if unmap {
        pf.map.unmap();
        ctx.event(code::MUNMAP, 1, pfn, 0);
    }
    let kmsg = Kmsg::open();
    let watch = FsErrorWatch::new(dir);
    if let Some(file) = pf.file.as_ref() {
        let p = Pinned { dev, file, len: PAGE, pin: PinnedPage { handle: pf.handle, pfn }, op: Op::Truncate };
        three_threads(ctx, dir, id, &p, |_| poison(pfn, addr));
    }
    match watch.and_then(|w| w.wait(FS_ERROR_WAIT)) {
        Ok(events) if events.is_empty() => {
            note(ctx.run, "no filesystem error event: the generic memory-failure path handled the poison")
        }
        Ok(events) => note(
            ctx.run,
            &format!(
                "the filesystem reported the lost data (error event, errno {}): its notify_failure handled the poison",
                events[0].error
            ),
        ),
        Err(e) => note(ctx.run, &format!("filesystem error events not watched ({e}): the path is not known")),
    }
    match kmsg.map(|k| verdict(&k.records(), pfn)) {
        Ok(Some(v)) if v == "Recovered" => {
            note(ctx.run, "memory failure: recovery action for dax page: Recovered")
        }
        Ok(Some(v)) => finding(ctx.run, &format!("memory failure on the pinned page: {v}, not Recovered")),
        Ok(None) => finding(ctx.run, "the kernel logged no memory-failure verdict for the poisoned page"),
        Err(e) => note(ctx.run, &format!("/dev/kmsg: {e}; memory-failure verdict not checked")),
    }
    remove(std::slice::from_ref(&pf.path));
    Ok(())
}

/// What the kernel's log says memory failure did with `pfn` (the word after "recovery action for dax
/// page:"), from the log records `records`; the last one counts.
fn verdict(records: &[String], pfn: u64) -> Option<String> {
    let key = format!("{pfn:#x}: recovery action for dax page: ");
    records.iter().rev().find_map(|r| r.split_once(&key).map(|(_, v)| v.trim().to_string()))
}

/// Why the poisoning child's end (exit status `status` of [`poison_in_child`]) is wrong, as a sentence
/// tail.
fn child_end(status: i32) -> String {
    match status {
        end::NOT_KILLED => "was not killed: madvise(MADV_HWPOISON) returned 0 without a signal".into(),
        end::AR_ELSEWHERE => "got SIGBUS BUS_MCEERR_AR at another address than the page's".into(),
        end::AO => "got SIGBUS BUS_MCEERR_AO, not BUS_MCEERR_AR".into(),
        end::OTHER_BUS => "got SIGBUS with a code other than BUS_MCEERR_AR".into(),
        s if s >= 0x100 => format!("was killed by signal {}", s >> 8),
        s if s >= end::MADVISE_FAILED => {
            format!("saw madvise(MADV_HWPOISON) fail with {}", ename(s - end::MADVISE_FAILED))
        }
        s => format!("exited with unexpected status {s}"),
    }
}

/// The child's SIGBUS handler: exits with how the signal describes the poison.
extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo; si_addr is valid for SIGBUS.
    let (code, at) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let status = match code {
        BUS_MCEERR_AR if at == POISONED.load(Ordering::Relaxed) => end::AR_AT_PAGE,
        BUS_MCEERR_AR => end::AR_ELSEWHERE,
        BUS_MCEERR_AO => end::AO,
        _ => end::OTHER_BUS,
    };
    // SAFETY: _exit is async-signal-safe and ends the child here.
    unsafe { libc::_exit(status) }
}

/// Forks a child that reads the page at `addr` (a shared mapping it inherits) and poisons it with
/// madvise(MADV_HWPOISON); returns the child's exit status ([`end`]), or 0x100 * signal if a signal
/// other than the handled SIGBUS ended it.
fn poison_in_child(addr: usize) -> Result<i32, i32> {
    POISONED.store(addr, Ordering::Relaxed);
    // SAFETY: the child runs only async-signal-safe calls (sigaction, madvise, _exit) and a volatile
    // read of a mapping it inherited, so forking a multi-threaded process is sound.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(daxvmm_refcount_test::sys::errno());
    }
    if pid == 0 {
        // SAFETY: see above; `sa` is a zeroed sigaction with a valid handler; addr is mapped PROT_READ
        // for PAGE bytes in this child (inherited MAP_SHARED mapping).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction =
                on_sigbus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
            std::ptr::read_volatile(addr as *const u8);
            let status = if libc::madvise(addr as *mut libc::c_void, PAGE, libc::MADV_HWPOISON) == 0 {
                end::NOT_KILLED
            } else {
                end::MADVISE_FAILED + (*libc::__errno_location()).min(191)
            };
            libc::_exit(status)
        }
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a live int.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        let e = daxvmm_refcount_test::sys::errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Ok(libc::WTERMSIG(status) << 8)
    }
}

/// The kernel log from the point it was opened on.
struct Kmsg(File);

impl Kmsg {
    /// Opens /dev/kmsg at its end, so [`Kmsg::records`] returns only what comes later.
    fn open() -> std::io::Result<Kmsg> {
        use std::io::{Seek, SeekFrom};
        let mut f =
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg")?;
        f.seek(SeekFrom::End(0))?;
        Ok(Kmsg(f))
    }

    /// The messages logged since [`Kmsg::open`] (one per record, without the record's prefix).
    fn records(mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let msg = rec.split_once(';').map_or(&*rec, |(_, m)| m);
                    out.push(msg.lines().next().unwrap_or("").to_string());
                }
                // Records overwritten before we read them: the next read goes on after them.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_is_the_last_one_for_the_pfn() {
        let recs: Vec<String> = [
            "Memory failure: 0x1234: recovery action for dax page: Failed",
            "Memory failure: 0x99: recovery action for dax page: Failed",
            "Memory failure: 0x1234: recovery action for dax page: Recovered",
            "Injecting memory failure for pfn 0x1234 at process virtual address 0x7f0000",
        ]
        .map(String::from)
        .into();
        assert_eq!(verdict(&recs, 0x1234).as_deref(), Some("Recovered"));
        assert_eq!(verdict(&recs, 0x99).as_deref(), Some("Failed"));
        assert_eq!(verdict(&recs, 0x12), None);
    }

    #[test]
    fn child_ends_read_as_sentences() {
        assert!(child_end(end::NOT_KILLED).contains("was not killed"));
        assert!(child_end(end::MADVISE_FAILED + libc::EPERM).contains("EPERM"));
        assert_eq!(child_end(libc::SIGKILL << 8), "was killed by signal 9");
    }
}
