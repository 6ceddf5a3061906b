//! `daxvmm-dax-check poison-load`: a load from a DAX page that is poisoned while a process maps it,
//! which is what makes the platform raise a machine check in user mode. A child process maps the first
//! page of a file, reads it (so the page is mapped before the poison), looks up its physical address in
//! /proc/self/pagemap, poisons it through the NVDIMM bus's error injection (the ioctl ndctl's
//! inject-error uses, without a notification, so no scrub tells the kernel first) and reads it again.
//! How the child ended says what the kernel did: SIGBUS with BUS_MCEERR_AR at the mapped address is
//! what memory failure sends for a machine check on a load. The signal's saved context must point at
//! the load instruction itself, as a machine check raised before the load retired leaves it; a context
//! past it means the platform completed the load first.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};

const PAGE: usize = 4096;
/// `si_code` of a SIGBUS for a machine check that must be handled now, and one that may wait.
const BUS_MCEERR_AR: i32 = 4;
const BUS_MCEERR_AO: i32 = 5;
/// `_IOWR('N', ND_CMD_CALL = 10, struct nd_cmd_pkg)`: the pass-through of a bus or DIMM function.
const ND_IOCTL_CALL: u32 = 0xc040_4e0a;
/// NVDIMM_BUS_FAMILY_NFIT and its function 7, ARS error inject (include/uapi/linux/ndctl.h).
const FAMILY_NFIT: u64 = 0;
const ARS_INJECT_SET: u64 = 7;

/// How the child ended (its exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// SIGBUS BUS_MCEERR_AR at the mapped page, the context at the load instruction: a machine check on
    /// the load, handled by memory failure.
    ArAtPage,
    /// As [`End::ArAtPage`], but the context's instruction pointer is not the load's.
    ArPastLoad,
    /// SIGBUS BUS_MCEERR_AR at another address.
    ArElsewhere,
    /// SIGBUS BUS_MCEERR_AO.
    Ao,
    /// SIGBUS with another code.
    OtherBus,
    /// The second read returned, no signal: the poison was not noticed.
    NotKilled,
    /// A step before the second read failed (the child said which on stderr).
    SetupFailed,
    /// Killed by this signal.
    Signal(i32),
    /// Any other exit status.
    Status(i32),
}

mod status {
    pub const AR_AT_PAGE: i32 = 2;
    pub const AR_ELSEWHERE: i32 = 3;
    pub const AO: i32 = 4;
    pub const OTHER_BUS: i32 = 5;
    pub const NOT_KILLED: i32 = 6;
    pub const SETUP_FAILED: i32 = 7;
    pub const AR_PAST_LOAD: i32 = 8;
}

impl End {
    fn from_wait(ws: i32) -> End {
        if libc::WIFSIGNALED(ws) {
            return End::Signal(libc::WTERMSIG(ws));
        }
        match libc::WEXITSTATUS(ws) {
            status::AR_AT_PAGE => End::ArAtPage,
            status::AR_PAST_LOAD => End::ArPastLoad,
            status::AR_ELSEWHERE => End::ArElsewhere,
            status::AO => End::Ao,
            status::OTHER_BUS => End::OtherBus,
            status::NOT_KILLED => End::NotKilled,
            status::SETUP_FAILED => End::SetupFailed,
            s => End::Status(s),
        }
    }

    /// What happened, as a sentence tail.
    pub fn describe(self) -> String {
        match self {
            End::ArAtPage => {
                "died of SIGBUS BUS_MCEERR_AR at the mapped page, its context at the load".into()
            }
            End::ArPastLoad => {
                "got SIGBUS BUS_MCEERR_AR at the mapped page, but its context is not at the load instruction"
                    .into()
            }
            End::ArElsewhere => "got SIGBUS BUS_MCEERR_AR at another address".into(),
            End::Ao => "got SIGBUS BUS_MCEERR_AO, not BUS_MCEERR_AR".into(),
            End::OtherBus => "got SIGBUS with a code other than a machine check's".into(),
            End::NotKilled => "read the poisoned page without a signal".into(),
            End::SetupFailed => "failed before the load (see above)".into(),
            End::Signal(s) => format!("was killed by signal {s}"),
            End::Status(s) => format!("exited with status {s}"),
        }
    }
}

/// The mapped address the child's SIGBUS handler compares with.
static MAPPED: AtomicUsize = AtomicUsize::new(0);
/// The address of the load instruction, stored by the load's own code just before it.
static LOAD_IP: AtomicUsize = AtomicUsize::new(0);

