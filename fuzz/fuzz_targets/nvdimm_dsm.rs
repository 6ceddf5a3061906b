//! Arbitrary NVDIMM `_DSM` and label method calls, as a hostile guest can write them into the mailbox
//! page, against the mailbox device with one DIMM's label area (offered through the `_DSM` or not, as the
//! input's first byte says). It must never panic; every answer must fit the page and say its own length;
//! and the label area must always equal a model that applies exactly the writes the device reported as
//! successful (status 0, by the `_DSM` or by the label methods, whose calls set the handle's top bit),
//! so no bad offset or length ever reaches the area. The root device's poison list (handle 0: scrub,
//! clear, injection) must stay bounded, sorted, disjoint and inside the DIMM.
#![no_main]

use daxvmm_devices::bus::BusDevice;
use daxvmm_devices::layout::NVDIMM_DSM_PAGE;
use daxvmm_devices::nvdimm_ars::{DimmRange, MAX_POISON};
use daxvmm_devices::nvdimm_dsm::{LabelArea, LabelStore, NvdimmDsm, DSM_PAGE_SIZE, LABEL_METHOD_FLAG};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const HANDLE: u32 = 1;
const LABEL_SIZE: usize = 128 << 10;
/// The DIMM's range: small, so that fuzzed addresses land in it.
const DIMM: DimmRange = DimmRange { handle: HANDLE, base: 0x10_0000, size: 1 << 16 };

/// The device's label area, shared with the checker.
#[derive(Clone)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl LabelStore for Shared {
    fn size(&self) -> u32 {
        LABEL_SIZE as u32
    }
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> std::io::Result<()> {
        let a = self.0.lock().unwrap();
        buf.copy_from_slice(&a[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> std::io::Result<()> {
        let mut a = self.0.lock().unwrap();
        a[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fuzz_target!(|data: &[u8]| {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let area = Shared(Arc::new(Mutex::new(vec![0u8; LABEL_SIZE])));
    let mut model = vec![0u8; LABEL_SIZE];
    let via_dsm = data.first().is_some_and(|b| b & 1 == 0);
    let labels = vec![LabelArea { handle: HANDLE, store: Box::new(area.clone()), dsm: via_dsm }];
    let mut dsm = NvdimmDsm::new(mem.clone(), labels, vec![DIMM]);
    let page = GuestAddress(NVDIMM_DSM_PAGE);
    // Each call: up to 64 bytes of page prefix from the input (handle, revision, function, offset,
    // length, data), the rest of the page whatever the last call left; then a doorbell write, sometimes a
    // stray one.
    for chunk in data.chunks(64) {
        mem.write_slice(chunk, page).unwrap();
        let mut call = vec![0u8; DSM_PAGE_SIZE];
        mem.read_slice(&mut call, page).unwrap();
        let stray = chunk[0] == 0xff;
        let value = if stray { u32::from(chunk.len() as u8) << 12 } else { NVDIMM_DSM_PAGE as u32 };
        dsm.write(0, &value.to_le_bytes());
        let mut answer = vec![0u8; DSM_PAGE_SIZE];
        mem.read_slice(&mut answer, page).unwrap();
        if stray && value as u64 != NVDIMM_DSM_PAGE {
            assert_eq!(answer, call, "a stray doorbell must leave the page alone");
            continue;
        }
        let len = u32_at(&answer, 0) as usize;
        assert!((8..=DSM_PAGE_SIZE).contains(&len), "answer length {len}");
        let (handle, rev, func) = (u32_at(&call, 0), u32_at(&call, 4), u32_at(&call, 8));
        let status = u32_at(&answer, 4);
        let label_method = handle & LABEL_METHOD_FLAG != 0;
        // The _DSM's label functions answer only when offered; the label methods always.
        let labels = handle & !LABEL_METHOD_FLAG == HANDLE && rev == 1 && (via_dsm || label_method);
        if labels && (4..=6).contains(&func) {
            // The store never fails, so it is success or "invalid input", in the caller's codes.
            let invalid = if label_method { 2 } else { 3 };
            assert!(status == 0 || status == invalid, "function {func}: status {status}");
        }
        if handle == HANDLE && !via_dsm && (4..=6).contains(&func) {
            assert_eq!((len, status), (8, 1), "label-dsm=off: the _DSM refuses function {func}");
        }
        if labels && func == 6 && status == 0 {
            let (off, n) = (u32_at(&call, 12) as usize, u32_at(&call, 16) as usize);
            model[off..off + n].copy_from_slice(&call[20..20 + n]);
        }
        if labels && func == 5 && status == 0 {
            let (off, n) = (u32_at(&call, 12) as usize, u32_at(&call, 16) as usize);
            assert_eq!(len, 8 + n, "a read answers its length");
            assert_eq!(&answer[8..8 + n], &model[off..off + n], "a read returns the area");
        }
        assert!(*area.0.lock().unwrap() == model, "the area changed other than by a successful write");
        let poison = dsm.poison();
        assert!(poison.len() <= MAX_POISON, "{} poisoned ranges", poison.len());
        let mut last_end = DIMM.base;
        for (i, &(at, n)) in poison.iter().enumerate() {
            assert!(n > 0 && (i == 0 || at > last_end) && at >= last_end, "{poison:x?}");
            assert!(at + n <= DIMM.base + DIMM.size, "{poison:x?}");
            last_end = at + n;
        }
    }
});
