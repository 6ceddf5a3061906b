//! The NVDIMM root device's `_DSM` functions (ACPI 6.5, 9.19.7.1, revision 1): address-range scrub
//! (1 capabilities, 2 start, 3 status), 4 clear uncorrectable error, and the error injection Linux
//! reaches through `ndctl inject-error` (7 inject, 8 clear an injection, 9 list injections). It owns the
//! poisoned ranges: an injection adds one, a scrub reports those inside the scrubbed range (Linux turns
//! them into the region's badblocks, and the pmem driver fails reads of them with EIO), and clearing an
//! error or an injection removes it. The list is all this module knows; the VMM is told of every change
//! ([`crate::nvdimm_dsm::NvdimmDsm::on_poison_change`]) and makes loads from poison machine checks.
//!
//! A scrub finishes at once: Linux's first status query after a start sees it done. The guest is
//! untrusted: every field is read from a copy, ranges must lie inside one DIMM, and the list is bounded
//! ([`MAX_POISON`]), so a bad call gets status 2, "invalid input", never a panic or unbounded memory.

/// Function status: success.
const SUCCESS: u32 = 0;
/// Function status: not supported.
const UNSUPPORTED: u32 = 1;
/// Function status: invalid input parameters.
const INVALID: u32 = 2;
/// Extended status of function 3: no scrub has run since boot.
const ARS_NONE: u32 = 2 << 16;
/// ARS capabilities' extended status: persistent-memory scrub supported.
const ARS_PERSISTENT: u32 = 2 << 16;
/// Scrub type bit of function 2: persistent memory.
const TYPE_PERSISTENT: u16 = 2;

/// Functions 0-4 and 7-9 (5, translate SPA, is not offered).
pub const ROOT_FUNCTIONS: u32 = 1 | 1 << 1 | 1 << 2 | 1 << 3 | 1 << 4 | 1 << 7 | 1 << 8 | 1 << 9;
/// The most poisoned ranges kept; an injection beyond them is refused.
pub const MAX_POISON: usize = 128;
/// The unit a clear works in, and the granularity of injections (Linux's sector).
pub const CLEAR_UNIT: u32 = 512;
/// Bytes of a status answer before its records (the record area starts 44 bytes after the status word,
/// at the output length, which counts itself).
const STATUS_HEADER: u32 = 44;
/// One ARS record: DIMM handle, reserved, address, length.
const RECORD: u32 = 24;
/// The largest status answer, which Linux allocates once from the capabilities.
pub const MAX_ARS_OUT: u32 = 4 + STATUS_HEADER + RECORD * MAX_POISON as u32;