/// Whether the signal context `context` (an SA_SIGINFO handler's third argument) is at the load of
/// [`load_noting_ip`].
///
/// # Safety
/// `context` must be the ucontext the kernel passed to the handler.
unsafe fn at_load(context: *mut libc::c_void) -> bool {
    // SAFETY: the caller passes the kernel's ucontext.
    let ip = unsafe { (*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize] };
    ip as usize == LOAD_IP.load(Ordering::Relaxed)
}

extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo (si_addr is valid for SIGBUS) and
    // its ucontext.
    let (code, at, at_load) = unsafe { ((*info).si_code, (*info).si_addr() as usize, at_load(context)) };
    let s = match code {
        BUS_MCEERR_AR if at == MAPPED.load(Ordering::Relaxed) && at_load => status::AR_AT_PAGE,
        BUS_MCEERR_AR if at == MAPPED.load(Ordering::Relaxed) => status::AR_PAST_LOAD,
        BUS_MCEERR_AR => status::AR_ELSEWHERE,
        BUS_MCEERR_AO => status::AO,
        _ => status::OTHER_BUS,
    };
    // SAFETY: _exit is async-signal-safe and ends the child here.
    unsafe { libc::_exit(s) }
}

/// Runs the child on `path` and says how it ended; the child prints the page's physical address.
pub fn run(path: &str) -> io::Result<End> {
    // SAFETY: fork in a single-threaded program; the child only runs `child` and exits.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let s = match child(path) {
                Ok(()) => status::NOT_KILLED,
                Err(e) => {
                    let _ = writeln!(io::stderr(), "poison-load: {e}");
                    status::SETUP_FAILED
                }
            };
            // SAFETY: ends the child without running the parent's atexit handlers twice.
            unsafe { libc::_exit(s) }
        }
        pid => {
            let mut ws = 0;
            // SAFETY: waits for our own child; ws is a live int.
            if unsafe { libc::waitpid(pid, &mut ws, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(End::from_wait(ws))
        }
    }
}

