//! virtio-blk through the transport, as a guest drives it: config space, the four request types against
//! an in-memory disk, bounds and direction checks, backend failures, resets between taking and
//! completing, and hostile chains, which must never reach the backend nor write outside the used ring
//! and the chain's device-writable buffers.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_bindings::virtio_mmio as reg;

use super::driver::*;
use crate::virtio::blk::{
    Blk, BlkBackend, BlkError, BLK_CHUNK, BLK_SEG_MAX, BLK_S_IOERR, BLK_S_OK, BLK_S_UNSUPP,
};
use crate::virtio::blk_backend::scratch_file;
use crate::virtio::mmio::{status, MMIO_CONFIG_OFFSET};
use crate::virtio::VIRTIO_F_VERSION_1;

const HDR: u64 = DATA;
const STATUS: u64 = DATA + 0x100;
const BUF: u64 = DATA + 0x1000;
/// Past the end of the 1 MiB of guest memory.
const OUTSIDE: u64 = 0x10_0000;
const SENTINEL_BYTE: u8 = 0xaa;
const DISK: u64 = 64 * 1024;
const ID: [u8; 20] = *b"daxvmm-disk-0\0\0\0\0\0\0\0";

/// A disk in memory that records every backend call and fails when told to.
#[derive(Default)]
struct FakeDisk {
    data: Vec<u8>,
    /// (kind, offset, length) per call: 'r', 'w' or 'f'.
    calls: Vec<(char, u64, usize)>,
    /// Calls after this many fail.
    fail_after: Option<usize>,
}

impl FakeDisk {
    /// `size` bytes, byte i holding a pattern that differs between sectors.
    fn new(size: u64) -> Self {
        let data = (0..size).map(|i| (i % 251) as u8 ^ (i / 512) as u8).collect();
        Self { data, ..Default::default() }
    }

    fn result(&self) -> std::io::Result<()> {
        if self.fail_after.is_some_and(|n| self.calls.len() > n) {
            Err(std::io::Error::other("disk on fire"))
        } else {
            Ok(())
        }
    }
}

