//! The host side of the guest console: guest output to stdout unbuffered (prompts without a newline must
//! show) and daxvmm's log lines kept from cutting into it, host stdin to the UART's receive FIFO, and the
//! terminal put in raw mode while a TTY is attached (and restored however daxvmm exits).

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use daxvmm_devices::bus::lock;
use daxvmm_devices::serial::SerialDevice;
use vmm_sys_util::eventfd::EventFd;

use crate::seccomp::{Filters, ThreadKind};

/// How long a log line may wait for the guest to finish its console line.
const LOG_HOLD: Duration = Duration::from_millis(500);

/// Guest output (stdout) and daxvmm's log (stderr) usually share one terminal or console. A log line
/// written while the guest is in the middle of a line would cut that line in two, and users and tests
/// grep guest lines; so log lines written mid-line wait until the guest ends its line (or for
/// [`LOG_HOLD`], for a prompt that never ends).
#[derive(Debug)]
struct ConsoleMux {
    guest_mid_line: bool,
    held_logs: Vec<u8>,
    held_since: Option<Instant>,
}

static MUX: Mutex<ConsoleMux> = Mutex::new(ConsoleMux::new());

fn mux() -> std::sync::MutexGuard<'static, ConsoleMux> {
    MUX.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ConsoleMux {
    const fn new() -> Self {
        Self { guest_mid_line: false, held_logs: Vec::new(), held_since: None }
    }

    /// Guest bytes go out at once; held log lines follow as soon as the guest's line has ended.
    fn guest_output(&mut self, buf: &[u8], out: &mut dyn Write, log: &mut dyn Write) -> io::Result<usize> {
        let n = out.write(buf)?;
        if let Some(&last) = buf[..n].last() {
            self.guest_mid_line = last != b'\n';
        }
        if !self.guest_mid_line {
            self.release_logs(log);
        }
        Ok(n)
    }

    /// A log record goes out now unless the guest is mid-line (then it waits, at most [`LOG_HOLD`]).
    fn log_output(&mut self, buf: &[u8], log: &mut dyn Write) {
        let since = *self.held_since.get_or_insert_with(Instant::now);
        self.held_logs.extend_from_slice(buf);
        if !self.guest_mid_line || since.elapsed() >= LOG_HOLD {
            self.release_logs(log);
        }
    }

    fn release_logs(&mut self, log: &mut dyn Write) {
        if !self.held_logs.is_empty() {
            let _ = log.write_all(&self.held_logs);
            self.held_logs.clear();
        }
        self.held_since = None;
    }
}

/// Unbuffered fd 1 or 2.
struct Fd(i32);

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: fds 1 and 2 stay open for the life of the process; ManuallyDrop keeps them from being
        // closed.
        let mut f = ManuallyDrop::new(unsafe { File::from_raw_fd(self.0) });
        f.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the guest's console output straight to fd 1 with no buffering.
#[derive(Debug)]
pub struct RawStdout;

impl Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        mux().guest_output(buf, &mut Fd(1), &mut Fd(2))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// daxvmm's log output (to fd 2), kept out of the middle of a guest console line.
#[derive(Debug)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        mux().log_output(buf, &mut Fd(2));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Prints log lines still waiting for the guest's line to end; for the end of a run.
pub fn release_held_logs() {
    let mut m = mux();
    if !m.held_logs.is_empty() && m.guest_mid_line {
        let _ = Fd(2).write_all(b"\n");
    }
    m.release_logs(&mut Fd(2));
}

static SAVED_TERMIOS: OnceLock<libc::termios> = OnceLock::new();

/// Puts stdin in raw mode if it is a terminal; signals (Ctrl-C) still reach daxvmm.
pub fn enter_raw_mode() {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(0) } != 1 {
        return;
    }
    // SAFETY: tcgetattr writes into the zeroed termios we own.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 is a terminal and `t` is valid for writes.
    if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
        return;
    }
    let _ = SAVED_TERMIOS.set(t);
    let mut raw = t;
    raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::IEXTEN);
    raw.c_iflag &= !(libc::ICRNL | libc::IXON);
    // SAFETY: `raw` is a valid termios derived from the current settings.
    unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) };
}

