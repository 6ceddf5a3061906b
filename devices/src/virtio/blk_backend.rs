//! Where a virtio-blk disk's bytes live: the [`BlkBackend`] trait and its implementation on a file.
//!
//! A request's data buffers are guest memory ([`VolatileSlice`]s, cut where memory regions end). A
//! file moves them with one `preadv`/`pwritev` per request (per [`IOV_MAX`] buffers), straight between
//! the host page cache and guest memory; other backends (tests, fuzzing) get the default methods, which
//! go through a buffer of at most [`BLK_CHUNK`] bytes with the plain `read_at`/`write_at`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use vm_memory::VolatileSlice;

/// Largest buffer the default vectored methods use; longer requests reach a plain backend in calls of
/// at most this size.
pub const BLK_CHUNK: usize = 1 << 20;
/// Most buffers one `preadv`/`pwritev` takes (Linux's UIO_MAXIOV).
pub const IOV_MAX: usize = 1024;

/// Where the disk's contents live. Offsets and lengths are in bytes and always inside the capacity the
/// device was created with; the VMM implements it on the backing file.
pub trait BlkBackend: Send {
    /// Fills `buf` from the disk at `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `buf` to the disk at `offset`.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<()>;
    /// Forgets `len` bytes at `offset`: they read as zeros afterwards. A backend that cannot answers an
    /// error, which reaches the guest as VIRTIO_BLK_S_IOERR.
    fn discard(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "this disk backend cannot discard"))
    }

    /// Fills the guest buffers `bufs`, one after the other, from the disk at `offset`. On an error some
    /// of them may have been filled.
    fn read_to_guest(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        let mut at = offset;
        for run in runs(bufs)? {
            let mut buf = vec![0u8; run.iter().map(VolatileSlice::len).sum()];
            self.read_at(at, &mut buf)?;
            let mut done = 0;
            for s in &run {
                s.copy_from(&buf[done..done + s.len()]);
                done += s.len();
            }
            at += buf.len() as u64;
        }
        Ok(())
    }

    /// Writes the guest buffers `bufs`, one after the other, to the disk at `offset`.
    fn write_from_guest(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        let mut at = offset;
        for run in runs(bufs)? {
            let mut buf = vec![0u8; run.iter().map(VolatileSlice::len).sum()];
            let mut done = 0;
            for s in &run {
                s.copy_to(&mut buf[done..done + s.len()]);
                done += s.len();
            }
            self.write_at(at, &buf)?;
            at += buf.len() as u64;
        }
        Ok(())
    }
}