/// The child: map, read, find the physical page, poison it, read again (normally the last thing).
fn child(path: &str) -> io::Result<()> {
    let file = OpenOptions::new().read(true).open(path)?;
    // SAFETY: a new shared read-only mapping of one page of an open file; checked below.
    let map = unsafe {
        libc::mmap(std::ptr::null_mut(), PAGE, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0)
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let addr = map as usize;
    MAPPED.store(addr, Ordering::Relaxed);
    // SAFETY: the page is mapped readable (above); the load faults it in.
    let first = unsafe { std::ptr::read_volatile(addr as *const u8) };
    let phys = physical(addr)?;
    let mut out = io::stdout();
    writeln!(
        out,
        "poison-load: {path}: page at physical {phys:#x} (pfn {:#x}), first byte {first:#04x}",
        phys >> 12
    )?;
    out.flush()?;
    let mut act: libc::sigaction = unsafe_zeroed();
    act.sa_sigaction = on_sigbus as *const () as usize;
    act.sa_flags = libc::SA_SIGINFO;
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    if unsafe { libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    inject(phys, PAGE as u64)?;
    let again = load_noting_ip(addr);
    writeln!(out, "poison-load: the second read returned {again:#04x}")?;
    Ok(())
}

/// Loads the byte at `addr` (a readable mapping) with one instruction, whose address goes to [`LOAD_IP`]
/// first.
fn load_noting_ip(addr: usize) -> u8 {
    let value: u8;
    // SAFETY: stores one word into LOAD_IP (a static atomic, so the plain store is a relaxed atomic
    // store) and loads one byte from `addr`, which the caller has mapped readable.
    unsafe {
        std::arch::asm!(
            "lea {ip}, [rip + 2f]",
            "mov qword ptr [{slot}], {ip}",
            "2:",
            "mov {value}, byte ptr [{addr}]",
            ip = out(reg) _,
            slot = in(reg) LOAD_IP.as_ptr(),
            addr = in(reg) addr,
            value = out(reg_byte) value,
            options(nostack),
        );
    }
    value
}

fn unsafe_zeroed() -> libc::sigaction {
    // SAFETY: sigaction is plain data for which all zeroes is valid (no handler, empty mask).
    unsafe { std::mem::zeroed() }
}

/// The physical address of the page mapped at `addr`, from /proc/self/pagemap (needs root).
fn physical(addr: usize) -> io::Result<u64> {
    let pagemap = OpenOptions::new().read(true).open("/proc/self/pagemap")?;
    let mut entry = [0u8; 8];
    pagemap.read_exact_at(&mut entry, (addr / PAGE * 8) as u64)?;
    let entry = u64::from_le_bytes(entry);
    let pfn = entry & ((1 << 55) - 1);
    if entry >> 63 == 0 || pfn == 0 {
        return Err(io::Error::other("pagemap shows no physical page (not present, or not root)"));
    }
    Ok(pfn * PAGE as u64)
}

/// `struct nd_cmd_pkg` with the payload of `struct nd_cmd_ars_err_inj` (packed: address, length,
/// options u8, then the status u32 the platform writes back).
#[repr(C)]
struct InjectCall {
    family: u64,
    command: u64,
    size_in: u32,
    size_out: u32,
    reserved: [u32; 9],
    fw_size: u32,
    payload: [u8; 24],
}

/// Poisons `[phys, phys + len)` through the first NVDIMM bus's ARS error injection, no notification.
fn inject(phys: u64, len: u64) -> io::Result<()> {
    let bus = OpenOptions::new().read(true).write(true).open("/dev/ndctl0")?;
    let mut payload = [0u8; 24];
    payload[..8].copy_from_slice(&phys.to_le_bytes());
    payload[8..16].copy_from_slice(&len.to_le_bytes());
    let mut call = InjectCall {
        family: FAMILY_NFIT,
        command: ARS_INJECT_SET,
        size_in: 17,
        size_out: 4,
        reserved: [0; 9],
        fw_size: 0,
        payload,
    };
    // SAFETY: the ioctl reads the header and size_in + size_out payload bytes, all inside `call`.
    if unsafe { libc::ioctl(bus.as_raw_fd(), ND_IOCTL_CALL as _, &mut call) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("error injection at {phys:#x}: {e}")));
    }
    let status = u32::from_le_bytes([call.payload[17], call.payload[18], call.payload[19], call.payload[20]]);
    if status != 0 {
        return Err(io::Error::other(format!(
            "error injection at {phys:#x}: the platform returned status {status:#x}"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_call_has_the_kernels_layout() {
        assert_eq!(std::mem::offset_of!(InjectCall, payload), 64, "sizeof(struct nd_cmd_pkg)");
        let size = (ND_IOCTL_CALL >> 16) & 0x3fff;
        assert_eq!(size, 64, "the ioctl number encodes the header's size");
        assert_eq!((ND_IOCTL_CALL >> 8) & 0xff, u32::from(b'N'));
    }

    extern "C" fn exit_if_at_load(_: libc::c_int, _: *mut libc::siginfo_t, context: *mut libc::c_void) {
        // SAFETY: the kernel's ucontext; _exit is async-signal-safe.
        unsafe { libc::_exit(if at_load(context) { 0 } else { 1 }) }
    }

    /// A SIGBUS on the load (a mapping past the end of a truncated file) has its context at the
    /// instruction [`load_noting_ip`] noted: the label marks the load itself.
    #[test]
    fn the_noted_address_is_the_faulting_load() {
        let dir = std::env::temp_dir().join(format!("poison-load-test-{}", std::process::id()));
        std::fs::write(&dir, [7u8; PAGE]).unwrap();
        let file = OpenOptions::new().read(true).write(true).open(&dir).unwrap();
        // SAFETY: a new shared mapping of one page of an open file, checked below.
        let map = unsafe {
            libc::mmap(std::ptr::null_mut(), PAGE, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0)
        };
        assert_ne!(map, libc::MAP_FAILED);
        assert_eq!(load_noting_ip(map as usize), 7);
        file.set_len(0).unwrap();
        std::fs::remove_file(&dir).unwrap();
        // SAFETY: the child only installs a handler and loads; both end in _exit.
        match unsafe { libc::fork() } {
            // SAFETY: a zeroed sigaction is valid; the handler only calls _exit; `map` is still mapped
            // (its load faults because the file is empty now).
            0 => unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = exit_if_at_load as *const () as usize;
                act.sa_flags = libc::SA_SIGINFO;
                libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut());
                load_noting_ip(map as usize);
                libc::_exit(2)
            },
            pid => {
                let mut ws = 0;
                // SAFETY: our child; ws is a live int.
                assert_eq!(unsafe { libc::waitpid(pid, &mut ws, 0) }, pid);
                assert!(libc::WIFEXITED(ws), "the child died of a signal: {ws:#x}");
                assert_eq!(libc::WEXITSTATUS(ws), 0, "1: SIGBUS elsewhere than the load; 2: no SIGBUS");
            }
        }
    }

    #[test]
    fn exit_statuses_map_to_ends() {
        assert_eq!(End::from_wait(status::AR_AT_PAGE << 8), End::ArAtPage);
        assert_eq!(End::from_wait(status::NOT_KILLED << 8), End::NotKilled);
        assert_eq!(End::from_wait(libc::SIGSEGV), End::Signal(libc::SIGSEGV));
        assert!(End::Ao.describe().contains("BUS_MCEERR_AO"));
    }
}
