//! daxvmm's seccomp filters. The main thread installs its own at start ([`install_main`]): every thread
//! inherits it, and it forbids what no VMM needs (programs, the network, other processes, mounts,
//! modules). The threads that act on guest input narrow it further before they first touch the guest
//! ([`Filters::install`]): each vCPU thread (every exit the guest causes is handled there) and each
//! virtio device's worker (requests the guest queued). A system call outside a filter sends SIGSYS, whose
//! handler ([`install_sigsys_handler`]) says which thread kind made which call and ends daxvmm.
//! `--seccomp log` lets such calls through and has the kernel log them (audit type 1326 in the kernel
//! log), `--seccomp off` installs nothing. The lists are in `rules.rs`.

mod rules;

use std::cell::Cell;
use std::sync::Arc;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use thiserror::Error;

use crate::privileges;
use rules::{clone3_unsupported, rules};

/// What `--seccomp` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SeccompMode {
    /// Filter; a forbidden system call ends daxvmm with a message naming it.
    #[default]
    On,
    /// Filter, but let forbidden calls through; the kernel logs each one.
    Log,
    /// No filter.
    Off,
}

/// Which kind of thread a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread: setup, the main loop, teardown. Its filter is inherited by every thread.
    Main,
    /// A vCPU thread: KVM_RUN and the exit handlers.
    Vcpu,
    /// A virtio device's worker: waits for queue notifications, writes pmem back to its file, reads and
    /// writes a disk image.
    Virtio,
}

impl ThreadKind {
    fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Vcpu => "vCPU",
            Self::Virtio => "virtio",
        }
    }
}

/// Errors building or installing a filter.
#[derive(Debug, Error)]
pub enum SeccompError {
    /// The filter did not compile (a bug in daxvmm).
    #[error("cannot build the seccomp filter of the {0} threads: {1}")]
    Build(&'static str, seccompiler::BackendError),
    /// The kernel refused the filter: run with `--seccomp off` on a kernel without seccomp filters.
    #[error("cannot install the seccomp filter of a {0} thread: {1} (is seccomp available? --seccomp off runs without)")]
    Install(&'static str, seccompiler::Error),
    /// A thread could not drop its capabilities.
    #[error("{0}")]
    Privileges(privileges::PrivilegeError),
    /// The SIGSYS handler could not be installed.
    #[error("cannot install the SIGSYS handler for seccomp: {0}")]
    Handler(std::io::Error),
}

/// The compiled filters of one run, shared by its threads; `None` inside for `--seccomp off`.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    vcpu: Option<Arc<BpfProgram>>,
    virtio: Option<Arc<BpfProgram>>,
}

impl Filters {
    /// Compiles the filters `mode` asks for.
    pub fn new(mode: SeccompMode) -> Result<Self, SeccompError> {
        let Some(action) = mismatch_action(mode) else { return Ok(Filters::default()) };
        let build = |kind| compile(kind, action.clone()).map(Arc::new);
        Ok(Filters { vcpu: Some(build(ThreadKind::Vcpu)?), virtio: Some(build(ThreadKind::Virtio)?) })
    }

    /// Drops the calling thread's capabilities (it never needs them) and installs the filter of `kind`
    /// on it (no filter for `--seccomp off`). For the vCPU and virtio threads.
    pub fn install(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        privileges::drop_all_on_this_thread().map_err(SeccompError::Privileges)?;
        let program = match kind {
            ThreadKind::Main => return Ok(()),
            ThreadKind::Vcpu => &self.vcpu,
            ThreadKind::Virtio => &self.virtio,
        };
        let Some(program) = program else { return Ok(()) };
        THREAD_KIND.with(|k| k.set(Some(kind)));
        seccompiler::apply_filter(program).map_err(|e| SeccompError::Install(kind.name(), e))
    }
}

/// Installs the main thread's filter (and the SIGSYS handler) on the calling thread, which every
/// thread it starts later inherits. Call once, at start, before any other thread exists.
pub fn install_main(mode: SeccompMode) -> Result<(), SeccompError> {
    let Some(action) = mismatch_action(mode) else { return Ok(()) };
    install_sigsys_handler()?;
    let main = compile(ThreadKind::Main, action)?;
    let err = |e| SeccompError::Build("main", e);
    let clone3 = build(clone3_unsupported(), SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32))
        .map_err(err)?;
    THREAD_KIND.with(|k| k.set(Some(ThreadKind::Main)));
    // The kernel runs every filter on each call and keeps the strictest answer: the main filter lets
    // clone3 through, this one answers it ENOSYS.
    for program in [&main, &clone3] {
        seccompiler::apply_filter(program).map_err(|e| SeccompError::Install("main", e))?;
    }
    Ok(())
}

