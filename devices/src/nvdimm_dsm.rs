//! The NVDIMM `_DSM` mailbox: the device behind the AML of [`crate::acpi::nvdimm_aml`]. The guest's ACPI
//! interpreter writes a call (DIMM handle, revision, function, input buffer) into one page of guest memory
//! at [`NVDIMM_DSM_PAGE`], then writes that page's address to the doorbell port [`NVDIMM_DSM_PORT`]; the
//! device copies the call out of the page, answers it, and writes the answer (length, then data) back to
//! the same page before the port write returns. The layout is QEMU's (hw/acpi/nvdimm.c), so the AML is too.
//!
//! It answers the Intel DIMM command family that Linux's nfit driver looks for (the "NVDIMM DSM Interface",
//! revision 1): function 0 (which functions exist) and 1 (SMART health) for every DIMM, and 4 (label
//! area size and largest transfer), 5 (read label data) and 6 (write label data) for the DIMMs that have
//! a label area; the root device's functions (scrub, clear, error injection) are [`crate::nvdimm_ars`]'s.
//! Everything else gets status 1, "not supported" (QEMU's private handle offers nothing but function 0,
//! which answers "none"). The guest is untrusted: the call is copied before it is read (the page stays
//! writable by other vCPUs), every offset and length is checked, and a bad call gets status 3, "invalid
//! input", never a panic.
//!
//! The DIMMs' ACPI label methods (`_LSI`, `_LSR`, `_LSW`, [`crate::acpi::nvdimm_aml`]) use the same page
//! and the same three functions, with [`LABEL_METHOD_FLAG`] set in the handle: such a call is answered
//! with the label methods' status codes (ACPI 6.5, 6.5.10: 0 success, 1 failure, 2 invalid input), and
//! whether the `_DSM` offers the label functions too ([`LabelArea::dsm`], `--pmem ...,label-dsm=`) does
//! not matter to it.

use std::collections::BTreeMap;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::bus::BusDevice;
use crate::layout::NVDIMM_DSM_PAGE;
use crate::nvdimm_ars::{DimmRange, RootDsm};

/// The mailbox page's size.
pub const DSM_PAGE_SIZE: usize = 4096;
/// Bytes before a call's input buffer: handle, revision, function (u32 each).
const IN_HEADER: usize = 12;
/// Bytes before a write's data: label offset and length (u32 each).
const SET_HEADER: usize = 8;
/// The most label bytes one read or write moves: what fits in the page both ways (QEMU's rule).
pub const MAX_TRANSFER: u32 = (DSM_PAGE_SIZE - IN_HEADER - SET_HEADER) as u32;

/// The handle the root device's `_DSM` passes (DIMM handles start at 1).
const ROOT_HANDLE: u32 = 0;

/// Status codes of the DSM interface.
const STATUS_SUCCESS: u32 = 0;
const STATUS_UNSUPPORTED: u32 = 1;
const STATUS_INVALID: u32 = 3;

/// Set in the handle of a call made by a DIMM's label methods rather than its `_DSM`. Bits 28-31 of an
/// NFIT device handle are reserved, so no DIMM's own handle has it.
pub const LABEL_METHOD_FLAG: u32 = 1 << 31;

/// Status codes of the ACPI label methods. Their 3 means "label storage locked", which Linux turns
/// into a locked DIMM, so the DSM's "invalid input" (also 3) must not leak through.
const LS_SUCCESS: u32 = 0;
const LS_FAILURE: u32 = 1;
const LS_INVALID: u32 = 2;

/// The functions every DIMM offers: 0 and 1, its SMART health.
const HEALTH_FUNCTIONS: u32 = 1 | 1 << 1;
/// What a DIMM with a label area offers besides: the three label functions.
const LABEL_FUNCTIONS: u32 = HEALTH_FUNCTIONS | 1 << 4 | 1 << 5 | 1 << 6;

