//! `daxvmm-dax-check poison-load`: a load from a DAX page
//! that is poisoned while a process maps it, which is what makes the platform raise a machine check in
//! user mode. A child process maps the first page of a file, reads it (so the page is mapped before the
//! poison), looks up its physical address in /proc/self/pagemap, poisons it through the NVDIMM bus's
//! error injection (the ioctl ndctl's inject-error uses, without a notification, so no scrub tells the
//! kernel first) and reads it again. How the child ended says what the kernel did: SIGBUS with
//! BUS_MCEERR_AR at the mapped address is what memory failure sends for a machine check on a load. The
//! signal's saved context must point at the load instruction itself, as a machine check raised before
//! the load retired leaves it; a context past it means the platform completed the load first.
//!
//! The child makes system calls only (its files are opened before the fork, the physical address goes
//! back through a pipe), so callers may have other threads.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
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

/// The child's exit statuses.
mod status {
    pub const AR_AT_PAGE: i32 = 2;
    pub const AR_ELSEWHERE: i32 = 3;
    pub const AO: i32 = 4;
    pub const OTHER_BUS: i32 = 5;
    pub const NOT_KILLED: i32 = 6;
    pub const AR_PAST_LOAD: i32 = 8;
    pub const NO_MAP: i32 = 10;
    pub const NO_PAGEMAP: i32 = 11;
    pub const NO_SIGACTION: i32 = 12;
    pub const INJECT_REFUSED: i32 = 13;
    pub const INJECT_FAILED: i32 = 14;
}

/// How the child ended.
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
    /// The second read returned, no signal: the platform raised no machine check.
    NotKilled,
    /// A step before the second read failed; the step.
    SetupFailed(&'static str),
    /// Killed by this signal.
    Signal(i32),
    /// Any other exit status.
    Status(i32),
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
            status::NO_MAP => End::SetupFailed("mmap of the file"),
            status::NO_PAGEMAP => End::SetupFailed("the page's physical address from /proc/self/pagemap"),
            status::NO_SIGACTION => End::SetupFailed("the SIGBUS handler"),
            status::INJECT_REFUSED => End::SetupFailed("the error injection ioctl on /dev/ndctl0"),
            status::INJECT_FAILED => End::SetupFailed("the error injection (the platform's status)"),
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
            End::NotKilled => "read the poisoned page without a signal (no machine check)".into(),
            End::SetupFailed(step) => format!("failed before the load: {step}"),
            End::Signal(s) => format!("was killed by signal {s}"),
            End::Status(s) => format!("exited with status {s}"),
        }
    }
}

/// How the child ended, and the physical address of the page if it got that far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// How the child ended.
    pub end: End,
    /// The page's physical address.
    pub phys: Option<u64>,
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

/// Runs the child on the first page of `path` and says how it ended.
pub fn run(path: &str) -> io::Result<Outcome> {
    let file = OpenOptions::new().read(true).open(path)?;
    let bus = OpenOptions::new().read(true).write(true).open("/dev/ndctl0")?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned here (each File closes its own).
    let (mut from_child, to_parent) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: the child makes only system calls (child() documents it) and ends in _exit, so forking
    // a process with other threads is sound.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above.
        unsafe { libc::_exit(child(file.as_raw_fd(), bus.as_raw_fd(), to_parent.as_raw_fd())) }
    }
    drop(to_parent);
    let mut phys = [0u8; 8];
    let phys = from_child.read_exact(&mut phys).ok().map(|()| u64::from_le_bytes(phys));
    let mut ws = 0;
    // SAFETY: waits for our own child; ws is a live int.
    while unsafe { libc::waitpid(pid, &mut ws, 0) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(Outcome { end: End::from_wait(ws), phys })
}

/// The child: map, read, find the physical page (sent on `report`), poison it, read again (normally the
/// last thing it does). Returns its exit status. System calls only, no allocation or locks.
fn child(file: libc::c_int, bus: libc::c_int, report: libc::c_int) -> i32 {
    // SAFETY: a new shared read-only mapping of one page of an open file; checked below.
    let map = unsafe { libc::mmap(std::ptr::null_mut(), PAGE, libc::PROT_READ, libc::MAP_SHARED, file, 0) };
    if map == libc::MAP_FAILED {
        return status::NO_MAP;
    }
    let addr = map as usize;
    MAPPED.store(addr, Ordering::Relaxed);
    load_noting_ip(addr);
    let Some(phys) = physical(addr) else { return status::NO_PAGEMAP };
    // SAFETY: writes 8 bytes from a live array; a short write only loses the report.
    unsafe { libc::write(report, phys.to_le_bytes().as_ptr().cast(), 8) };
    // SAFETY: a zeroed sigaction is valid; the handler only calls async-signal-safe functions.
    let installed = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigbus as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) == 0
    };
    if !installed {
        return status::NO_SIGACTION;
    }
    if let Err(s) = inject(bus, phys, PAGE as u64) {
        return s;
    }
    load_noting_ip(addr);
    status::NOT_KILLED
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

/// The physical address of the page mapped at `addr`, from /proc/self/pagemap (needs root).
fn physical(addr: usize) -> Option<u64> {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(c"/proc/self/pagemap".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut entry = [0u8; 8];
    // SAFETY: reads 8 bytes into a live array from our own descriptor, then closes it.
    let n = unsafe {
        let n = libc::pread(fd, entry.as_mut_ptr().cast(), 8, (addr / PAGE * 8) as libc::off_t);
        libc::close(fd);
        n
    };
    let entry = u64::from_le_bytes(entry);
    let pfn = entry & ((1 << 55) - 1);
    // Not present, or not root (the PFN reads as 0).
    (n == 8 && entry >> 63 == 1 && pfn != 0).then_some(pfn * PAGE as u64)
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

/// Poisons `[phys, phys + len)` through the NVDIMM bus `bus`'s ARS error injection, no notification;
/// the child's exit status when that fails.
fn inject(bus: libc::c_int, phys: u64, len: u64) -> Result<(), i32> {
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
    if unsafe { libc::ioctl(bus, ND_IOCTL_CALL as _, &mut call) } != 0 {
        return Err(status::INJECT_REFUSED);
    }
    let p = &call.payload;
    if u32::from_le_bytes([p[17], p[18], p[19], p[20]]) != 0 {
        return Err(status::INJECT_FAILED);
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
        let path = std::env::temp_dir().join(format!("poison-load-test-{}", std::process::id()));
        std::fs::write(&path, [7u8; PAGE]).unwrap();
        let file = OpenOptions::new().read(true).write(true).open(&path).unwrap();
        // SAFETY: a new shared mapping of one page of an open file, checked below.
        let map = unsafe {
            libc::mmap(std::ptr::null_mut(), PAGE, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0)
        };
        assert_ne!(map, libc::MAP_FAILED);
        assert_eq!(load_noting_ip(map as usize), 7);
        file.set_len(0).unwrap();
        std::fs::remove_file(&path).unwrap();
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
        assert!(
            matches!(End::from_wait(status::NO_PAGEMAP << 8), End::SetupFailed(s) if s.contains("pagemap"))
        );
        assert!(End::Ao.describe().contains("BUS_MCEERR_AO"));
    }
}
