//! The host side of the guest console: guest output to stdout unbuffered (prompts without a newline must
//! show) and daxvmm's log lines kept from cutting into it, host stdin to the UART's receive FIFO (a
//! subscriber of the main loop), and the terminal put in raw mode while a TTY is attached (and restored
//! however daxvmm exits).

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use daxvmm_devices::bus::lock;
use daxvmm_devices::serial::SerialDevice;
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

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

/// Host stdin to the guest UART, as a subscriber of the main loop. It reads stdin only while the receive
/// FIFO has room: input the FIFO did not take waits here, stdin is left unwatched, and the serial
/// port's room eventfd (written when the guest empties the FIFO) brings it back. So a guest that stops
/// reading holds back the terminal, never the loop. Gone with the loop at the end of the run.
pub struct StdinInput {
    serial: Arc<Mutex<SerialDevice>>,
    room: EventFd,
    pending: Vec<u8>,
    /// 0, or a pipe in tests.
    fd: RawFd,
}

impl std::fmt::Debug for StdinInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdinInput").field("pending", &self.pending.len()).finish_non_exhaustive()
    }
}

/// Bytes read from stdin at a time (the 16550's FIFO takes 64).
const STDIN_CHUNK: usize = 64;

impl StdinInput {
    /// Input for `serial`'s receive FIFO.
    pub fn new(serial: Arc<Mutex<SerialDevice>>) -> io::Result<Self> {
        Self::from_fd(serial, 0)
    }

    fn from_fd(serial: Arc<Mutex<SerialDevice>>, fd: RawFd) -> io::Result<Self> {
        let room = lock(&serial).room_evt().try_clone()?;
        Ok(Self { serial, room, pending: Vec::new(), fd })
    }

    /// Puts what is pending into the FIFO; true when all of it fitted.
    fn push(&mut self) -> bool {
        let taken = lock(&self.serial).enqueue_input(&self.pending);
        self.pending.drain(..taken);
        self.pending.is_empty()
    }

    fn watch_stdin(&self, ops: &mut EventOps, on: bool) {
        let events = if on { Events::new_raw(self.fd, EventSet::IN) } else { Events::empty_raw(self.fd) };
        if let Err(e) = ops.modify(events) {
            log::warn!("console input: cannot change how stdin is watched: {e}");
        }
    }
}

impl MutEventSubscriber for StdinInput {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.room, EventSet::IN)) {
            log::warn!("console input: {e}; the guest gets no console input");
            return;
        }
        // epoll refuses what cannot be waited on (a regular file, /dev/null): then there is no input.
        if ops.add(Events::new_raw(self.fd, EventSet::IN)).is_err() {
            log::info!("stdin is not a terminal, pipe or socket (a file or /dev/null?): the guest's console gets no input");
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.room.as_raw_fd() {
            let _ = self.room.read();
            if !self.pending.is_empty() && self.push() {
                self.watch_stdin(ops, true);
            }
            return;
        }
        let mut buf = [0u8; STDIN_CHUNK];
        // SAFETY: reads at most buf.len() bytes into `buf`, which lives across the call.
        let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            return;
        }
        if n <= 0 {
            // End of input, or an error that will not go away: stop watching stdin.
            let _ = ops.remove(Events::empty_raw(self.fd));
            return;
        }
        self.pending.extend_from_slice(&buf[..n as usize]);
        if !self.push() {
            self.watch_stdin(ops, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use daxvmm_devices::bus::BusDevice;
    use event_manager::{EventManager, SubscriberOps};

    /// Input beyond the 64-byte FIFO waits, stdin unwatched, until the guest empties the FIFO; then it
    /// goes in, in order, and the end of input unregisters stdin.
    #[test]
    fn stdin_waits_for_room_in_the_fifo() {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors into the array we own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) }, 0);
        // SAFETY: fds[1] is the pipe's write end, ours to own and close.
        let mut writer = unsafe { File::from_raw_fd(fds[1]) };
        let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let serial = Arc::new(Mutex::new(SerialDevice::new(irq, Box::new(io::sink())).expect("serial")));
        let mut em: EventManager<Box<dyn MutEventSubscriber>> = EventManager::new().expect("epoll");
        em.add_subscriber(Box::new(StdinInput::from_fd(serial.clone(), fds[0]).expect("input")));
        let text: Vec<u8> = (0..100u8).map(|i| b'a' + i % 26).collect();
        writer.write_all(&text).expect("write");
        let mut got = Vec::new();
        let drain = |got: &mut Vec<u8>| {
            let mut s = lock(&serial);
            let mut lsr = [0u8];
            loop {
                s.read(5, &mut lsr);
                if lsr[0] & 1 == 0 {
                    break;
                }
                let mut c = [0u8];
                s.read(0, &mut c);
                got.push(c[0]);
            }
        };
        for _ in 0..4 {
            em.run_with_timeout(100).expect("run");
        }
        drain(&mut got);
        assert_eq!(got.len(), 64, "the FIFO took 64 bytes, the rest waits");
        for _ in 0..4 {
            em.run_with_timeout(100).expect("run");
        }
        drain(&mut got);
        assert_eq!(got, text, "the rest came in once the guest emptied the FIFO, in order");
        drop(writer);
        em.run_with_timeout(100).expect("run");
        // After end of input nothing is registered on the pipe: the loop does not spin on it.
        assert_eq!(em.run_with_timeout(50).expect("run"), 0);
        // SAFETY: fds[0] is the pipe's read end, no longer watched; closed once.
        unsafe { libc::close(fds[0]) };
    }

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