impl BlkBackend for FakeDisk {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.calls.push(('r', offset, buf.len()));
        self.result()?;
        buf.copy_from_slice(&self.data[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.calls.push(('w', offset, buf.len()));
        self.result()?;
        self.data[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.calls.push(('f', 0, 0));
        self.result()
    }

    fn discard(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.calls.push(('d', offset, len as usize));
        self.result()?;
        self.data[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}

fn live(read_only: bool) -> Driver<Blk> {
    Driver::live_with(Blk::new(DISK, read_only, ID).unwrap())
}

/// Writes a header at [`HDR`], the sentinel at [`STATUS`], and `descs` as the chain at entry 0.
fn submit(d: &mut Driver<Blk>, kind: u32, sector: u64, descs: &[(u64, u32, u16)]) {
    d.put_bytes(HDR, &header(kind, sector));
    d.put_bytes(STATUS, &[SENTINEL_BYTE]);
    d.set_chain(0, descs);
    d.push_avail(0);
}

fn header(kind: u32, sector: u64) -> [u8; 16] {
    let mut header = [0u8; 16];
    header[..4].copy_from_slice(&kind.to_le_bytes());
    header[8..].copy_from_slice(&sector.to_le_bytes());
    header
}

/// Runs the queue once, expecting one chain back; returns (used length, status byte).
fn serve(d: &mut Driver<Blk>, disk: &mut dyn BlkBackend) -> (u32, u8) {
    let before = d.used_idx();
    d.t.process_requests(disk);
    assert_eq!(d.used_idx(), before.wrapping_add(1), "one chain back");
    let (id, len) = d.used_elem(before);
    assert_eq!(id, 0);
    assert_eq!(d.status(), u32::from(FULL));
    (len, d.get_bytes(STATUS, 1)[0])
}

fn request(
    d: &mut Driver<Blk>,
    disk: &mut FakeDisk,
    kind: u32,
    sector: u64,
    descs: &[(u64, u32, u16)],
) -> (u32, u8) {
    submit(d, kind, sector, descs);
    serve(d, disk)
}

/// A request answered IOERR without touching the backend.
fn refused(d: &mut Driver<Blk>, kind: u32, sector: u64, descs: &[(u64, u32, u16)]) {
    let mut disk = FakeDisk::new(DISK);
    assert_eq!(request(d, &mut disk, kind, sector, descs), (1, BLK_S_IOERR));
    assert!(disk.calls.is_empty(), "a refused request reached the backend: {:?}", disk.calls);
}

fn read_config_u32(d: &mut Driver<Blk>, offset: u64) -> u32 {
    d.read32((MMIO_CONFIG_OFFSET + offset) as u32)
}

#[test]
fn config_space_and_features() {
    let mut d = Driver::with_device(Blk::new(DISK, false, ID).unwrap());
    assert_eq!(d.read32(reg::VIRTIO_MMIO_DEVICE_ID), 2);
    assert_eq!(d.read32(reg::VIRTIO_MMIO_QUEUE_NUM_MAX), 1024);
    let offered = 1 << VIRTIO_BLK_F_FLUSH | 1 << VIRTIO_BLK_F_SEG_MAX | 1 << VIRTIO_BLK_F_BLK_SIZE;
    assert_eq!(d.read32(reg::VIRTIO_MMIO_DEVICE_FEATURES), offered | 1 << VIRTIO_BLK_F_DISCARD);
    assert_eq!(read_config_u32(&mut d, 0), (DISK / 512) as u32, "capacity (low)");
    assert_eq!(read_config_u32(&mut d, 4), 0, "capacity (high)");
    assert_eq!(read_config_u32(&mut d, 8), 0, "size_max: not offered");
    assert_eq!(read_config_u32(&mut d, 12), 1022, "seg_max: a request of 1 MiB in 4 KiB pages fits");
    assert_eq!(BLK_SEG_MAX, 1022);
    assert_eq!(read_config_u32(&mut d, 20), 512, "blk_size");
    assert_eq!(read_config_u32(&mut d, 32), 0, "writeback and num_queues read as zero");
    assert_eq!(read_config_u32(&mut d, 36), 1 << 22, "max_discard_sectors");
    assert_eq!(read_config_u32(&mut d, 40), 32, "max_discard_seg");
    assert_eq!(read_config_u32(&mut d, 44), 8, "discard_sector_alignment");
    assert_eq!(read_config_u32(&mut d, 48), 0, "write-zeroes and the rest read as zero");

    let mut d = Driver::with_device(Blk::new(1 << 45, true, ID).unwrap());
    assert_eq!(d.read32(reg::VIRTIO_MMIO_DEVICE_FEATURES), offered | 1 << VIRTIO_BLK_F_RO);
    assert_eq!(read_config_u32(&mut d, 0), 0);
    assert_eq!(read_config_u32(&mut d, 4), 1 << 4, "2^45 bytes is 2^36 sectors");
    assert_eq!(read_config_u32(&mut d, 36), 0, "no discard on a read-only disk");
    // The driver may accept what is offered.
    d.negotiate(VIRTIO_F_VERSION_1 | u64::from(offered) | 1 << VIRTIO_BLK_F_RO);
    assert_eq!(d.status() & u32::from(status::FEATURES_OK), u32::from(status::FEATURES_OK));
}

#[test]
fn capacity_must_be_whole_non_zero_sectors() {
    assert_eq!(Blk::new(0, false, ID).unwrap_err(), BlkError::Empty);
    let err = Blk::new(1000, false, ID).unwrap_err();
    assert_eq!(err, BlkError::PartialSector { bytes: 1000 });
    let msg = err.to_string();
    assert!(msg.contains("1000 bytes") && msg.contains("multiple of the 512-byte sector"), "{msg}");
    assert!(BlkError::Empty.to_string().contains("empty"));
    let blk = Blk::new(u64::MAX - 511, true, ID).unwrap();
    assert_eq!((blk.capacity_bytes(), blk.read_only(), blk.id()), (u64::MAX - 511, true, &ID));
}

#[test]
fn read_round_trip() {
    let mut d = live(false);
    let mut disk = FakeDisk::new(DISK);
    d.put_bytes(BUF, &[0x55; 1024]);
    let answer =
        request(&mut d, &mut disk, VIRTIO_BLK_T_IN, 2, &[(HDR, 16, R), (BUF, 1024, W), (STATUS, 1, W)]);
    assert_eq!(answer, (1025, BLK_S_OK));
    assert_eq!(d.get_bytes(BUF, 1024), disk.data[1024..2048]);
    assert_eq!(disk.calls, vec![('r', 1024, 1024)]);
    assert_eq!(d.irq_count(), 1);
}

#[test]
fn write_round_trip() {
    let mut d = live(false);
    let mut disk = FakeDisk::new(DISK);
    let sector: Vec<u8> = (0..512).map(|i| (i * 7) as u8).collect();
    d.put_bytes(BUF, &sector);
    let answer =
        request(&mut d, &mut disk, VIRTIO_BLK_T_OUT, 3, &[(HDR, 16, R), (BUF, 512, R), (STATUS, 1, W)]);
    assert_eq!(answer, (1, BLK_S_OK));
    assert_eq!(disk.data[1536..2048], sector[..]);
    assert_eq!(disk.calls, vec![('w', 1536, 512)]);
    // Read back into another buffer.
    let answer = request(
        &mut d,
        &mut disk,
        VIRTIO_BLK_T_IN,
        3,
        &[(HDR, 16, R), (BUF + 0x1000, 512, W), (STATUS, 1, W)],
    );
    assert_eq!(answer, (513, BLK_S_OK));
    assert_eq!(d.get_bytes(BUF + 0x1000, 512), sector);
}

#[test]
fn flush() {
    let mut d = live(false);
    let mut disk = FakeDisk::new(DISK);
    assert_eq!(
        request(&mut d, &mut disk, VIRTIO_BLK_T_FLUSH, 0, &[(HDR, 16, R), (STATUS, 1, W)]),
        (1, BLK_S_OK)
    );
    assert_eq!(disk.calls, vec![('f', 0, 0)]);
}

#[test]
fn get_id() {
    let mut d = live(false);
    let mut disk = FakeDisk::new(DISK);
    d.put_bytes(BUF, &[SENTINEL_BYTE; 32]);
    let answer =
        request(&mut d, &mut disk, VIRTIO_BLK_T_GET_ID, 0, &[(HDR, 16, R), (BUF, 20, W), (STATUS, 1, W)]);
    assert_eq!(answer, (21, BLK_S_OK));
    assert_eq!(d.get_bytes(BUF, 20), ID);
    assert_eq!(d.get_bytes(BUF + 20, 1), [SENTINEL_BYTE]);
    assert!(disk.calls.is_empty(), "GET_ID needs no backend");

    // A shorter buffer gets what fits; the id and status may share the last descriptor.
    d.put_bytes(BUF, &[SENTINEL_BYTE; 32]);
    d.put_bytes(BUF + 8, &[SENTINEL_BYTE]);
    submit(&mut d, VIRTIO_BLK_T_GET_ID, 0, &[(HDR, 16, R), (BUF, 9, W)]);
    d.t.process_requests(&mut disk);
    assert_eq!(d.used_elem(1), (0, 9));
    assert_eq!(d.get_bytes(BUF, 9), [&ID[..8], &[BLK_S_OK]].concat());
    assert_eq!(d.get_bytes(BUF + 9, 1), [SENTINEL_BYTE]);
}

#[test]
fn read_only_refuses_writes() {
    let mut d = live(true);
    d.put_bytes(BUF, &[1; 512]);
    refused(&mut d, VIRTIO_BLK_T_OUT, 0, &[(HDR, 16, R), (BUF, 512, R), (STATUS, 1, W)]);
    // Reads and flushes still work.
    let mut disk = FakeDisk::new(DISK);
    let answer =
        request(&mut d, &mut disk, VIRTIO_BLK_T_IN, 0, &[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)]);
    assert_eq!(answer, (513, BLK_S_OK));
    assert_eq!(d.get_bytes(BUF, 512), disk.data[..512]);
    assert_eq!(
        request(&mut d, &mut disk, VIRTIO_BLK_T_FLUSH, 0, &[(HDR, 16, R), (STATUS, 1, W)]),
        (1, BLK_S_OK)
    );
    assert_eq!(disk.calls, vec![('r', 0, 512), ('f', 0, 0)]);
}

#[test]
fn sectors_past_the_end() {
    let mut d = live(false);
    let last = DISK / 512 - 1;
    for kind in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT] {
        let data = if kind == VIRTIO_BLK_T_IN { W } else { R };
        let chain = [(HDR, 16, R), (BUF, 1024, data), (STATUS, 1, W)];
        // The last sector and one more; just past the end; far past; sector * 512 overflowing; the
        // offset fitting but offset + length overflowing.
        for sector in [last, last + 1, DISK, u64::MAX, u64::MAX / 512] {
            refused(&mut d, kind, sector, &chain);
        }
        assert_eq!(d.get_bytes(BUF, 4), [0; 4], "a refused read wrote data");
    }
    // Exactly up to the end is fine.
    let mut disk = FakeDisk::new(DISK);
    let chain = [(HDR, 16, R), (BUF, 1024, W), (STATUS, 1, W)];
    assert_eq!(request(&mut d, &mut disk, VIRTIO_BLK_T_IN, last - 1, &chain), (1025, BLK_S_OK));
    assert_eq!(disk.calls, vec![('r', DISK - 1024, 1024)]);
}

#[test]
fn partial_sectors_are_refused() {
    let mut d = live(false);
    refused(&mut d, VIRTIO_BLK_T_IN, 0, &[(HDR, 16, R), (BUF, 100, W), (STATUS, 1, W)]);
    refused(&mut d, VIRTIO_BLK_T_OUT, 0, &[(HDR, 16, R), (BUF, 513, R), (STATUS, 1, W)]);
    // Header and data sharing a descriptor count only the data.
    refused(&mut d, VIRTIO_BLK_T_OUT, 0, &[(HDR, 16 + 511, R), (STATUS, 1, W)]);
}

#[test]
fn data_in_the_wrong_direction() {
    let mut d = live(false);
    d.put_bytes(BUF, &[0x11; 512]);
    // A read whose data buffer the device may not write.
    refused(&mut d, VIRTIO_BLK_T_IN, 0, &[(HDR, 16, R), (BUF, 512, R), (STATUS, 1, W)]);
    assert_eq!(d.get_bytes(BUF, 512), [0x11; 512]);
    // A write whose data the device may not read, and a read that brings data to write.
    refused(&mut d, VIRTIO_BLK_T_OUT, 0, &[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.get_bytes(BUF, 512), [0x11; 512]);
    refused(
        &mut d,
        VIRTIO_BLK_T_IN,
        0,
        &[(HDR, 16, R), (BUF, 512, R), (BUF + 0x1000, 512, W), (STATUS, 1, W)],
    );
}

#[test]
fn missing_status_byte() {
    let mut d = live(false);
    let mut disk = FakeDisk::new(DISK);
    for chain in [
        &[(HDR, 16, R)][..],
        &[(HDR, 16, R), (BUF, 512, R)],
        &[(HDR, 16, R), (STATUS, 0, W)],
        &[(HDR, 16, R), (OUTSIDE, 1, W)],
    ] {
        submit(&mut d, VIRTIO_BLK_T_FLUSH, 0, chain);
        let before = d.used_idx();
        d.t.process_requests(&mut disk);
        assert_eq!(d.used_elem(before), (0, 0));
        assert_eq!(d.get_bytes(STATUS, 1), [SENTINEL_BYTE]);
        assert_eq!(d.get_bytes(BUF, 4), [0; 4]);
    }
    assert!(disk.calls.is_empty());
}

#[test]
fn header_split_across_descriptors() {
    let mut d = live(false);
    let mut disk = FakeDisk::new(DISK);
    let chain = [(HDR, 5, R), (HDR + 5, 3, R), (HDR + 8, 8, R), (BUF, 512, W), (STATUS, 1, W)];
    assert_eq!(request(&mut d, &mut disk, VIRTIO_BLK_T_IN, 7, &chain), (513, BLK_S_OK));
    assert_eq!(d.get_bytes(BUF, 512), disk.data[7 * 512..8 * 512]);
}

#[test]
fn header_data_and_status_sharing_descriptors() {
    let mut d = live(false);
    let mut disk = FakeDisk::new(DISK);
    // Header and data in one readable buffer.
    let payload = [0x42; 512];
    let req = BUF + 0x2000;
    d.put_bytes(req, &header(VIRTIO_BLK_T_OUT, 1));
    d.put_bytes(req + 16, &payload);
    submit(&mut d, VIRTIO_BLK_T_FLUSH, 0, &[(req, 16 + 512, R), (STATUS, 1, W)]);
    assert_eq!(serve(&mut d, &mut disk), (1, BLK_S_OK));
    assert_eq!(disk.data[512..1024], payload);
    // Data starting after the header in its descriptor and going on in the next one.
    let req = BUF + 0x3000;
    d.put_bytes(req, &header(VIRTIO_BLK_T_OUT, 2));
    d.put_bytes(req + 16, &[0x61; 200]);
    d.put_bytes(BUF + 0x4000, &[0x62; 312]);
    submit(&mut d, VIRTIO_BLK_T_FLUSH, 0, &[(req, 16 + 200, R), (BUF + 0x4000, 312, R), (STATUS, 1, W)]);
    assert_eq!(serve(&mut d, &mut disk), (1, BLK_S_OK));
    assert_eq!(disk.data[1024..1536], [[0x61; 200].as_slice(), &[0x62; 312]].concat());
    // Data and status in one writable buffer.
    submit(&mut d, VIRTIO_BLK_T_IN, 4, &[(HDR, 16, R), (BUF, 513, W)]);
    d.t.process_requests(&mut disk);
    assert_eq!(d.used_elem(2), (0, 513));
    assert_eq!(d.get_bytes(BUF, 512), disk.data[2048..2560]);
    assert_eq!(d.get_bytes(BUF + 512, 1), [BLK_S_OK]);
}

#[test]
fn data_spanning_descriptors() {
    let mut d = live(false);
    let mut disk = FakeDisk::new(DISK);
    // Three sectors in pieces that do not follow sector boundaries, scattered in guest memory.
    let pieces = [(BUF + 0x3000, 100), (BUF, 924), (BUF + 0x5000, 512)];
    let mut chain = vec![(HDR, 16, R)];
    chain.extend(pieces.iter().map(|&(a, n)| (a, n, W)));
    chain.push((STATUS, 1, W));
    assert_eq!(request(&mut d, &mut disk, VIRTIO_BLK_T_IN, 10, &chain), (1537, BLK_S_OK));
    let got: Vec<u8> = pieces.iter().flat_map(|&(a, n)| d.get_bytes(a, n as usize)).collect();
    assert_eq!(got, disk.data[5120..5120 + 1536]);
    assert_eq!(disk.calls, vec![('r', 5120, 1536)], "one backend call for the whole request");

    // And the same pieces written back elsewhere on the disk.
    let chain: Vec<_> = chain.iter().map(|&(a, n, _)| (a, n, if a == STATUS { W } else { R })).collect();
    assert_eq!(request(&mut d, &mut disk, VIRTIO_BLK_T_OUT, 20, &chain), (1, BLK_S_OK));
    assert_eq!(disk.data[10240..10240 + 1536], got[..]);
}

#[test]
fn requests_bigger_than_a_chunk_reach_a_plain_backend_in_pieces() {
    // Four descriptors on the same 512 KiB of guest memory: 2 MiB of data, two chunks' worth.
    let size = 512 * 1024;
    let mut d = Driver::live_with(Blk::new(8 << 20, false, ID).unwrap());
    let mut disk = FakeDisk::new(8 << 20);
    let mut chain = vec![(HDR, 16, R)];
    chain.extend([(BUF, size, W); 4]);
    chain.push((STATUS, 1, W));
    assert_eq!(request(&mut d, &mut disk, VIRTIO_BLK_T_IN, 8, &chain), (4 * size + 1, BLK_S_OK));
    let chunk = BLK_CHUNK;
    assert_eq!(disk.calls, vec![('r', 4096, chunk), ('r', 4096 + chunk as u64, chunk)]);
    // The last quarter of the request landed last.
    let last = 4096 + 3 * size as usize;
    assert_eq!(d.get_bytes(BUF, size as usize), disk.data[last..last + size as usize]);

    disk.calls.clear();
    let chain: Vec<_> = chain.iter().map(|&(a, n, f)| (a, n, if a == BUF { R } else { f })).collect();
    let guest = d.get_bytes(BUF, size as usize);
    assert_eq!(request(&mut d, &mut disk, VIRTIO_BLK_T_OUT, 0, &chain), (1, BLK_S_OK));
    assert_eq!(disk.calls, vec![('w', 0, chunk), ('w', chunk as u64, chunk)]);
    for i in 0..4 {
        assert_eq!(disk.data[i * size as usize..(i + 1) * size as usize], guest[..], "copy {i}");
    }

    // A read failing after its first piece: no data byte is counted as returned, only the status.
    let mut disk = FakeDisk { fail_after: Some(1), ..FakeDisk::new(8 << 20) };
    let chain: Vec<_> = chain.iter().map(|&(a, n, f)| (a, n, if a == BUF { W } else { f })).collect();
    assert_eq!(request(&mut d, &mut disk, VIRTIO_BLK_T_IN, 0, &chain), (1, BLK_S_IOERR));
    assert_eq!(disk.calls.len(), 2);
}

#[test]
fn unknown_types_are_unsupported() {
    let mut d = live(false);
    for kind in [VIRTIO_BLK_T_WRITE_ZEROES, 2, 0x8000_0000, u32::MAX] {
        let mut disk = FakeDisk::new(DISK);
        let answer = request(&mut d, &mut disk, kind, 0, &[(HDR, 16, R), (BUF, 16, R), (STATUS, 1, W)]);
        assert_eq!(answer, (1, BLK_S_UNSUPP), "type {kind}");
        assert!(disk.calls.is_empty());
    }
    // A read-only disk does not offer discard: the request is one it does not know.
    let mut d = live(true);
    let mut disk = FakeDisk::new(DISK);
    d.put_bytes(BUF, &discard_range(0, 8, 0));
    let answer =
        request(&mut d, &mut disk, VIRTIO_BLK_T_DISCARD, 0, &[(HDR, 16, R), (BUF, 16, R), (STATUS, 1, W)]);
    assert_eq!(answer, (1, BLK_S_UNSUPP));
    assert!(disk.calls.is_empty());
}

fn discard_range(sector: u64, sectors: u32, flags: u32) -> [u8; 16] {
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&sector.to_le_bytes());
    r[8..12].copy_from_slice(&sectors.to_le_bytes());
    r[12..].copy_from_slice(&flags.to_le_bytes());
    r
}

/// Each range reaches the backend as bytes; the discarded sectors read back as zeros.
#[test]
fn discard_ranges_reach_the_backend() {
    let mut d = live(false);
    let mut disk = FakeDisk::new(DISK);
    let mut ranges = discard_range(8, 8, 0).to_vec();
    ranges.extend(discard_range(100, 4, 0));
    d.put_bytes(BUF, &ranges);
    let chain = [(HDR, 16, R), (BUF, 32, R), (STATUS, 1, W)];
    assert_eq!(request(&mut d, &mut disk, VIRTIO_BLK_T_DISCARD, 0, &chain), (1, BLK_S_OK));
    assert_eq!(disk.calls, vec![('d', 8 * 512, 8 * 512), ('d', 100 * 512, 4 * 512)]);
    assert!(disk.data[8 * 512..16 * 512].iter().all(|&b| b == 0));
    assert_ne!(disk.data[16 * 512], 0, "the next sector is untouched");
    // A backend that cannot discard: the guest hears IOERR.
    disk.fail_after = Some(0);
    assert_eq!(request(&mut d, &mut disk, VIRTIO_BLK_T_DISCARD, 0, &chain), (1, BLK_S_IOERR));
}

/// Past the end, overflowing sectors, flags, too many ranges, torn entries and data to write back are
/// refused before the backend.
#[test]
fn bad_discards_are_refused() {
    let sectors = (DISK / 512) as u32;
    let one = |d: &mut Driver<Blk>, r: [u8; 16]| {
        d.put_bytes(BUF, &r);
        let mut disk = FakeDisk::new(DISK);
        let chain = [(HDR, 16, R), (BUF, 16, R), (STATUS, 1, W)];
        let answer = request(d, &mut disk, VIRTIO_BLK_T_DISCARD, 0, &chain);
        (answer.1, disk.calls.len())
    };
    let mut d = live(false);
    assert_eq!(one(&mut d, discard_range(0, sectors, 0)), (BLK_S_OK, 1), "the whole disk is fine");
    assert_eq!(one(&mut d, discard_range(1, sectors, 0)), (BLK_S_IOERR, 0));
    assert_eq!(one(&mut d, discard_range(u64::MAX / 256, 8, 0)), (BLK_S_IOERR, 0));
    assert_eq!(one(&mut d, discard_range(0, 8, 1)), (BLK_S_UNSUPP, 0), "unmap belongs to write-zeroes");
    assert_eq!(one(&mut d, discard_range(0, (1 << 22) + 1, 0)), (BLK_S_IOERR, 0));
    for chain in [
        [(HDR, 16, R), (BUF, 24, R), (STATUS, 1, W)],
        [(HDR, 16, R), (BUF, 33 * 16, R), (STATUS, 1, W)],
        [(HDR, 16, R), (BUF, 16, W), (STATUS, 1, W)],
    ] {
        refused(&mut d, VIRTIO_BLK_T_DISCARD, 0, &chain);
    }
}

#[test]
fn backend_errors_reach_the_guest() {
    let mut d = live(false);
    let mut disk = FakeDisk { fail_after: Some(0), ..FakeDisk::new(DISK) };
    d.put_bytes(BUF, &[0x33; 512]);
    let read = [(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)];
    assert_eq!(request(&mut d, &mut disk, VIRTIO_BLK_T_IN, 0, &read), (1, BLK_S_IOERR));
    assert_eq!(d.get_bytes(BUF, 512), [0x33; 512], "nothing read, nothing written to the guest");
    let write = [(HDR, 16, R), (BUF, 512, R), (STATUS, 1, W)];
    assert_eq!(request(&mut d, &mut disk, VIRTIO_BLK_T_OUT, 0, &write), (1, BLK_S_IOERR));
    assert_eq!(
        request(&mut d, &mut disk, VIRTIO_BLK_T_FLUSH, 0, &[(HDR, 16, R), (STATUS, 1, W)]),
        (1, BLK_S_IOERR)
    );
    assert_eq!(disk.calls, vec![('r', 0, 512), ('w', 0, 512), ('f', 0, 0)]);
}

#[test]
fn async_batch_completes_with_one_interrupt() {
    let mut d = live(false);
    let mut disk = FakeDisk::new(DISK);
    // Three reads of one sector each at entries 0, 3, 6.
    for i in 0..3u16 {
        let hdr = HDR + u64::from(i) * 0x20;
        d.put_bytes(hdr, &header(VIRTIO_BLK_T_IN, u64::from(i)));
        let buf = BUF + u64::from(i) * 0x1000;
        d.set_chain(i * 3, &[(hdr, 16, R), (buf, 512, W), (STATUS + u64::from(i), 1, W)]);
        d.push_avail(i * 3);
    }
    let pending = d.t.take_requests();
    assert_eq!(pending.iter().map(|p| p.head()).collect::<Vec<_>>(), vec![0, 3, 6]);
    assert!(d.t.take_requests().is_empty(), "taken requests are not taken twice");
    // Executed outside the transport, completed out of order.
    let mem = d.t.mem().clone();
    let mut done: Vec<_> = pending.iter().map(|p| p.execute(&mem, &mut disk)).collect();
    assert_eq!((d.used_idx(), d.irq_count()), (0, 0), "nothing completes before complete_requests");
    done.reverse();
    assert_eq!(d.t.complete_requests(done), 3);
    assert_eq!((d.used_idx(), d.irq_count()), (3, 1));
    assert_eq!([d.used_elem(0), d.used_elem(1), d.used_elem(2)], [(6, 513), (3, 513), (0, 513)]);
    for i in 0..3usize {
        assert_eq!(d.get_bytes(BUF + i as u64 * 0x1000, 512), disk.data[i * 512..(i + 1) * 512]);
        assert_eq!(d.get_bytes(STATUS + i as u64, 1), [BLK_S_OK]);
    }
}

#[test]
fn completion_after_reset_is_dropped() {
    let mut d = live(false);
    let mut disk = FakeDisk::new(DISK);
    submit(&mut d, VIRTIO_BLK_T_OUT, 0, &[(HDR, 16, R), (BUF, 512, R), (STATUS, 1, W)]);
    let stale = d.t.take_requests();
    assert_eq!(stale.len(), 1);
    d.restart_on_new_rings();
    let mem = d.t.mem().clone();
    let done: Vec<_> = stale.iter().map(|p| p.execute(&mem, &mut disk)).collect();
    assert_eq!(d.t.complete_requests(done), 0);
    assert_eq!(d.get_bytes(STATUS, 1), [SENTINEL_BYTE], "stale completion wrote a status the driver owns");
    assert_eq!(d.used_idx(), 0, "old used ring");
    assert_eq!(d.get_u32(USED + 0x400) >> 16, 0, "new used ring");
    assert_eq!(d.irq_count(), 0);
}

#[test]
fn nothing_is_served_while_not_live() {
    let mut d = Driver::with_device(Blk::new(DISK, false, ID).unwrap());
    d.negotiate(VIRTIO_F_VERSION_1);
    d.setup_queue(0, QSIZE, DESC, AVAIL, USED);
    submit(&mut d, VIRTIO_BLK_T_FLUSH, 0, &[(HDR, 16, R), (STATUS, 1, W)]);
    let mut disk = FakeDisk::new(DISK);
    assert_eq!(d.t.process_requests(&mut disk), 0);
    assert!(disk.calls.is_empty());
    d.set_status(status::DRIVER_OK);
    assert_eq!(d.t.process_requests(&mut disk), 1);
    assert_eq!(disk.calls, vec![('f', 0, 0)]);
}

#[test]
fn file_backend() {
    let mut file = scratch_file("blk-test", 4096);
    let backend: &mut dyn BlkBackend = &mut file;
    backend.write_at(512, &[7; 512]).unwrap();
    backend.flush().unwrap();
    let mut buf = [0u8; 1024];
    backend.read_at(0, &mut buf).unwrap();
    assert_eq!((&buf[..512], &buf[512..]), (&[0; 512][..], &[7; 512][..]));
    assert!(backend.read_at(4096 - 512, &mut buf).is_err(), "a short read is an error");
    // A punched hole reads as zeros and the size stays.
    backend.discard(512, 512).unwrap();
    backend.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(file.metadata().unwrap().len(), 4096);
}

#[test]
fn a_file_disk_serves_scattered_requests_and_reports_a_short_image() {
    // The device believes in 64 KiB; the file has 16 KiB (an image truncated behind daxvmm's back).
    let mut file = scratch_file("blk-test-chain", 16384);
    let mut d = live(false);
    let guest: Vec<u8> = (0..3072u32).map(|i| (i % 241) as u8).collect();
    d.put_bytes(BUF, &guest[..1024]);
    d.put_bytes(BUF + 0x4000, &guest[1024..]);
    let out = [(HDR, 16, R), (BUF, 1024, R), (BUF + 0x4000, 2048, R), (STATUS, 1, W)];
    submit(&mut d, VIRTIO_BLK_T_OUT, 3, &out);
    assert_eq!(serve(&mut d, &mut file), (1, BLK_S_OK));
    let mut on_disk = vec![0u8; 3072];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut on_disk, 1536).unwrap();
    assert_eq!(on_disk, guest);

    // Back in three other pieces.
    let back = [(HDR, 16, R), (BUF + 0x8000, 512, W), (BUF + 0x9000, 2560, W), (STATUS, 1, W)];
    submit(&mut d, VIRTIO_BLK_T_IN, 3, &back);
    assert_eq!(serve(&mut d, &mut file), (3073, BLK_S_OK));
    let mut got = d.get_bytes(BUF + 0x8000, 512);
    got.extend(d.get_bytes(BUF + 0x9000, 2560));
    assert_eq!(got, guest);

    // A read inside the disk but past the file's end: an I/O error, nothing counted.
    submit(&mut d, VIRTIO_BLK_T_IN, 30, &back);
    assert_eq!(serve(&mut d, &mut file), (1, BLK_S_IOERR));
}

// Hostile chains: the backend is never called, and guest memory changes only in the used ring and the
// buffers the test allows (the status byte, when the device can trust it).

/// Serves one chain with the backend counting; asserts it never ran and that only `allowed` (and the
/// used ring) changed. Returns the used length.
fn hostile(d: &mut Driver<Blk>, head: u16, allowed: &[(u64, u64)]) -> u32 {
    let before = d.get_bytes(0, MEM_SIZE);
    let mut disk = FakeDisk::new(DISK);
    assert_eq!(d.t.process_requests(&mut disk), 0);
    assert!(disk.calls.is_empty(), "a hostile chain reached the backend: {:?}", disk.calls);
    let after = d.get_bytes(0, MEM_SIZE);
    let used_ring = (USED, USED + 4 + 8 * u64::from(QSIZE));
    for (addr, (a, b)) in before.iter().zip(&after).enumerate() {
        let addr = addr as u64;
        let ok = [used_ring].iter().chain(allowed).any(|&(s, e)| s <= addr && addr < e);
        assert!(a == b || ok, "device wrote {addr:#x}");
    }
    assert_eq!(d.used_idx(), 1);
    let (id, len) = d.used_elem(0);
    assert_eq!(id, u32::from(head));
    assert_eq!(d.status(), u32::from(FULL), "a bad request is the request's failure, not the device's");
    len
}

const STATUS_ONLY: &[(u64, u64)] = &[(STATUS, STATUS + 1)];

#[test]
fn hostile_loops_and_bad_indices() {
    let mut d = live(false);
    submit(&mut d, VIRTIO_BLK_T_IN, 0, &[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)]);
    d.set_desc(2, STATUS, 1, W | NEXT, 0);
    assert_eq!(hostile(&mut d, 0, &[]), 0);