/// The SMART health payload of function 1 (the Intel family's layout, 128 bytes): which fields are
/// valid (health, spares, life used, media and controller temperature, shutdown count, alarms, shutdown
/// state), health 0 ("ok"), spares 100 %, life used 0 %, media at 23 °C and controller at 30 °C (in
/// 1/16 °C), no dirty shutdown. Emulated memory does not wear, heat up or lose power uncleanly.
fn smart_payload() -> Vec<u8> {
    const VALID: u32 = 1 | 1 << 1 | 1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 9 | 1 << 10;
    let mut p = vec![0u8; 128];
    p[0..4].copy_from_slice(&VALID.to_le_bytes());
    p[9] = 100; // spares
    p[12..14].copy_from_slice(&(23u16 * 16).to_le_bytes());
    p[14..16].copy_from_slice(&(30u16 * 16).to_le_bytes());
    p
}

/// Where a DIMM's label area lives. Reads and writes are in range (the device checks first); an I/O
/// error becomes a failed call, not a panic.
pub trait LabelStore: Send {
    /// The label area's size in bytes.
    fn size(&self) -> u32;
    /// Fills `buf` from `offset`.
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> std::io::Result<()>;
    /// Stores `data` at `offset`.
    fn write(&mut self, offset: u32, data: &[u8]) -> std::io::Result<()>;
}

/// A label area in memory, gone when daxvmm exits (pmem without a backing file, or `share=off`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLabels(pub Vec<u8>);

impl LabelStore for MemoryLabels {
    fn size(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> std::io::Result<()> {
        let start = offset as usize;
        buf.copy_from_slice(&self.0[start..start + buf.len()]);
        Ok(())
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> std::io::Result<()> {
        let start = offset as usize;
        self.0[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// One DIMM's label area, as the mailbox serves it.
pub struct LabelArea {
    /// The DIMM's NFIT device handle.
    pub handle: u32,
    /// Where the labels are kept.
    pub store: Box<dyn LabelStore>,
    /// Whether the `_DSM` offers the label functions (4-6) as well as the label methods. Without them a
    /// guest finds the labels only through `_LSI`/`_LSR`/`_LSW`.
    pub dsm: bool,
}

impl std::fmt::Debug for LabelArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelArea")
            .field("handle", &self.handle)
            .field("size", &self.store.size())
            .field("dsm", &self.dsm)
            .finish()
    }
}

/// Why a label read or write was not done.
enum TransferError {
    /// Out of the area, more than one transfer, or a write shorter than its length.
    Invalid,
    /// The store failed (counted and logged).
    Io,
}

/// Calls answered, and failed label I/O (logged once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DsmCounts {
    /// Doorbell writes that were answered.
    pub calls: u64,
    /// Label reads or writes whose store failed.
    pub io_errors: u64,
    /// Doorbell writes with an address other than the mailbox page's (ignored).
    pub stray: u64,
}

/// The mailbox device: guest memory for the page, the label areas by NFIT device handle, and the root
/// device's functions.
pub struct NvdimmDsm {
    mem: GuestMemoryMmap,
    labels: BTreeMap<u32, LabelArea>,
    root: RootDsm,
    counts: DsmCounts,
    /// Told the whole poison list after every call that changed it.
    on_poison: Option<PoisonListener>,
}

/// What [`NvdimmDsm::on_poison_change`] calls with the new poison list (address, length).
pub type PoisonListener = Box<dyn FnMut(&[(u64, u64)]) + Send>;

impl std::fmt::Debug for NvdimmDsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let handles: Vec<_> = self.labels.keys().collect();
        f.debug_struct("NvdimmDsm")
            .field("labels", &handles)
            .field("root", &self.root)
            .field("counts", &self.counts)
            .finish()
    }
}

