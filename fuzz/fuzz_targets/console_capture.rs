//! The guest console as `daxvmm test` and `daxvmm repro` keep it (`daxvmm::capture::Capture`, the serial
//! port's output sink there; `vmm/src/console.rs` has no parser and writes to the real stdout): arbitrary
//! guest output, any bytes in any chunks, into a capture with small head and tail bounds. It must never
//! panic, and what it keeps must be exactly the first `head` bytes, then (when anything was dropped) the
//! line saying how many, then the last `tail` bytes, with `dropped()` counting the rest.
//!
//! Input: head bound, tail bound (one byte each, below 64), then chunks: a length byte (bit 7: compare
//! with the model after this chunk) and that many bytes.
#![no_main]

use std::io::Write;

use daxvmm::capture::Capture;
use libfuzzer_sys::fuzz_target;

fn expected(all: &[u8], head: usize, tail: usize) -> (String, u64) {
    let h = all.len().min(head);
    let rest = &all[h..];
    let skip = rest.len().saturating_sub(tail);
    let mut bytes = all[..h].to_vec();
    if skip > 0 {
        bytes.extend_from_slice(
            format!("\n[daxvmm: {skip} bytes of guest console output dropped here]\n").as_bytes(),
        );
    }
    bytes.extend_from_slice(&rest[skip..]);
    (String::from_utf8_lossy(&bytes).into_owned(), skip as u64)
}

fuzz_target!(|data: &[u8]| {
    let [head, tail, rest @ ..] = data else { return };
    let mut ops = rest;
    let (head, tail) = (usize::from(head % 64), usize::from(tail % 64));
    let mut c = Capture::with_bounds(false, head, tail);
    let mut all = Vec::new();
    while let Some((&len, rest)) = ops.split_first() {
        let n = usize::from(len & 0x7f).min(rest.len());
        let (chunk, rest) = rest.split_at(n);
        ops = rest;
        assert_eq!(c.write(chunk).ok(), Some(chunk.len()), "a write took less than all of its bytes");
        all.extend_from_slice(chunk);
        if len & 0x80 != 0 {
            let (text, dropped) = expected(&all, head, tail);
            assert_eq!(c.dropped(), dropped, "dropped bytes after {} bytes", all.len());
            assert_eq!(c.text(), text, "kept text after {} bytes", all.len());
        }
    }
    let (text, dropped) = expected(&all, head, tail);
    assert_eq!(c.dropped(), dropped, "dropped bytes");
    assert_eq!(c.text(), text, "kept text");
});
