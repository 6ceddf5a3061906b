//! Guest console output kept in memory for `daxvmm test` and `daxvmm repro`, which parse it after the
//! guest stops. The guest decides how much it writes, so the capture is bounded: it keeps the first
//! [`HEAD`] bytes and the last [`TAIL`] bytes, and says how many it dropped between them. A real plan's
//! console is a few MiB at most (every run's lines and its kernel log), far below the bound; a guest
//! that floods its serial port costs daxvmm at most `HEAD + TAIL` bytes.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use daxvmm_devices::bus::lock;

use crate::console::RawStdout;

/// Bytes kept from the start of the output.
pub const HEAD: usize = 16 << 20;
/// Bytes kept from the end of the output.
pub const TAIL: usize = 16 << 20;

#[derive(Debug, Default)]
struct Kept {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
    head_max: usize,
    tail_max: usize,
}

impl Kept {
    fn push(&mut self, mut buf: &[u8]) {
        let room = self.head_max.saturating_sub(self.head.len());
        let first = buf.len().min(room);
        self.head.extend_from_slice(&buf[..first]);
        buf = &buf[first..];
        if buf.len() > self.tail_max {
            let skip = buf.len() - self.tail_max;
            self.dropped += skip as u64;
            buf = &buf[skip..];
        }
        let over = (self.tail.len() + buf.len()).saturating_sub(self.tail_max);
        if over > 0 {
            if self.dropped == 0 {
                log::warn!(
                    "the guest wrote more than {} MiB to its console: keeping the first {} MiB and the last {} MiB",
                    (self.head_max + self.tail_max) >> 20,
                    self.head_max >> 20,
                    self.tail_max >> 20
                );
            }
            self.tail.drain(..over);
            self.dropped += over as u64;
        }
        self.tail.extend(buf);
    }

    fn text(&self) -> String {
        let mut bytes = self.head.clone();
        if self.dropped > 0 {
            let gap = format!("\n[daxvmm: {} bytes of guest console output dropped here]\n", self.dropped);
            bytes.extend_from_slice(gap.as_bytes());
        }
        bytes.extend(self.tail.iter());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Guest console output kept in memory (bounded, see the module docs) for a caller that parses it, and
/// also shown on stdout when `echo` is set.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    kept: Arc<Mutex<Kept>>,
    echo: bool,
}

impl Capture {
    /// An empty capture with the default bounds.
    pub fn new(echo: bool) -> Self {
        Self::with_bounds(echo, HEAD, TAIL)
    }

    /// An empty capture that keeps `head` bytes from the start and `tail` from the end.
    pub fn with_bounds(echo: bool, head: usize, tail: usize) -> Self {
        let kept = Kept { head_max: head, tail_max: tail, ..Kept::default() };
        Self { kept: Arc::new(Mutex::new(kept)), echo }
    }

    /// What was kept (invalid UTF-8 replaced), with a line saying how much was dropped, if anything.
    pub fn text(&self) -> String {
        lock(&self.kept).text()
    }

    /// Bytes dropped so far.
    pub fn dropped(&self) -> u64 {
        lock(&self.kept).dropped
    }

    /// The serial port's output sink.
    pub fn writer(&self) -> Box<dyn Write + Send> {
        Box::new(self.clone())
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.kept).push(buf);
        if self.echo {
            RawStdout.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut c = Capture::with_bounds(false, 8, 8);
        c.write_all(b"hello ").unwrap_or_default();
        c.write_all(b"world\n").unwrap_or_default();
        assert_eq!(c.text(), "hello world\n");
        assert_eq!(c.dropped(), 0);
    }

    #[test]
    fn a_flood_keeps_the_head_and_the_tail_and_counts_the_rest() {
        let mut c = Capture::with_bounds(false, 4, 6);
        for chunk in [&b"ABCDEFGH"[..], b"1234567890", b"xyz"] {
            c.write_all(chunk).unwrap_or_default();
        }
        // 21 bytes: "ABCD" kept, the last 6 ("890xyz") kept, 11 dropped.
        assert_eq!(c.dropped(), 11);
        assert_eq!(c.text(), "ABCD\n[daxvmm: 11 bytes of guest console output dropped here]\n890xyz");
        // One write larger than the whole tail.
        let mut big = Capture::with_bounds(false, 2, 3);
        big.write_all(b"0123456789").unwrap_or_default();
        assert_eq!((big.dropped(), big.text().ends_with("]\n789")), (5, true));
    }

    #[test]
    fn memory_stays_bounded_whatever_the_guest_writes() {
        let mut c = Capture::with_bounds(false, 1 << 10, 1 << 10);
        let line = [b'x'; 100];
        for _ in 0..100_000 {
            c.write_all(&line).unwrap_or_default();
        }
        let k = lock(&c.kept);
        assert!(k.head.len() == 1 << 10 && k.tail.len() == 1 << 10);
        assert_eq!(k.dropped, 100 * 100_000 - (2 << 10));
    }
}