/// One DIMM's system-physical range and its NFIT device handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DimmRange {
    /// NFIT device handle.
    pub handle: u32,
    /// First guest-physical address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// The root device's state: the DIMMs, the poisoned ranges and the last scrub.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootDsm {
    dimms: Vec<DimmRange>,
    /// Poisoned ranges (start, end exclusive), sorted and disjoint.
    poison: Vec<(u64, u64)>,
    /// The last scrub started: address, length, type.
    scrub: Option<(u64, u64, u16)>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl RootDsm {
    /// The root device of a machine with the NFIT DIMMs `dimms`.
    pub fn new(dimms: Vec<DimmRange>) -> Self {
        RootDsm { dimms, ..RootDsm::default() }
    }

    /// Whether `handle` is one of the DIMMs' NFIT device handles.
    pub fn has_dimm(&self, handle: u32) -> bool {
        self.dimms.iter().any(|d| d.handle == handle)
    }

    /// The poisoned ranges, as (address, length).
    pub fn poison(&self) -> Vec<(u64, u64)> {
        self.poison.iter().map(|&(s, e)| (s, e - s)).collect()
    }

    /// Poisons `[address, address + length)`: what function 7 does; false unless the range lies inside
    /// one DIMM and the list has room.
    pub fn inject(&mut self, address: u64, length: u64) -> bool {
        self.dimm_of(address, length).is_some() && self.add(address, length)
    }

    /// The DIMM whose range holds all of `[address, address + length)`, for a non-empty range.
    fn dimm_of(&self, address: u64, length: u64) -> Option<&DimmRange> {
        let end = address.checked_add(length).filter(|_| length > 0)?;
        self.dimms.iter().find(|d| address >= d.base && end <= d.base + d.size)
    }

    /// The answer to root function `function` with input `input` (the bytes after the call header):
    /// the payload after the answer's length word.
    pub fn answer(&mut self, function: u32, input: &[u8]) -> Vec<u8> {
        let (address, length) = (u64_at(input, 0), u64_at(input, 8));
        match function {
            0 => ROOT_FUNCTIONS.to_le_bytes().to_vec(),
            1 => match self.dimm_of(address, length) {
                Some(_) => words(&[SUCCESS | ARS_PERSISTENT, MAX_ARS_OUT, CLEAR_UNIT, 0]),
                None => words(&[INVALID, 0, 0, 0]),
            },
            2 => {
                let kind = u16_at(input, 16);
                if kind & TYPE_PERSISTENT == 0 || self.dimm_of(address, length).is_none() {
                    return words(&[INVALID, 0]);
                }
                self.scrub = Some((address, length, kind));
                // Status, then the estimated time in seconds.
                words(&[SUCCESS, 1])
            }
            3 => self.status(),
            4 => {
                if self.dimm_of(address, length).is_none() {
                    return words(&[INVALID, 0, 0, 0]);
                }
                self.remove(address, length);
                let mut out = words(&[SUCCESS, 0]);
                out.extend_from_slice(&length.to_le_bytes());
                out
            }
            7 => words(&[if self.inject(address, length) { SUCCESS } else { INVALID }]),
            8 => {
                if self.dimm_of(address, length).is_none() {
                    return words(&[INVALID]);
                }
                self.remove(address, length);
                words(&[SUCCESS])
            }
            9 => {
                let mut out = words(&[SUCCESS, self.poison.len() as u32]);
                for (start, len) in self.poison() {
                    out.extend_from_slice(&start.to_le_bytes());
                    out.extend_from_slice(&len.to_le_bytes());
                }
                out
            }
            _ => words(&[UNSUPPORTED]),
        }
    }

    /// Function 3: the last scrub, done, with the poisoned ranges inside it.
    fn status(&self) -> Vec<u8> {
        let Some((address, length, kind)) = self.scrub else {
            return words(&[ARS_NONE, STATUS_HEADER, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        };
        let end = address + length;
        let records: Vec<(u32, u64, u64)> = self
            .poison
            .iter()
            .filter_map(|&(s, e)| {
                let (s, e) = (s.max(address), e.min(end));
                let dimm = self.dimms.iter().find(|d| s >= d.base && s < d.base + d.size)?;
                (s < e).then(|| (dimm.handle, s, e - s))
            })
            .collect();
        let mut out = words(&[SUCCESS, STATUS_HEADER + RECORD * records.len() as u32]);
        for v in [address, length, 0, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(records.len() as u32).to_le_bytes());
        for (handle, start, len) in records {
            out.extend_from_slice(&words(&[handle, 0]));
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        out
    }

    /// Adds `[address, address + length)` (inside one DIMM), merged with the ranges of that DIMM it
    /// touches; false when the list is full.
    fn add(&mut self, address: u64, length: u64) -> bool {
        let (mut start, mut end) = (address, address + length);
        let dimm = self.dimm_of(address, length).map(|d| (d.base, d.base + d.size));
        let same_dimm = |s: u64| dimm.is_some_and(|(b, e)| s >= b && s < e);
        let mut kept = Vec::with_capacity(self.poison.len() + 1);
        for &(s, e) in &self.poison {
            if e < start || s > end || !same_dimm(s) {
                kept.push((s, e));
            } else {
                start = start.min(s);
                end = end.max(e);
            }
        }
        if kept.len() >= MAX_POISON {
            return false;
        }
        kept.push((start, end));
        kept.sort_unstable();
        self.poison = kept;
        true
    }

    /// Removes `[address, address + length)` from every range (splitting one that contains it).
    fn remove(&mut self, address: u64, length: u64) {
        let (start, end) = (address, address + length);
        let mut kept = Vec::with_capacity(self.poison.len() + 1);
        for &(s, e) in &self.poison {
            if s < start {
                kept.push((s, e.min(start)));
            }
            if e > end {
                kept.push((s.max(end), e));
            }
        }
        // A split can add one range; dropping the last keeps the bound (it stays poisoned until then
        // only in the guest's own badblocks).
        kept.truncate(MAX_POISON);
        self.poison = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x1_0000_0000;
    const SIZE: u64 = 1 << 30;

    fn root() -> RootDsm {
        RootDsm::new(vec![
            DimmRange { handle: 1, base: BASE, size: SIZE },
            DimmRange { handle: 2, base: BASE + SIZE, size: SIZE },
        ])
    }

    fn range(address: u64, length: u64) -> Vec<u8> {
        [address.to_le_bytes(), length.to_le_bytes()].concat()
    }

    fn start(address: u64, length: u64, kind: u16) -> Vec<u8> {
        let mut v = range(address, length);
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(&[0; 6]);
        v
    }

    fn u32s(b: &[u8]) -> Vec<u32> {
        b.chunks(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
    }

    #[test]
    fn function_0_offers_scrub_clear_and_injection_but_not_translate() {
        let mut r = root();
        assert_eq!(r.answer(0, &[]), 0x39fu32.to_le_bytes());
        assert_eq!(ROOT_FUNCTIONS & 1 << 5, 0);
        assert_eq!(r.answer(5, &[]), 1u32.to_le_bytes());
        assert_eq!(r.answer(6, &[]), 1u32.to_le_bytes());
    }

    #[test]
    fn capabilities_say_persistent_scrub_inside_a_dimm_only() {
        let mut r = root();
        let cap = u32s(&r.answer(1, &range(BASE, SIZE)));
        assert_eq!(cap, [2 << 16, MAX_ARS_OUT, 512, 0]);
        assert!(MAX_ARS_OUT as usize <= crate::nvdimm_dsm::DSM_PAGE_SIZE - 4, "the answer fits the page");
        assert_eq!(u32s(&r.answer(1, &range(BASE, SIZE + 1)))[0], INVALID, "across the end");
        assert_eq!(u32s(&r.answer(1, &range(BASE + SIZE / 2, SIZE)))[0], INVALID, "across two DIMMs");
        assert_eq!(u32s(&r.answer(1, &range(0, 4096)))[0], INVALID, "RAM");
        assert_eq!(u32s(&r.answer(1, &range(BASE, 0)))[0], INVALID, "empty");
        assert_eq!(u32s(&r.answer(1, &range(u64::MAX - 1, 16)))[0], INVALID, "wrapping");
    }

    #[test]
    fn before_a_scrub_the_status_is_none_and_after_it_done_with_the_records_inside() {
        let mut r = root();
        let none = r.answer(3, &[]);
        assert_eq!(u32s(&none)[..2], [2 << 16, 44]);
        assert_eq!(none.len(), 48);
        assert_eq!(r.answer(7, &[range(BASE + 42 * 512, 512), vec![1]].concat()), [0; 4]);
        assert_eq!(r.answer(7, &range(BASE + SIZE + 4096, 1024)), [0; 4]);
        assert_eq!(u32s(&r.answer(2, &start(BASE, SIZE, 1)))[0], INVALID, "a volatile scrub");
        assert_eq!(u32s(&r.answer(2, &start(BASE, SIZE, 2))), [0, 1]);
        let done = r.answer(3, &[]);
        let w = u32s(&done[..48]);
        assert_eq!((w[0], w[1]), (0, 44 + 24), "one record: the second DIMM's is outside the scrub");
        assert_eq!(u64_at(&done, 8), BASE);
        assert_eq!(u64_at(&done, 16), SIZE);
        assert_eq!((u16_at(&done, 40), w[11]), (2, 1));
        assert_eq!(u32s(&done[48..56]), [1, 0], "handle of the first DIMM");
        assert_eq!((u64_at(&done, 56), u64_at(&done, 64)), (BASE + 42 * 512, 512));
        assert_eq!(done.len(), 72);
    }

    #[test]
    fn records_are_clipped_to_the_scrubbed_range() {
        let mut r = root();
        r.answer(7, &range(BASE + 4096, 8192));
        r.answer(2, &start(BASE + 8192, 4096, 2));
        let done = r.answer(3, &[]);
        assert_eq!((u64_at(&done, 56), u64_at(&done, 64)), (BASE + 8192, 4096));
    }

    #[test]
    fn injections_merge_and_clears_split_them() {
        let mut r = root();
        for i in [0u64, 1, 3] {
            r.answer(7, &range(BASE + i * 512, 512));
        }
        assert_eq!(r.poison(), [(BASE, 1024), (BASE + 1536, 512)]);
        r.answer(7, &range(BASE + 1024, 512));
        assert_eq!(r.poison(), [(BASE, 2048)], "the gap filled joins them");
        let cleared = r.answer(4, &range(BASE + 512, 512));
        assert_eq!(u32s(&cleared[..8]), [0, 0]);
        assert_eq!(u64_at(&cleared, 8), 512, "cleared length");
        assert_eq!(r.poison(), [(BASE, 512), (BASE + 1024, 1024)]);
        assert_eq!(r.answer(8, &range(BASE, 4096)), [0; 4]);
        assert!(r.poison().is_empty());
        let list = r.answer(9, &[]);
        assert_eq!(u32s(&list), [0, 0]);
    }

    #[test]
    fn ranges_of_neighbouring_dimms_stay_apart() {
        let mut r = root();
        r.answer(7, &range(BASE + SIZE - 512, 512));
        r.answer(7, &range(BASE + SIZE, 512));
        assert_eq!(r.poison(), [(BASE + SIZE - 512, 512), (BASE + SIZE, 512)]);
        r.answer(2, &start(BASE + SIZE, SIZE, 2));
        let done = r.answer(3, &[]);
        assert_eq!(u32s(&done[44..52]), [1, 2], "one record, of the second DIMM");
    }

    #[test]
    fn the_injection_list_reports_each_range() {
        let mut r = root();
        r.answer(7, &range(BASE + 512, 512));
        r.answer(7, &range(BASE + SIZE, 4096));
        let list = r.answer(9, &[]);
        assert_eq!(u32s(&list[..8]), [0, 2]);
        assert_eq!((u64_at(&list, 8), u64_at(&list, 16)), (BASE + 512, 512));
        assert_eq!((u64_at(&list, 24), u64_at(&list, 32)), (BASE + SIZE, 4096));
    }

    #[test]
    fn bad_ranges_are_invalid_and_the_list_is_bounded() {
        let mut r = root();
        assert_eq!(r.answer(7, &range(0, 512)), INVALID.to_le_bytes());
        assert_eq!(r.answer(8, &range(BASE + SIZE - 1, 2 * SIZE)), INVALID.to_le_bytes());
        assert_eq!(u32s(&r.answer(4, &range(BASE, 0)))[0], INVALID);
        for i in 0..MAX_POISON as u64 {
            assert_eq!(r.answer(7, &range(BASE + i * 1024, 512)), [0; 4], "{i}");
        }
        assert_eq!(r.answer(7, &range(BASE + SIZE - 512, 512)), INVALID.to_le_bytes(), "full");
        assert_eq!(r.answer(7, &range(BASE + 512, 512)), [0; 4], "merging into the list still works");
        r.answer(2, &start(BASE, SIZE, 2));
        assert!(r.answer(3, &[]).len() <= MAX_ARS_OUT as usize, "the fullest status fits its bound");
        // Short or missing input reads as zeros: an empty range, refused.
        assert_eq!(r.answer(7, &[1, 2, 3]), INVALID.to_le_bytes());
    }
}