/// One call, as copied out of the page.
struct Call {
    handle: u32,
    revision: u32,
    function: u32,
    input: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// An answer: its payload after the length word.
fn status(code: u32) -> Vec<u8> {
    code.to_le_bytes().to_vec()
}

impl NvdimmDsm {
    /// A mailbox over `mem` serving the label areas `labels` and the root device of the NFIT DIMMs
    /// `dimms`. DIMMs without a label area have no label functions.
    pub fn new(mem: GuestMemoryMmap, labels: Vec<LabelArea>, dimms: Vec<DimmRange>) -> Self {
        NvdimmDsm {
            mem,
            labels: labels.into_iter().map(|a| (a.handle, a)).collect(),
            root: RootDsm::new(dimms),
            counts: DsmCounts::default(),
            on_poison: None,
        }
    }

    /// The poisoned ranges (address, length), from the guest's error injections and [`Self::inject`].
    pub fn poison(&self) -> Vec<(u64, u64)> {
        self.root.poison()
    }

    /// Poisons `[address, address + length)` as an injection would; false (and nothing changes) unless
    /// the range lies inside one DIMM and the list has room.
    pub fn inject(&mut self, address: u64, length: u64) -> bool {
        self.root.inject(address, length)
    }

    /// Calls `listener` with the poison list whenever a guest call changes it (an injection, a clear).
    pub fn on_poison_change(&mut self, listener: PoisonListener) {
        self.on_poison = Some(listener);
    }

    /// What the device has done so far.
    pub fn counts(&self) -> DsmCounts {
        self.counts
    }

    /// The answer to `call`: the bytes after the length word.
    fn answer(&mut self, call: &Call) -> Vec<u8> {
        if call.handle & LABEL_METHOD_FLAG != 0 {
            return self.label_method(call);
        }
        if call.handle == ROOT_HANDLE && call.revision == 1 {
            let before = self.root.poison();
            let answer = self.root.answer(call.function, &call.input);
            let after = self.root.poison();
            if let Some(listener) = self.on_poison.as_mut().filter(|_| after != before) {
                listener(&after);
            }
            return answer;
        }
        // Other handles (QEMU's private one) and other revisions offer no function.
        let dimm = call.revision == 1 && self.root.has_dimm(call.handle);
        // The size of the label area the _DSM serves: none without one, or with label-dsm=off.
        let label_size = self.labels.get(&call.handle).filter(|a| a.dsm).map(|a| a.store.size());
        if call.function == 0 {
            let mask = match (dimm, label_size.is_some()) {
                (false, _) => 0,
                (true, false) => HEALTH_FUNCTIONS,
                (true, true) => LABEL_FUNCTIONS,
            };
            return mask.to_le_bytes().to_vec();
        }
        if !dimm {
            return status(STATUS_UNSUPPORTED);
        }
        if call.function == 1 {
            return [status(STATUS_SUCCESS), smart_payload()].concat();
        }
        let Some(size) = label_size else { return status(STATUS_UNSUPPORTED) };
        match call.function {
            4 => [STATUS_SUCCESS, size, MAX_TRANSFER].iter().flat_map(|v| v.to_le_bytes()).collect(),
            5 | 6 => match self.transfer(call.handle, call.function, &call.input) {
                Ok(data) => [status(STATUS_SUCCESS), data].concat(),
                Err(TransferError::Invalid) => status(STATUS_INVALID),
                // The interface has no I/O error status; "not supported" makes Linux give up on the
                // labels rather than trust a short read.
                Err(TransferError::Io) => status(STATUS_UNSUPPORTED),
            },
            _ => status(STATUS_UNSUPPORTED),
        }
    }