    let mut d = live(false);
    d.set_desc(5, HDR, 16, R | NEXT, 5);
    d.push_avail(5);
    assert_eq!(hostile(&mut d, 5, &[]), 0);

    let mut d = live(false);
    submit(&mut d, VIRTIO_BLK_T_IN, 0, &[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)]);
    d.set_desc(1, BUF, 512, W | NEXT, QSIZE);
    assert_eq!(hostile(&mut d, 0, &[]), 0);

    let mut d = live(false);
    submit(&mut d, VIRTIO_BLK_T_IN, 0, &[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)]);
    d.set_desc(1, BUF, 512, W | INDIRECT | NEXT, 2);
    assert_eq!(hostile(&mut d, 0, &[]), 0);
}

#[test]
fn hostile_addresses_outside_memory() {
    for (chain, expect) in [
        (&[(OUTSIDE, 16, R), (BUF, 512, W), (STATUS, 1, W)][..], 1),
        (&[(HDR, 16, R), (OUTSIDE - 256, 512, W), (STATUS, 1, W)], 1),
        (&[(HDR, 16, R), (u64::MAX - 1, 512, W), (STATUS, 1, W)], 1),
        (&[(HDR, 16, R), (OUTSIDE - 256, 512, R), (STATUS, 1, W)], 1),
        (&[(HDR, 16, R), (BUF, 512, W), (OUTSIDE, 1, W)], 0),
        (&[(HDR, 16, R), (BUF, 512, W), (u64::MAX, 1, W)], 0),
    ] {
        for kind in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_GET_ID] {
            let mut d = live(false);
            submit(&mut d, kind, 0, chain);
            assert_eq!(hostile(&mut d, 0, STATUS_ONLY), expect, "{chain:x?}");
            let status = d.get_bytes(STATUS, 1)[0];
            assert_eq!(status, if expect == 1 { BLK_S_IOERR } else { SENTINEL_BYTE });
        }
    }
}