/// `bufs` regrouped into runs of at most [`BLK_CHUNK`] bytes, cutting buffers where a run ends.
fn runs<'a>(bufs: &[VolatileSlice<'a>]) -> io::Result<Vec<Vec<VolatileSlice<'a>>>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut room = BLK_CHUNK;
    for s in bufs {
        let mut rest = *s;
        while !rest.is_empty() {
            let n = rest.len().min(room);
            current.push(rest.subslice(0, n).map_err(io::Error::other)?);
            rest = rest.offset(n).map_err(io::Error::other)?;
            room -= n;
            if room == 0 {
                out.push(std::mem::take(&mut current));
                room = BLK_CHUNK;
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

impl BlkBackend for File {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    /// Punches a hole, keeping the file's size: the blocks go back to the host filesystem.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "discard range past 2^63"));
        };
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on a descriptor this File owns; it changes no memory of ours.
        if unsafe { libc::fallocate(self.as_raw_fd(), mode, offset, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn read_to_guest(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        positioned(self, offset, bufs, Direction::Read)
    }

    fn write_from_guest(&mut self, offset: u64, bufs: &[VolatileSlice<'_>]) -> io::Result<()> {
        positioned(self, offset, bufs, Direction::Write)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

/// Moves all of `bufs` between guest memory and `file` at `offset`, resuming after short transfers;
/// reaching the end of the file first is an error.
fn positioned(file: &File, mut offset: u64, bufs: &[VolatileSlice<'_>], dir: Direction) -> io::Result<()> {
    // The guards keep the pointers valid for the calls below (they matter only for memory that is
    // mapped on demand; daxvmm's guest memory is mapped for the whole run).
    let guards: Vec<_> = bufs.iter().map(VolatileSlice::ptr_guard_mut).collect();
    let mut iov: Vec<libc::iovec> = guards
        .iter()
        .zip(bufs)
        .filter(|(_, s)| !s.is_empty())
        .map(|(g, s)| libc::iovec { iov_base: g.as_ptr().cast(), iov_len: s.len() })
        .collect();
    let mut first = 0;
    while first < iov.len() {
        let batch = &iov[first..iov.len().min(first + IOV_MAX)];
        let at = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "disk offset past 2^63"))?;
        // The batch holds at most IOV_MAX entries, so the count fits a c_int.
        let count = batch.len() as libc::c_int;
        // SAFETY: every iovec points into a VolatileSlice of guest memory, which is mapped for at least
        // as long as `bufs` borrows it, and covers no more than the slice's length. The kernel reads or
        // writes only those bytes; guest memory is shared with the guest anyway, so no Rust reference
        // to it is invalidated.
        let n = unsafe {
            match dir {
                Direction::Read => libc::preadv(file.as_raw_fd(), batch.as_ptr(), count, at),
                Direction::Write => libc::pwritev(file.as_raw_fd(), batch.as_ptr(), count, at),
            }
        };
        let Ok(mut n) = usize::try_from(n) else {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        };
        if n == 0 {
            return Err(match dir {
                Direction::Read => {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "the disk image ends before the request")
                }
                Direction::Write => io::Error::new(io::ErrorKind::WriteZero, "the disk image took no bytes"),
            });
        }
        offset += n as u64;
        while n > 0 {
            let cur = &mut iov[first];
            if n >= cur.iov_len {
                n -= cur.iov_len;
                first += 1;
            } else {
                // SAFETY: n < iov_len, so the new base stays inside the same guest buffer.
                cur.iov_base = unsafe { cur.iov_base.cast::<u8>().add(n) }.cast();
                cur.iov_len -= n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// A new, already unlinked file of `len` bytes for tests, its name starting with `name`.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn scratch_file(name: &str, len: u64) -> File {
    let path = std::env::temp_dir().join(format!(
        "daxvmm-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    file.set_len(len).unwrap();
    file
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

    /// Two 64 KiB regions with a gap between them.
    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000), (GuestAddress(0x20000), 0x10000)]).unwrap()
    }

    /// The guest ranges as slices, cut where regions end.
    fn slices<'a>(mem: &'a GuestMemoryMmap, ranges: &[(u64, usize)]) -> Vec<VolatileSlice<'a>> {
        ranges
            .iter()
            .flat_map(|&(a, n)| mem.get_slices(GuestAddress(a), n).map(Result::unwrap).collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn a_file_moves_scattered_guest_buffers_in_order() {
        let mem = memory();
        let pattern: Vec<u8> = (0..0x3000u32).map(|i| (i * 7 % 253) as u8).collect();
        mem.write_slice(&pattern[..0x1000], GuestAddress(0xf000)).unwrap();
        mem.write_slice(&pattern[0x1000..], GuestAddress(0x20000)).unwrap();
        let mut file = scratch_file("blk-backend", 1 << 20);
        let file: &mut dyn BlkBackend = &mut file;
        // One guest range that a region boundary cuts in two (get_slices does), written at 4 KiB.
        let out = slices(&mem, &[(0xf000, 0x1000), (0x20000, 0x2000)]);
        file.write_from_guest(4096, &out).unwrap();
        let mut back = vec![0u8; 0x3000];
        file.read_at(4096, &mut back).unwrap();
        assert_eq!(back, pattern);

        // Read it back into other buffers, in another order of sizes.
        let into = slices(&mem, &[(0x1000, 0x10), (0x22000, 0x2ff0), (0x8000, 0)]);
        file.read_to_guest(4096, &into).unwrap();
        let mut got = vec![0u8; 0x3000];
        mem.read_slice(&mut got[..0x10], GuestAddress(0x1000)).unwrap();
        mem.read_slice(&mut got[0x10..], GuestAddress(0x22000)).unwrap();
        assert_eq!(got, pattern);
    }

    #[test]
    fn more_buffers_than_one_call_takes_are_moved_in_batches() {
        let mem = memory();
        // 3000 one-byte buffers: three preadv calls.
        let ranges: Vec<_> = (0..3000u64).map(|i| (i * 2, 1)).collect();
        let bufs = slices(&mem, &ranges);
        let mut file = scratch_file("blk-backend", 8192);
        let file: &mut dyn BlkBackend = &mut file;
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8 + 1).collect();
        file.write_at(100, &data).unwrap();
        file.read_to_guest(100, &bufs).unwrap();
        for (i, &(a, _)) in ranges.iter().enumerate() {
            assert_eq!(mem.read_obj::<u8>(GuestAddress(a)).unwrap(), data[i], "buffer {i}");
        }
        file.write_from_guest(5000, &bufs).unwrap();
        let mut back = vec![0u8; 3000];
        file.read_at(5000, &mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn a_read_past_the_end_of_the_image_is_an_error() {
        let mem = memory();
        let mut file = scratch_file("blk-backend", 4096);
        let file: &mut dyn BlkBackend = &mut file;
        let bufs = slices(&mem, &[(0, 1024)]);
        let e = file.read_to_guest(4096 - 512, &bufs).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A backend with only the plain methods: the defaults cut requests at BLK_CHUNK.
    struct Plain(Vec<u8>, Vec<(u64, usize)>);

    impl BlkBackend for Plain {
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.1.push((offset, buf.len()));
            buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }

        fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
            self.1.push((offset, buf.len()));
            self.0[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_default_methods_move_at_most_a_chunk_per_call() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 3 << 20)]).unwrap();
        let data: Vec<u8> = (0..(3usize << 20)).map(|i| (i % 249) as u8).collect();
        let mut disk = Plain(data.clone(), Vec::new());
        let bufs = slices(&mem, &[(0, 1 << 19), (1 << 19, (5 << 19) - 1)]);
        disk.read_to_guest(1, &bufs).unwrap();
        assert_eq!(
            disk.1,
            vec![
                (1, BLK_CHUNK),
                (1 + BLK_CHUNK as u64, BLK_CHUNK),
                (1 + 2 * BLK_CHUNK as u64, BLK_CHUNK - 1)
            ]
        );
        let mut got = vec![0u8; (3 << 20) - 1];
        mem.read_slice(&mut got, GuestAddress(0)).unwrap();
        assert_eq!(got, data[1..]);
    }
}