/// What a call outside the filter gets; `None` for no filter.
fn mismatch_action(mode: SeccompMode) -> Option<SeccompAction> {
    match mode {
        SeccompMode::Off => None,
        SeccompMode::On => Some(SeccompAction::Trap),
        SeccompMode::Log => Some(SeccompAction::Log),
    }
}

/// The filter of `kind`: its rules allow, anything else gets `mismatch`.
fn compile(kind: ThreadKind, mismatch: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let err = |e| SeccompError::Build(kind.name(), e);
    build(rules(kind).map_err(err)?, mismatch, SeccompAction::Allow).map_err(err)
}

fn build(
    rules: rules::Rules,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, seccompiler::BackendError> {
    SeccompFilter::new(rules, mismatch, matched, arch())?.try_into()
}

fn arch() -> TargetArch {
    TargetArch::x86_64
}

thread_local! {
    /// The kind of filter this thread installed, for the SIGSYS handler's message.
    static THREAD_KIND: Cell<Option<ThreadKind>> = const { Cell::new(None) };
}

/// Exit code when a filter stopped daxvmm (as for any daxvmm error).
const EXIT_SECCOMP: i32 = 1;

/// Installs the SIGSYS handler that reports a forbidden system call and ends daxvmm. Call before
/// starting filtered threads.
pub fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: a zeroed sigaction is valid; the handler is an extern "C" fn of the SA_SIGINFO signature
    // that only writes to stderr and exits, both async-signal-safe.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigsys as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) != 0 {
            return Err(SeccompError::Handler(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The offset of `si_syscall` in x86-64 `siginfo_t` (after si_signo, si_errno, si_code, padding,
/// si_call_addr).
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers; for SIGSYS from seccomp,
    // si_syscall is at SI_SYSCALL_OFFSET.
    let nr = unsafe { info.cast::<u8>().add(SI_SYSCALL_OFFSET).cast::<i32>().read_unaligned() };
    let kind = THREAD_KIND.with(|k| k.get()).map_or("daxvmm", ThreadKind::name);
    let mut msg = Message::default();
    msg.push(b"daxvmm: error: seccomp: a ");
    msg.push(kind.as_bytes());
    msg.push(b" thread made system call ");
    msg.push_number(nr);
    msg.push(b", which its filter does not allow; daxvmm stops. Please report it (--seccomp log lets such calls through and logs them, --seccomp off filters nothing)\n");
    // SAFETY: write and _exit are async-signal-safe; msg outlives the write.
    unsafe {
        libc::write(2, msg.buf.as_ptr().cast(), msg.len);
        libc::_exit(EXIT_SECCOMP);
    }
}

/// A message built without allocating (in a signal handler).
struct Message {
    buf: [u8; 320],
    len: usize,
}

impl Default for Message {
    fn default() -> Self {
        Message { buf: [0; 320], len: 0 }
    }
}

impl Message {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_number(&mut self, n: i32) {
        let mut digits = [0u8; 11];
        let mut i = digits.len();
        let mut v = n.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if n < 0 {
            self.push(b"-");
        }
        self.push(&digits[i..]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::print_stderr)] // The child processes report on stderr.
mod tests {
    use super::*;

    #[test]
    fn messages_format_numbers_without_allocating() {
        let mut m = Message::default();
        m.push(b"call ");
        m.push_number(41);
        m.push(b" ");
        m.push_number(0);
        m.push(b" ");
        m.push_number(-7);
        assert_eq!(&m.buf[..m.len], b"call 41 0 -7");
    }

    #[test]
    fn every_mode_builds_and_off_builds_nothing() {
        assert!(Filters::new(SeccompMode::On).unwrap().vcpu.is_some());
        assert!(Filters::new(SeccompMode::Log).unwrap().virtio.is_some());
        let off = Filters::new(SeccompMode::Off).unwrap();
        assert!(off.vcpu.is_none() && off.virtio.is_none());
    }

    /// In a child process (this test binary again, running only the test `name` with
    /// `DAXVMM_SECCOMP_CHILD` set): its exit status and stderr. In that child, `None`: the caller then
    /// does the child's part.
    fn in_child(name: &str) -> Option<(std::process::ExitStatus, String)> {
        if std::env::var_os("DAXVMM_SECCOMP_CHILD").is_some() {
            return None;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads", "1"])
            .env("DAXVMM_SECCOMP_CHILD", "1")
            .output()
            .unwrap();
        Some((out.status, String::from_utf8_lossy(&out.stderr).into_owned()))
    }

    #[test]
    fn a_forbidden_call_in_a_vcpu_thread_ends_daxvmm_with_a_message() {
        let Some((status, stderr)) =
            in_child("seccomp::tests::a_forbidden_call_in_a_vcpu_thread_ends_daxvmm_with_a_message")
        else {
            // The child: a vCPU-filtered thread opens a file, which its filter forbids.
            install_sigsys_handler().unwrap();
            let filters = Filters::new(SeccompMode::On).unwrap();
            std::thread::spawn(move || {
                filters.install(ThreadKind::Vcpu).unwrap();
                // Allowed: memory, futexes, clock, write.
                let v: Vec<u8> = vec![1; 1 << 20];
                eprintln!("allowed calls went through ({} bytes)", v.len());
                let _ = std::fs::File::open("/proc/self/status");
                eprintln!("the forbidden call returned");
            })
            .join()
            .unwrap();
            return;
        };
        assert_eq!(status.code(), Some(EXIT_SECCOMP), "{stderr}");
        assert!(stderr.contains("allowed calls went through"), "{stderr}");
        assert!(!stderr.contains("the forbidden call returned"), "{stderr}");
        let openat = libc::SYS_openat.to_string();
        let want =
            format!("daxvmm: error: seccomp: a vCPU thread made system call {openat}, which its filter");
        assert!(stderr.contains(&want), "{stderr}");
    }

    /// The main filter lets a thread start (glibc's clone3 gets ENOSYS and falls back to clone), files
    /// open and a vCPU filter stack on it; a fork, the first step of starting a program, is outside it.
    #[test]
    fn the_main_filter_allows_setup_and_forbids_programs() {
        let Some((status, stderr)) =
            in_child("seccomp::tests::the_main_filter_allows_setup_and_forbids_programs")
        else {
            install_main(SeccompMode::On).unwrap();
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let filters = Filters::new(SeccompMode::On).unwrap();
            let ran = std::thread::spawn(move || filters.install(ThreadKind::Vcpu).is_ok()).join().unwrap();
            eprintln!("setup went through ({} bytes of status, vCPU filter {ran})", status.len());
            // (std::process::Command would fork with every signal blocked, and a blocked SIGSYS from
            // seccomp kills without running the handler: no message to check.)
            // SAFETY: the child, if any, only exits.
            if unsafe { libc::fork() } == 0 {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(0) };
            }
            eprintln!("the program started");
            return;
        };
        assert_eq!(status.code(), Some(EXIT_SECCOMP), "{stderr}");
        assert!(stderr.contains("setup went through") && stderr.contains("vCPU filter true"), "{stderr}");
        assert!(!stderr.contains("the program started"), "{stderr}");
        assert!(stderr.contains("daxvmm: error: seccomp: a main thread made system call "), "{stderr}");
    }

    #[test]
    fn the_main_filter_forbids_the_network() {
        let Some((status, stderr)) = in_child("seccomp::tests::the_main_filter_forbids_the_network") else {
            install_main(SeccompMode::On).unwrap();
            // SAFETY: socket takes integers; the descriptor, if any, is closed by exit.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            eprintln!("socket returned {fd}");
            return;
        };
        assert_eq!(status.code(), Some(EXIT_SECCOMP), "{stderr}");
        let want = format!("a main thread made system call {}, which its filter", libc::SYS_socket);
        assert!(stderr.contains(&want) && !stderr.contains("socket returned"), "{stderr}");
    }

    #[test]
    fn log_mode_lets_the_call_through() {
        let Some((status, stderr)) = in_child("seccomp::tests::log_mode_lets_the_call_through") else {
            // The child: the same call in log mode goes on.
            let filters = Filters::new(SeccompMode::Log).unwrap();
            std::thread::spawn(move || {
                filters.install(ThreadKind::Vcpu).unwrap();
                let opened = std::fs::File::open("/proc/self/status").is_ok();
                eprintln!("open in log mode: {opened}");
            })
            .join()
            .unwrap();
            return;
        };
        assert!(status.success(), "{stderr}");
        assert!(stderr.contains("open in log mode: true"), "{stderr}");
    }
}