/// Puts the terminal back as it was; safe to call from a signal handler.
pub fn restore_terminal() {
    if let Some(t) = SAVED_TERMIOS.get() {
        // SAFETY: tcsetattr is async-signal-safe and `t` is the termios saved from this terminal.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
    }
}

/// Forwards host stdin to the guest UART until stdin closes or the forwarder is dropped, which stops
/// and joins its thread (so a run leaves no thread behind).
#[derive(Debug)]
pub struct StdinForwarder {
    stop: Arc<EventFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StdinForwarder {
    /// Starts the thread.
    pub fn spawn(serial: Arc<Mutex<SerialDevice>>, filters: Filters) -> io::Result<Self> {
        let stop = Arc::new(EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?);
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new().name("stdin".into()).spawn(move || {
            if let Err(e) = filters.install(ThreadKind::Stdin) {
                log::error!("{e}; the guest gets no console input");
                return;
            }
            let mut buf = [0u8; 64];
            while let Some(n) = read_unless_stopped(&mut buf, &thread_stop) {
                let mut pending = &buf[..n];
                while !pending.is_empty() {
                    let taken = lock(&serial).enqueue_input(pending);
                    pending = &pending[taken..];
                    // The guest has not drained its FIFO yet (typing speed makes this rare); a guest
                    // that stopped never will, so the wait ends when the forwarder is stopped.
                    if taken == 0 && stopped_within(&thread_stop, 2) {
                        return;
                    }
                }
            }
        })?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for StdinForwarder {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `stop` is written within `ms` milliseconds.
fn stopped_within(stop: &EventFd, ms: i32) -> bool {
    let mut fd = libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd that lives across the call.
    unsafe { libc::poll(&mut fd, 1, ms) == 1 }
}

/// Waits until stdin has input or `stop` is written, then reads; `None` at end of input, on an error,
/// or when stopped.
fn read_unless_stopped(buf: &mut [u8], stop: &EventFd) -> Option<usize> {
    loop {
        let mut fds = [
            libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfds that live across the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if r < 0 || fds[1].revents != 0 {
            return None;
        }
        // SAFETY: reads at most buf.len() bytes into `buf`; fd 0 is readable (or at its end).
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return None,
            n if n > 0 => return Some(n as usize),
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_waits_for_the_guest_line_to_end() {
        let (mut m, mut out, mut log) = (ConsoleMux::new(), Vec::new(), Vec::new());
        m.guest_output(b"524", &mut out, &mut log).unwrap_or_default();
        m.log_output(b"daxvmm: RSS 65 MiB\n", &mut log);
        assert!(log.is_empty(), "held while the guest is mid-line");
        m.guest_output(b"288\n", &mut out, &mut log).unwrap_or_default();
        assert_eq!(out, b"524288\n");
        assert_eq!(log, b"daxvmm: RSS 65 MiB\n");
    }

    #[test]
    fn a_log_line_goes_out_at_once_between_guest_lines() {
        let (mut m, mut out, mut log) = (ConsoleMux::new(), Vec::new(), Vec::new());
        m.guest_output(b"line\n", &mut out, &mut log).unwrap_or_default();
        m.log_output(b"daxvmm: x\n", &mut log);
        assert_eq!(log, b"daxvmm: x\n");
    }

    #[test]
    fn a_prompt_does_not_hold_logs_forever() {
        let (mut m, mut out, mut log) = (ConsoleMux::new(), Vec::new(), Vec::new());
        m.guest_output(b"/ # ", &mut out, &mut log).unwrap_or_default();
        m.log_output(b"first\n", &mut log);
        assert!(log.is_empty());
        std::thread::sleep(LOG_HOLD);
        m.log_output(b"second\n", &mut log);
        assert_eq!(log, b"first\nsecond\n");
    }
}
