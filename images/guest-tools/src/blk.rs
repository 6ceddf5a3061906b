//! `daxvmm-dax-check blk DEV MIB [RAND_OPS]`: block I/O throughput of a raw disk for the virtio-blk
//! benchmark (`bench blk`). O_DIRECT, so every request reaches the VMM (no guest page cache), with
//! 4 KiB-aligned buffers as O_DIRECT needs. Over the first MIB MiB of DEV, in this order: sequential
//! 1 MiB writes, the same writes again (a rewrite), sequential 1 MiB reads, RAND_OPS random 4 KiB
//! writes, RAND_OPS random 4 KiB reads (a seeded PRNG, so both VMMs see the same offsets). Writes go
//! first so that reads read written blocks, not holes of a sparse image. On a fresh sparse image the
//! first pass also measures the host allocating every block; the rewrite measures the request path
//! over blocks that exist, as benchmarks that lay out their file first do. No flush is timed: its cost
//! is the host disk's.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::Instant;

use thiserror::Error;

/// The sequential requests' size.
pub const SEQ: usize = 1 << 20;
/// The random requests' size, and the alignment of buffers and offsets.
pub const BLOCK: usize = 4096;
/// Random requests each way when RAND_OPS is not given.
pub const DEFAULT_RAND_OPS: u64 = 4096;

/// Why the measurement could not be made.
#[derive(Debug, Error)]
pub enum BlkError {
    /// MIB or RAND_OPS was not a positive whole number.
    #[error("bad {what} '{value}': give a positive whole number")]
    Number {
        /// Which argument.
        what: &'static str,
        /// What was given.
        value: String,
    },
    /// The device could not be opened.
    #[error("open {dev} with O_DIRECT: {source} (is it a block device? O_DIRECT needs one)")]
    Open {
        /// The device.
        dev: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// The device is smaller than the span asked for.
    #[error("{dev} has {have} MiB, fewer than the {want} MiB asked for: give a smaller MIB")]
    TooSmall {
        /// The device.
        dev: String,
        /// Its size in MiB.
        have: u64,
        /// MIB.
        want: u64,
    },
    /// A read or write failed or was short.
    #[error("{op} of {len} bytes at offset {offset}: {source}")]
    Io {
        /// pread or pwrite.
        op: &'static str,
        /// The request's size.
        len: usize,
        /// Where.
        offset: u64,
        /// What the kernel said.
        source: io::Error,
    },
    /// The aligned buffer could not be allocated.
    #[error("cannot allocate a {0}-byte aligned buffer")]
    Alloc(usize),
}

/// What `blk` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkArgs {
    /// The block device.
    pub dev: String,
    /// The span measured, from offset 0, in MiB.
    pub mib: u64,
    /// Random requests each way.
    pub rand_ops: u64,
}

impl BlkArgs {
    /// `DEV MIB [RAND_OPS]`; `None` for another number of arguments (a usage error).
    pub fn parse(args: &[&str]) -> Option<Result<BlkArgs, BlkError>> {
        let positive = |what, value: &str| {
            value.parse::<u64>().ok().filter(|&n| n > 0).ok_or(BlkError::Number { what, value: value.into() })
        };
        let (dev, mib, ops) = match args {
            [dev, mib] => (dev, mib, None),
            [dev, mib, ops] => (dev, mib, Some(ops)),
            _ => return None,
        };
        Some((|| {
            Ok(BlkArgs {
                dev: dev.to_string(),
                mib: positive("MIB", mib)?,
                rand_ops: ops.map_or(Ok(DEFAULT_RAND_OPS), |o| positive("RAND_OPS", o))?,
            })
        })())
    }
}

/// splitmix64: tiny, seeded, and good enough to spread offsets; the same seed gives both VMMs the same
/// requests.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A [`BLOCK`]-aligned offset of a whole block inside `span` bytes (at least one block).
    pub fn block_offset(&mut self, span: u64) -> u64 {
        let blocks = (span / BLOCK as u64).max(1);
        (self.next_u64() % blocks) * BLOCK as u64
    }
}

/// The five figures, printed as `blk-bw: seq_read_MBps=.. seq_write_MBps=.. seq_rewrite_MBps=..
/// rand_read_iops=.. rand_write_iops=..`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlkFigures {
    /// Sequential 1 MiB reads, MB/s (10^6 bytes).
    pub seq_read: f64,
    /// Sequential 1 MiB writes, the span's first, MB/s.
    pub seq_write: f64,
    /// The same sequential writes again, over written blocks, MB/s.
    pub seq_rewrite: f64,
    /// Random 4 KiB reads per second.
    pub rand_read: f64,
    /// Random 4 KiB writes per second.
    pub rand_write: f64,
}