    /// The answer to a call of a DIMM's label methods: functions 4-6 with the label methods' status
    /// codes, whatever the DIMM's `_DSM` offers.
    fn label_method(&mut self, call: &Call) -> Vec<u8> {
        let handle = call.handle & !LABEL_METHOD_FLAG;
        let served = call.revision == 1 && self.root.has_dimm(handle);
        let size = self.labels.get(&handle).filter(|_| served).map(|a| a.store.size());
        match (call.function, size) {
            // Always three words, so that the AML can take them apart without looking at the length.
            (4, size) => {
                let words = size.map_or([LS_FAILURE, 0, 0], |size| [LS_SUCCESS, size, MAX_TRANSFER]);
                words.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            (5 | 6, Some(_)) => match self.transfer(handle, call.function, &call.input) {
                Ok(data) => [status(LS_SUCCESS), data].concat(),
                Err(TransferError::Invalid) => status(LS_INVALID),
                Err(TransferError::Io) => status(LS_FAILURE),
            },
            _ => status(LS_FAILURE),
        }
    }

    /// Reads (function 5) or writes (6) the label area of `handle` as `input` asks: offset and length
    /// (u32 each), then a write's data. Returns what a read read (nothing for a write).
    fn transfer(&mut self, handle: u32, function: u32, input: &[u8]) -> Result<Vec<u8>, TransferError> {
        let Some(area) = self.labels.get_mut(&handle) else { return Err(TransferError::Invalid) };
        let size = area.store.size();
        let (offset, len) = (u32_at(input, 0), u32_at(input, 4));
        let in_range = offset.checked_add(len).is_some_and(|end| end <= size) && len <= MAX_TRANSFER;
        if !in_range || (function == 6 && input.len() < SET_HEADER + len as usize) {
            return Err(TransferError::Invalid);
        }
        let result = if function == 5 {
            let mut out = vec![0; len as usize];
            area.store.read(offset, &mut out).map(|()| out)
        } else {
            let data = &input[SET_HEADER..SET_HEADER + len as usize];
            area.store.write(offset, data).map(|()| Vec::new())
        };
        result.map_err(|e| {
            self.counts.io_errors += 1;
            if self.counts.io_errors == 1 {
                log::error!("NVDIMM label area of handle {handle:#x}: {e}");
            }
            TransferError::Io
        })
    }

    /// Handles a doorbell write of `value`: copies the call out of the page, answers it into the page.
    fn ring(&mut self, value: u32) {
        if u64::from(value) != NVDIMM_DSM_PAGE {
            self.counts.stray += 1;
            return;
        }
        let page = GuestAddress(NVDIMM_DSM_PAGE);
        let mut raw = vec![0u8; DSM_PAGE_SIZE];
        if self.mem.read_slice(&mut raw, page).is_err() {
            self.counts.stray += 1;
            return;
        }
        let call = Call {
            handle: u32_at(&raw, 0),
            revision: u32_at(&raw, 4),
            function: u32_at(&raw, 8),
            input: raw[IN_HEADER..].to_vec(),
        };
        let payload = self.answer(&call);
        self.counts.calls += 1;
        // Every answer fits: the largest is a read of MAX_TRANSFER bytes after its status.
        let mut out = Vec::with_capacity(4 + payload.len());
        out.extend_from_slice(&(4 + payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&payload);
        if self.mem.write_slice(&out, page).is_err() {
            self.counts.stray += 1;
        }
    }
}

impl BusDevice for NvdimmDsm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // The AML writes the doorbell as one DWord; anything else is not a call.
        if offset == 0 && data.len() == 4 {
            self.ring(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
        } else {
            self.counts.stray += 1;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::nvdimm_ars::ROOT_FUNCTIONS;

    const HANDLE: u32 = 1;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn device(label_size: usize) -> NvdimmDsm {
        device_with(label_size, true)
    }

    /// DIMM `HANDLE` with a label area of `label_size` bytes (each byte its offset, mod 256), offered
    /// through the _DSM if `dsm`; DIMM 2 without one.
    fn device_with(label_size: usize, dsm: bool) -> NvdimmDsm {
        let store = Box::new(MemoryLabels((0..label_size).map(|i| i as u8).collect()));
        let labels = vec![LabelArea { handle: HANDLE, store, dsm }];
        let dimms = vec![
            DimmRange { handle: HANDLE, base: 0x1_0000_0000, size: 1 << 30 },
            DimmRange { handle: 2, base: 0x1_4000_0000, size: 1 << 30 },
        ];
        NvdimmDsm::new(memory(), labels, dimms)
    }

    /// Writes a call into the page as the AML does, rings, and returns (RLEN, the payload).
    fn call(d: &mut NvdimmDsm, handle: u32, revision: u32, function: u32, input: &[u8]) -> (u32, Vec<u8>) {
        let page = GuestAddress(NVDIMM_DSM_PAGE);
        let mut raw = [handle.to_le_bytes(), revision.to_le_bytes(), function.to_le_bytes()].concat();
        raw.extend_from_slice(input);
        d.mem.write_slice(&raw, page).unwrap();
        d.write(0, &(NVDIMM_DSM_PAGE as u32).to_le_bytes());
        let mut out = vec![0u8; DSM_PAGE_SIZE];
        d.mem.read_slice(&mut out, page).unwrap();
        let len = u32_at(&out, 0);
        (len, out[4..len.clamp(4, DSM_PAGE_SIZE as u32) as usize].to_vec())
    }

    fn words(b: &[u8]) -> Vec<u32> {
        b.chunks(4).map(|c| u32_at(c, 0)).collect()
    }

    fn rw(offset: u32, len: u32, data: &[u8]) -> Vec<u8> {
        [&offset.to_le_bytes()[..], &len.to_le_bytes(), data].concat()
    }

    #[test]
    fn function_0_lists_the_label_functions_of_a_dimm_with_labels_only() {
        let mut d = device(128 << 10);
        assert_eq!(call(&mut d, HANDLE, 1, 0, &[]), (8, 0x73u32.to_le_bytes().to_vec()));
        assert_eq!(call(&mut d, 2, 1, 0, &[]).1, 3u32.to_le_bytes(), "a DIMM without labels: SMART only");
        // Another revision, a handle that is no DIMM: nothing.
        for (handle, rev) in [(HANDLE, 2), (3, 1), (0x1_0000, 1)] {
            assert_eq!(call(&mut d, handle, rev, 0, &[]).1, vec![0; 4], "handle {handle} rev {rev}");
        }
        assert_eq!(call(&mut d, 0, 1, 0, &[]).1, ROOT_FUNCTIONS.to_le_bytes(), "the root device");
    }

    #[test]
    fn the_root_device_injects_scrubs_and_clears_through_the_page() {
        let mut d = device(128 << 10);
        let spa = 0x1_0000_0000u64 + 42 * 512;
        let range = [spa.to_le_bytes(), 512u64.to_le_bytes()].concat();
        assert_eq!(call(&mut d, 0, 1, 7, &range), (8, vec![0; 4]));
        assert_eq!(d.poison(), [(spa, 512)]);
        let scrub =
            [0x1_0000_0000u64.to_le_bytes(), (1u64 << 30).to_le_bytes(), [2, 0, 0, 0, 0, 0, 0, 0]].concat();
        assert_eq!(call(&mut d, 0, 1, 2, &scrub).1, [0u32, 1].map(u32::to_le_bytes).concat());
        let (len, status) = call(&mut d, 0, 1, 3, &[]);
        assert_eq!(len, 4 + 72, "status, header and one record");
        assert_eq!(words(&status[..8]), [0, 68]);
        assert_eq!(call(&mut d, 0, 1, 4, &range).1[..4], [0; 4]);
        assert!(d.poison().is_empty());
    }

    #[test]
    fn the_poison_listener_hears_every_change_and_nothing_else() {
        let mut d = device(128 << 10);
        let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = heard.clone();
        d.on_poison_change(Box::new(move |p: &[(u64, u64)]| h.lock().unwrap().push(p.to_vec())));
        let spa = 0x1_0000_0000u64 + 8 * 512;
        let range = [spa.to_le_bytes(), 1024u64.to_le_bytes()].concat();
        call(&mut d, 0, 1, 7, &range);
        call(&mut d, 0, 1, 9, &[]);
        call(&mut d, HANDLE, 1, 1, &[]);
        let outside = [0x10u64.to_le_bytes(), 512u64.to_le_bytes()].concat();
        call(&mut d, 0, 1, 7, &outside);
        call(&mut d, 0, 1, 4, &range);
        assert_eq!(*heard.lock().unwrap(), vec![vec![(spa, 1024)], vec![]], "inject, then clear");
    }

    #[test]
    fn smart_health_says_ok_at_23_degrees_on_every_dimm() {
        let mut d = device(128 << 10);
        for handle in [HANDLE, 2] {
            let (len, out) = call(&mut d, handle, 1, 1, &[]);
            assert_eq!(len, 4 + 4 + 128);
            assert_eq!(words(&out[..8]), [0, 0x63f], "status, then the valid fields");
            assert_eq!(out[4 + 8], 0, "health: ok");
            assert_eq!((out[4 + 9], out[4 + 10]), (100, 0), "spares and life used, in %");
            assert_eq!(u16::from_le_bytes([out[4 + 12], out[4 + 13]]), 23 * 16, "media temperature");
            assert_eq!(out[4 + 27], 0, "shutdown state: clean");
        }
        assert_eq!(call(&mut d, 3, 1, 1, &[]).1, 1u32.to_le_bytes(), "no such DIMM");
    }

    #[test]
    fn label_size_reports_the_area_and_the_largest_transfer() {
        let mut d = device(128 << 10);
        let (len, out) = call(&mut d, HANDLE, 1, 4, &[]);
        assert_eq!(len, 16);
        assert_eq!(words(&out), [0, 128 << 10, MAX_TRANSFER]);
        assert_eq!(MAX_TRANSFER, 4076);
    }

    #[test]
    fn reads_and_writes_land_at_their_offsets() {
        let mut d = device(128 << 10);
        let (len, out) = call(&mut d, HANDLE, 1, 5, &rw(0x100, 8, &[]));
        assert_eq!(len, 16);
        assert_eq!(out, [&[0, 0, 0, 0][..], &[0, 1, 2, 3, 4, 5, 6, 7]].concat());

        let data: Vec<u8> = (0..MAX_TRANSFER).map(|i| (i * 7) as u8).collect();
        let end = (128 << 10) - MAX_TRANSFER;
        assert_eq!(call(&mut d, HANDLE, 1, 6, &rw(end, MAX_TRANSFER, &data)), (8, vec![0; 4]));
        let (len, out) = call(&mut d, HANDLE, 1, 5, &rw(end, MAX_TRANSFER, &[]));
        assert_eq!(len, 8 + MAX_TRANSFER);
        assert_eq!(&out[4..], &data[..]);
        assert_eq!(d.counts().calls, 3);
    }

    #[test]
    fn out_of_range_and_oversized_transfers_are_invalid_input() {
        let mut d = device(128 << 10);
        let size = 128u32 << 10;
        for input in [
            rw(size - 4, 8, &[]),         // past the end
            rw(u32::MAX, 2, &[]),         // offset + length overflows
            rw(0, MAX_TRANSFER + 1, &[]), // more than one transfer
        ] {
            assert_eq!(call(&mut d, HANDLE, 1, 5, &input), (8, 3u32.to_le_bytes().to_vec()));
            assert_eq!(call(&mut d, HANDLE, 1, 6, &input).1, 3u32.to_le_bytes());
        }
        // The area is unchanged.
        assert_eq!(call(&mut d, HANDLE, 1, 5, &rw(size - 4, 4, &[])).1, [0, 0, 0, 0, 0xfc, 0xfd, 0xfe, 0xff]);
    }

    #[test]
    fn other_functions_revisions_and_devices_are_refused() {
        let mut d = device(128 << 10);
        assert_eq!(call(&mut d, HANDLE, 1, 2, &[]).1, 1u32.to_le_bytes(), "SMART threshold: not supported");
        assert_eq!(call(&mut d, HANDLE, 1, 31, &[]).1, 1u32.to_le_bytes());
        assert_eq!(call(&mut d, HANDLE, 2, 4, &[]).1, 1u32.to_le_bytes(), "revision 2");
        assert_eq!(call(&mut d, 0, 2, 4, &[]).1, 1u32.to_le_bytes(), "the root device at revision 2");
        assert_eq!(call(&mut d, 0, 2, 0, &[]).1, 0u32.to_le_bytes(), "... offers nothing");
        assert_eq!(call(&mut d, 2, 1, 4, &[]).1, 1u32.to_le_bytes(), "a DIMM without labels");
        assert_eq!(call(&mut d, 0x1_0000, 1, 5, &[]).1, 1u32.to_le_bytes(), "QEMU's reserved handle");
    }

    #[test]
    fn stray_doorbells_leave_the_page_alone() {
        let mut d = device(128 << 10);
        let page = GuestAddress(NVDIMM_DSM_PAGE);
        d.mem.write_slice(&[9u8; 16], page).unwrap();
        d.write(0, &0x1000u32.to_le_bytes());
        d.write(0, &[1, 2]);
        d.write(2, &(NVDIMM_DSM_PAGE as u32).to_le_bytes());
        let mut out = [0u8; 16];
        d.mem.read_slice(&mut out, page).unwrap();
        assert_eq!(out, [9u8; 16]);
        assert_eq!(d.counts(), DsmCounts { calls: 0, io_errors: 0, stray: 3 });
        let mut r = [0xffu8; 4];
        d.read(0, &mut r);
        assert_eq!(r, [0; 4]);
    }

    #[test]
    fn a_failing_store_is_a_failed_call() {
        struct Broken;
        impl LabelStore for Broken {
            fn size(&self) -> u32 {
                128 << 10
            }
            fn read(&mut self, _: u32, _: &mut [u8]) -> std::io::Result<()> {
                Err(std::io::Error::other("disk gone"))
            }
            fn write(&mut self, _: u32, _: &[u8]) -> std::io::Result<()> {
                Err(std::io::Error::other("disk gone"))
            }
        }
        let dimm = DimmRange { handle: HANDLE, base: 0x1_0000_0000, size: 1 << 30 };
        let labels = vec![LabelArea { handle: HANDLE, store: Box::new(Broken), dsm: true }];
        let mut d = NvdimmDsm::new(memory(), labels, vec![dimm]);
        assert_eq!(call(&mut d, HANDLE, 1, 5, &rw(0, 8, &[])).1, 1u32.to_le_bytes());
        assert_eq!(call(&mut d, HANDLE, 1, 6, &rw(0, 1, &[7])).1, 1u32.to_le_bytes());
        // The label methods' "failure" is 1 too.
        let lm = HANDLE | LABEL_METHOD_FLAG;
        assert_eq!(call(&mut d, lm, 1, 5, &rw(0, 8, &[])).1, 1u32.to_le_bytes());
        assert_eq!(call(&mut d, lm, 1, 6, &rw(0, 1, &[7])).1, 1u32.to_le_bytes());
        assert_eq!(d.counts().io_errors, 4);
    }

    #[test]
    fn a_short_write_input_is_invalid() {
        let mut d = device(128 << 10);
        // The page always holds the whole input area, so a write's data is never short there; the
        // check matters only for callers of `answer` with a shorter buffer.
        let c = Call { handle: HANDLE, revision: 1, function: 6, input: rw(0, 16, &[1, 2]) };
        assert_eq!(d.answer(&c), 3u32.to_le_bytes());
    }

    #[test]
    fn label_dsm_off_leaves_the_label_functions_out_of_the_dsm() {
        let mut d = device_with(128 << 10, false);
        assert_eq!(call(&mut d, HANDLE, 1, 0, &[]).1, 3u32.to_le_bytes(), "function 0: SMART only");
        assert_eq!(call(&mut d, HANDLE, 1, 1, &[]).0, 4 + 4 + 128, "SMART health stays");
        for (function, input) in [(4, vec![]), (5, rw(0, 8, &[])), (6, rw(0, 1, &[9]))] {
            assert_eq!(
                call(&mut d, HANDLE, 1, function, &input),
                (8, 1u32.to_le_bytes().to_vec()),
                "{function}"
            );
        }
        // The label methods still reach the area, and the refused write did not.
        let (_, out) = call(&mut d, HANDLE | LABEL_METHOD_FLAG, 1, 5, &rw(0, 4, &[]));
        assert_eq!(out, [0, 0, 0, 0, 0, 1, 2, 3]);
        let (_, out) = call(&mut d, HANDLE | LABEL_METHOD_FLAG, 1, 4, &[]);
        assert_eq!(words(&out), [0, 128 << 10, MAX_TRANSFER]);
    }

    #[test]
    fn the_label_methods_read_and_write_with_their_own_status_codes() {
        for dsm in [true, false] {
            let mut d = device_with(128 << 10, dsm);
            let lm = HANDLE | LABEL_METHOD_FLAG;
            assert_eq!(
                call(&mut d, lm, 1, 4, &[]),
                (16, [0u32, 128 << 10, MAX_TRANSFER].map(u32::to_le_bytes).concat())
            );
            let data: Vec<u8> = (0..MAX_TRANSFER).map(|i| (i * 3) as u8).collect();
            assert_eq!(call(&mut d, lm, 1, 6, &rw(0x2000, MAX_TRANSFER, &data)), (8, vec![0; 4]));
            let (len, out) = call(&mut d, lm, 1, 5, &rw(0x2000, MAX_TRANSFER, &[]));
            assert_eq!(len, 8 + MAX_TRANSFER);
            assert_eq!((&out[..4], &out[4..]), (&[0u8; 4][..], &data[..]));
            // The _DSM sees the same area.
            if dsm {
                assert_eq!(call(&mut d, HANDLE, 1, 5, &rw(0x2000, 4, &[])).1[4..], data[..4]);
            }
            // Invalid input is 2 here (3 would say "locked").
            let size = 128u32 << 10;
            for input in [rw(size - 4, 8, &[]), rw(u32::MAX, 2, &[]), rw(0, MAX_TRANSFER + 1, &[])] {
                assert_eq!(call(&mut d, lm, 1, 5, &input), (8, 2u32.to_le_bytes().to_vec()));
                assert_eq!(call(&mut d, lm, 1, 6, &input), (8, 2u32.to_le_bytes().to_vec()));
            }
            let c = Call { handle: lm, revision: 1, function: 6, input: rw(0, 16, &[1, 2]) };
            assert_eq!(d.answer(&c), 2u32.to_le_bytes(), "a short write");
        }
    }

    #[test]
    fn the_label_methods_of_a_dimm_without_labels_fail() {
        let mut d = device(128 << 10);
        let failure = 1u32.to_le_bytes().to_vec();
        // Function 4 keeps its three words, so the AML's fields exist.
        for handle in [2, 3, 0, 0x1_0000] {
            let lm = handle | LABEL_METHOD_FLAG;
            assert_eq!(
                call(&mut d, lm, 1, 4, &[]),
                (16, [1u32, 0, 0].map(u32::to_le_bytes).concat()),
                "{handle}"
            );
            assert_eq!(call(&mut d, lm, 1, 5, &rw(0, 8, &[])), (8, failure.clone()), "{handle}");
            assert_eq!(call(&mut d, lm, 1, 6, &rw(0, 1, &[1])), (8, failure.clone()), "{handle}");
        }
        // Another revision or function: failure, even for the DIMM with labels.
        let lm = HANDLE | LABEL_METHOD_FLAG;
        assert_eq!(call(&mut d, lm, 2, 4, &[]).1, [1u32, 0, 0].map(u32::to_le_bytes).concat());
        assert_eq!(call(&mut d, lm, 2, 5, &rw(0, 8, &[])).1, failure);
        for function in [0, 1, 7, u32::MAX] {
            assert_eq!(call(&mut d, lm, 1, function, &[]).1, failure, "function {function}");
        }
        assert_eq!(d.counts().io_errors, 0);
    }
}