#[test]
fn hostile_lengths() {
    for (chain, expect) in [
        // Zero-length header, status, data.
        (&[(HDR, 0, R), (BUF, 512, W), (STATUS, 1, W)][..], 1),
        (&[(HDR, 16, R), (BUF, 512, R), (STATUS, 0, W)], 0),
        (&[(HDR, 15, R), (STATUS, 1, W)], 1),
        // Huge: the data runs out of memory; overflowing 32 bits: not walked at all.
        (&[(HDR, 16, R), (BUF, 0xffff_fff0 - 17, W), (STATUS, 1, W)], 1),
        (&[(HDR, 16, R), (BUF, 0xffff_ffff, W), (STATUS, 1, W)], 0),
        (&[(HDR, 0xffff_ffff, R), (BUF, 0xffff_ffff, R), (STATUS, 1, W)], 0),
        // Readable after writable.
        (&[(HDR, 16, R), (BUF, 512, W), (BUF + 0x1000, 512, R), (STATUS, 1, W)], 1),
    ] {
        for kind in [VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH] {
            let mut d = live(false);
            submit(&mut d, kind, 0, chain);
            assert_eq!(hostile(&mut d, 0, STATUS_ONLY), expect, "{chain:x?}");
            let status = d.get_bytes(STATUS, 1)[0];
            assert_eq!(status, if expect == 1 { BLK_S_IOERR } else { SENTINEL_BYTE });
        }
    }
    // A huge writable buffer whose last byte is the status, far outside memory: nowhere to answer.
    let mut d = live(false);
    submit(&mut d, VIRTIO_BLK_T_IN, 0, &[(HDR, 16, R), (BUF, 0xffff_0000, W)]);
    assert_eq!(hostile(&mut d, 0, &[]), 0);
}

#[test]
fn good_request_after_hostile_ones_is_served() {
    let mut d = live(false);
    let mut disk = FakeDisk::new(DISK);
    submit(&mut d, VIRTIO_BLK_T_IN, 1, &[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)]);
    d.set_desc(8, HDR, 16, R | NEXT, 8);
    d.push_avail(8);
    d.push_avail(0);
    assert_eq!(d.t.process_requests(&mut disk), 2);
    // The unusable chain is answered while taking, before the good ones complete.
    assert_eq!([d.used_elem(0), d.used_elem(1), d.used_elem(2)], [(8, 0), (0, 513), (0, 513)]);
    assert_eq!(disk.calls, vec![('r', 512, 512), ('r', 512, 512)]);
}
