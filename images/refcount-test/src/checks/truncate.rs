//! Operations that must wait for a pinned page (dax_break_layout): ftruncate, an ftruncate interrupted
//! by a signal, fallocate(PUNCH_HOLE), and the eviction wait of an unlinked file; and the wait hooks.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{pin, query, CheckError, IoctlResult};
use crate::abi::PIN_WRITE;
use crate::sys::{ename, errno, map_file, Dev, TFile, PAGE};
use crate::tap::{check, diag, Res};

pub const TRUNCATE: &[&str] = &[
    "ftruncate over a pinned page (pinner munmapped first) blocks until the unpin",
    "hooks saw break-layout wait begin and end for the pinned pfn",
    "ftruncate over a pinned page returns EINTR on a signal without SA_RESTART",
    "hooks counted the interrupted wait; ftruncate succeeds after the unpin",
    "fallocate(PUNCH_HOLE) over a pinned page blocks until the unpin",
    "unlink of a closed file with a pinned page waits in eviction (dax_break_layout_final) until the unpin",
    "hooks saw the eviction wait begin and end, not interrupted",
];

extern "C" fn on_alarm(_: libc::c_int) {}

fn block_sigalrm() {
    // SAFETY: plain signal-mask manipulation of the calling thread, through a local, initialised sigset_t
    // (all-zero is a valid sigset_t, and sigemptyset initialises it anyway).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Runs `op` (which should wait for the page pinned as `handle`) while another thread holds the pin.
/// The unpinner waits until the wait_begin hook counter passes `wait_begin` (the operation is seen
/// waiting), then 300 ms more; without hooks it unpins after 3 s. It never unpins before `op`
/// returned otherwise, so an `op` that returns early, even slowly (e.g. while printing a WARN), is
/// caught: it returns while the page is still pinned.
fn blocks_until_unpin(
    d: &Arc<Dev>,
    handle: u64,
    wait_begin: u64,
    what: &str,
    op: impl FnOnce() -> Result<(), i32>,
) -> Res {
    let delay = Duration::from_millis(300);
    let op_done = Arc::new(AtomicBool::new(false));
    let unpin_started = Arc::new(AtomicBool::new(false));
    let unpin_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let t0 = Instant::now();
    let th = {
        let d = d.clone();
        let (op_done, unpin_started, unpin_at) = (op_done.clone(), unpin_started.clone(), unpin_at.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            while !op_done.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(3) {
                if d.stats().map(|s| s.wait_begin > wait_begin).unwrap_or(false) {
                    std::thread::sleep(delay);
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            *unpin_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
            unpin_started.store(true, Ordering::Release);
            d.unpin(handle, 0)
        })
    };
    let r = op();
    let t1 = Instant::now();
    let started = unpin_started.load(Ordering::Acquire);
    op_done.store(true, Ordering::Release);
    let unpinned = th.join().map_err(|_| "unpin thread panicked".to_string())?;
    let ua = unpin_at.lock().unwrap_or_else(PoisonError::into_inner).unwrap_or(t1);
    diag(&format!("{what} took {:?} (unpin after {:?})", t1 - t0, ua - t0));
    match (r, unpinned) {
        (Err(e), _) => Err(format!("{what}: {}", ename(e))),
        (_, Err(e)) => Err(format!("UNPIN from the thread: {}", ename(e))),
        _ if !started => Err(format!("{what} returned after {:?} while the page was still pinned", t1 - t0)),
        _ => check(t1 - t0 >= delay, || format!("{what} returned after only {:?}", t1 - t0)),
    }
}

pub fn truncate(dir: &str, out: &mut Vec<Res>) -> Result<(), CheckError> {
    let d = Arc::new(Dev::open()?);
    // 1. blocks until the unpin
    let f = TFile::create(dir, "trunc-block", 4 * PAGE)?;
    let mut m = map_file(f.fd, 4 * PAGE)?;
    m.touch();
    let p = pin(&d, m.addr() + PAGE, PAGE, PIN_WRITE)?;
    let pfn = query(&d, p.handle, 0)?.pfn;
    m.unmap();
    let st0 = d.stats().ioctl("HOOK_STATS")?;
    out.push(blocks_until_unpin(&d, p.handle, st0.wait_begin, "ftruncate", || f.truncate(0)));
    let st1 = d.stats().ioctl("HOOK_STATS")?;
    out.push(check(
        st1.wait_begin > st0.wait_begin && st1.wait_end > st0.wait_end && st1.last_wait_pfn == pfn,
        || format!("before {st0:?}, after {st1:?}, pinned pfn {pfn:#x}"),
    ));

    // 2. EINTR (the mapping stays: dax_break_layout unmaps it itself before waiting)
    let f = TFile::create(dir, "trunc-eintr", 4 * PAGE)?;
    let m = map_file(f.fd, 4 * PAGE)?;
    m.touch();
    let p = pin(&d, m.addr(), PAGE, PIN_WRITE)?;
    // SAFETY: installs an empty (async-signal-safe) handler for SIGALRM; sa_flags 0 means no SA_RESTART.
    // All-zero is a valid sigaction, and `sa` lives across the call.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
    }
    // A watchdog unpins after 5 s if the signal did not end the wait, so a failure cannot hang the run.
    let done = Arc::new(AtomicBool::new(false));
    let wd = {
        let (d, done, h) = (d.clone(), done.clone(), p.handle);
        std::thread::spawn(move || {
            block_sigalrm();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if done.load(Ordering::Acquire) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.unpin(h, 0);
            true
        })
    };
    let st0 = d.stats().ioctl("HOOK_STATS")?;
    let it = libc::itimerval {
        it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
        it_value: libc::timeval { tv_sec: 0, tv_usec: 250_000 },
    };
    let t0 = Instant::now();
    // SAFETY: a one-shot real-time timer; setitimer only reads `it`, which lives across the call.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) };
    let r = f.truncate(0);
    let el = t0.elapsed();
    diag(&format!("interrupted ftruncate took {el:?}"));
    out.push(match r {
        Err(libc::EINTR) => check(el >= Duration::from_millis(200), || format!("EINTR after only {el:?}")),
        Err(e) => Err(format!("ftruncate: {} after {el:?}", ename(e))),
        Ok(()) => Err(format!("ftruncate succeeded after {el:?} while the page was pinned")),
    });
    let st1 = d.stats().ioctl("HOOK_STATS")?;
    let unpin = d.unpin(p.handle, 0);
    done.store(true, Ordering::Release);
    let watchdog_fired = wd.join().unwrap_or(true);
    let t0 = Instant::now();
    let r2 = f.truncate(0);
    let el2 = t0.elapsed();
    out.push(if watchdog_fired {
        Err("the watchdog had to unpin (the wait was not interrupted)".into())
    } else if let Err(e) = unpin {
        Err(format!("UNPIN: {}", ename(e)))
    } else if let Err(e) = r2 {
        Err(format!("ftruncate after the unpin: {}", ename(e)))
    } else {
        check(st1.wait_interrupted > st0.wait_interrupted && el2 < Duration::from_secs(2), || {
            format!(
                "wait_interrupted {} -> {}; second ftruncate took {el2:?}",
                st0.wait_interrupted, st1.wait_interrupted
            )
        })
    });
    drop(m);

    // 3. punch hole
    let f = TFile::create(dir, "punch", 4 * PAGE)?;
    let mut m = map_file(f.fd, 4 * PAGE)?;
    m.touch();
    let p = pin(&d, m.addr() + 2 * PAGE, PAGE, PIN_WRITE)?;
    m.unmap();
    let st0 = d.stats().ioctl("HOOK_STATS")?;
    out.push(blocks_until_unpin(&d, p.handle, st0.wait_begin, "fallocate(PUNCH_HOLE)", || {
        // SAFETY: f.fd is our open descriptor; fallocate touches no memory of ours.
        let rc = unsafe {
            libc::fallocate(
                f.fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                4 * PAGE as libc::off_t,
            )
        };
        if rc != 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }));
    drop(f);

    // 4. eviction: the last reference to an unlinked inode goes away in unlink(), which then waits
    // uninterruptibly in dax_break_layout_final() for the pinned page.
    let path = format!("{dir}/evict");
    let f = TFile::create(dir, "evict", 4 * PAGE)?;
    let mut m = map_file(f.fd, 4 * PAGE)?;
    m.touch();
    let p = pin(&d, m.addr(), PAGE, PIN_WRITE)?;
    let pfn = query(&d, p.handle, 0)?.pfn;
    m.unmap();
    drop(f);
    let st0 = d.stats().ioctl("HOOK_STATS")?;
    let c = CString::new(path).map_err(CheckError::UnlinkPath)?;
    out.push(blocks_until_unpin(&d, p.handle, st0.wait_begin, "unlink", || {
        // SAFETY: c is NUL-terminated and outlives the call.
        if unsafe { libc::unlink(c.as_ptr()) } != 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }));
    let st1 = d.stats().ioctl("HOOK_STATS")?;
    out.push(check(
        st1.wait_begin > st0.wait_begin
            && st1.wait_end > st0.wait_end
            && st1.wait_interrupted == st0.wait_interrupted
            && st1.last_wait_pfn == pfn,
        || format!("before {st0:?}, after {st1:?}, pinned pfn {pfn:#x}"),
    ));
    Ok(())
}