impl std::fmt::Display for BlkFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "blk-bw: seq_read_MBps={:.0} seq_write_MBps={:.0} seq_rewrite_MBps={:.0} rand_read_iops={:.0} \
             rand_write_iops={:.0}",
            self.seq_read, self.seq_write, self.seq_rewrite, self.rand_read, self.rand_write
        )
    }
}

/// A zeroed heap buffer aligned to [`BLOCK`], as O_DIRECT wants.
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> Result<AlignedBuf, BlkError> {
        let layout = Layout::from_size_align(len, BLOCK).map_err(|_| BlkError::Alloc(len))?;
        // SAFETY: the layout has a non-zero size (callers pass SEQ or BLOCK).
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(BlkError::Alloc(len));
        }
        Ok(AlignedBuf { ptr, layout })
    }

    fn slice(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: ptr is valid for layout.size() bytes, owned by self, and len is capped to it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len.min(self.layout.size())) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this layout.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

/// Opens `args.dev` with O_DIRECT and measures it.
pub fn run(args: &BlkArgs) -> Result<BlkFigures, BlkError> {
    let open_err = |source| BlkError::Open { dev: args.dev.clone(), source };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&args.dev)
        .map_err(open_err)?;
    let size = f.seek(SeekFrom::End(0)).map_err(open_err)?;
    if size < args.mib << 20 {
        return Err(BlkError::TooSmall { dev: args.dev.clone(), have: size >> 20, want: args.mib });
    }
    measure(&f, args.mib << 20, args.rand_ops)
}

/// The five measurements over the first `span` bytes of `f` (any file: the unit tests use a regular one).
pub fn measure(f: &File, span: u64, rand_ops: u64) -> Result<BlkFigures, BlkError> {
    let mut seq = AlignedBuf::new(SEQ)?;
    let mut block = AlignedBuf::new(BLOCK)?;
    // Not zeros: no layer below may treat the data as a hole.
    seq.slice(SEQ).iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8 | 1);
    block.slice(BLOCK).fill(0x5a);
    let seq_offsets = || (0..span / SEQ as u64).map(|i| i * SEQ as u64);
    let rand_offsets = |seed| {
        let mut rng = Prng::new(seed);
        (0..rand_ops).map(move |_| rng.block_offset(span))
    };
    let seq_bytes = (span / SEQ as u64 * SEQ as u64) as f64;
    let seq_write = seq_bytes / timed(seq_offsets(), |o| write(f, seq.slice(SEQ), o))? / 1e6;
    // Other bytes than the first pass's, so the rewrite changes every block.
    seq.slice(SEQ).iter_mut().for_each(|b| *b ^= 0x80);
    let seq_rewrite = seq_bytes / timed(seq_offsets(), |o| write(f, seq.slice(SEQ), o))? / 1e6;
    let seq_read = seq_bytes / timed(seq_offsets(), |o| read(f, seq.slice(SEQ), o))? / 1e6;
    let ops = rand_ops as f64;
    let rand_write = ops / timed(rand_offsets(1), |o| write(f, block.slice(BLOCK), o))?;
    let rand_read = ops / timed(rand_offsets(2), |o| read(f, block.slice(BLOCK), o))?;
    Ok(BlkFigures { seq_read, seq_write, seq_rewrite, rand_read, rand_write })
}

/// Seconds `op` took over all `offsets` (never 0, so the rates stay finite).
fn timed(
    offsets: impl Iterator<Item = u64>,
    mut op: impl FnMut(u64) -> Result<(), BlkError>,
) -> Result<f64, BlkError> {
    let t = Instant::now();
    for o in offsets {
        op(o)?;
    }
    Ok(t.elapsed().as_secs_f64().max(1e-9))
}

fn write(f: &File, buf: &[u8], offset: u64) -> Result<(), BlkError> {
    // One request per call: a short O_DIRECT write is an error here, not something to continue.
    match f.write_at(buf, offset) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => Err(short("pwrite", buf.len(), offset, n)),
        Err(source) => Err(BlkError::Io { op: "pwrite", len: buf.len(), offset, source }),
    }
}

