//! The host side of the guest console: guest output to stdout unbuffered (prompts without a newline must
//! show), host stdin to the UART's receive FIFO, and the terminal put in raw mode while a TTY is attached
//! (and restored however daxvmm exits).

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use daxvmm_devices::bus::lock;
use daxvmm_devices::serial::SerialDevice;

/// Writes straight to fd 1 with no buffering.
#[derive(Debug)]
pub struct RawStdout;

impl Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop keeps it from being closed.
        let mut f = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
        f.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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

/// Forwards host stdin to the guest UART until stdin closes.
pub fn spawn_stdin_forwarder(serial: Arc<Mutex<SerialDevice>>) -> io::Result<()> {
    std::thread::Builder::new().name("stdin".into()).spawn(move || {
        let mut buf = [0u8; 64];
        let mut stdin = io::stdin().lock();
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let mut pending = &buf[..n];
            while !pending.is_empty() {
                let taken = lock(&serial).enqueue_input(pending);
                pending = &pending[taken..];
                if taken == 0 {
                    // The guest has not drained its FIFO yet; typing speed makes this rare.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    })?;
    Ok(())
}