fn read(f: &File, buf: &mut [u8], offset: u64) -> Result<(), BlkError> {
    match f.read_at(buf, offset) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => Err(short("pread", buf.len(), offset, n)),
        Err(source) => Err(BlkError::Io { op: "pread", len: buf.len(), offset, source }),
    }
}

fn short(op: &'static str, len: usize, offset: u64, n: usize) -> BlkError {
    let source = io::Error::new(io::ErrorKind::UnexpectedEof, format!("short transfer: {n} bytes"));
    BlkError::Io { op, len, offset, source }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_parsed() {
        let a = BlkArgs::parse(&["/dev/vda", "256"]).unwrap().unwrap();
        assert_eq!(a, BlkArgs { dev: "/dev/vda".into(), mib: 256, rand_ops: DEFAULT_RAND_OPS });
        let a = BlkArgs::parse(&["/dev/vdb", "8", "100"]).unwrap().unwrap();
        assert_eq!((a.mib, a.rand_ops), (8, 100));
        assert!(BlkArgs::parse(&["/dev/vda"]).is_none());
        assert!(BlkArgs::parse(&["/dev/vda", "1", "2", "3"]).is_none());
        let e = BlkArgs::parse(&["/dev/vda", "0"]).unwrap().unwrap_err();
        assert_eq!(e.to_string(), "bad MIB '0': give a positive whole number");
        let e = BlkArgs::parse(&["/dev/vda", "4", "x"]).unwrap().unwrap_err();
        assert_eq!(e.to_string(), "bad RAND_OPS 'x': give a positive whole number");
    }

    #[test]
    fn random_offsets_are_aligned_in_range_and_seeded() {
        let span = 3 << 20;
        let mut rng = Prng::new(1);
        let offs: Vec<u64> = (0..10_000).map(|_| rng.block_offset(span)).collect();
        assert!(offs.iter().all(|&o| o % BLOCK as u64 == 0 && o + BLOCK as u64 <= span));
        // Spread over the span, not stuck in a corner.
        assert!(offs.iter().any(|&o| o < span / 4) && offs.iter().any(|&o| o >= span * 3 / 4));
        let again: Vec<u64> = {
            let mut rng = Prng::new(1);
            (0..10_000).map(|_| rng.block_offset(span)).collect()
        };
        assert_eq!(offs, again);
        assert_ne!(Prng::new(2).next_u64(), Prng::new(1).next_u64());
        // A span smaller than a block still gives offset 0.
        assert_eq!(Prng::new(3).block_offset(100), 0);
    }

    #[test]
    fn the_line_has_the_five_figures() {
        let f = BlkFigures {
            seq_read: 812.4,
            seq_write: 640.6,
            seq_rewrite: 700.0,
            rand_read: 20311.0,
            rand_write: 18000.2,
        };
        assert_eq!(
            f.to_string(),
            "blk-bw: seq_read_MBps=812 seq_write_MBps=641 seq_rewrite_MBps=700 rand_read_iops=20311 \
             rand_write_iops=18000"
        );
    }

    #[test]
    fn a_regular_file_is_measured() {
        let p = std::env::temp_dir().join(format!("daxvmm-blk-{}", std::process::id()));
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        f.set_len(2 << 20).unwrap();
        let r = measure(&f, 2 << 20, 64).unwrap();
        let mut data = vec![0u8; 2 << 20];
        f.read_exact_at(&mut data, 0).unwrap();
        std::fs::remove_file(&p).unwrap();
        // Every block holds the rewrite's bytes, or a random write's.
        for (n, b) in data.chunks(BLOCK).enumerate() {
            let second = |i: usize| ((i % SEQ % 251) as u8 | 1) ^ 0x80;
            let rewritten = b.iter().enumerate().all(|(i, &v)| v == second(n * BLOCK + i));
            assert!(rewritten || b.iter().all(|&v| v == 0x5a), "block {n} was not rewritten");
        }
        let all = [r.seq_read, r.seq_write, r.seq_rewrite, r.rand_read, r.rand_write];
        assert!(all.iter().all(|&v| v > 0.0 && v.is_finite()), "{r:?}");
        let e = run(&BlkArgs { dev: "/nonexistent/vda".into(), mib: 1, rand_ops: 1 }).unwrap_err();
        assert!(e.to_string().starts_with("open /nonexistent/vda with O_DIRECT: "), "{e}");
    }
}
