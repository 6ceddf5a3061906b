//! The check families, one module each, and the helpers they share. Each family is a const array of
//! check names (printed in this order, numbered consecutively across families by `main`) and a scenario
//! function that pushes one result per name.
//!
//! The invariants are those of docs/dax-refcount.md (the fs-dax refcount series, Linux 6.15+, here
//! 7.2): a pinned fs-dax page holds the pin bias (1024) on a small folio or one reference per pinned page
//! on a large one; each mapping holds one reference and one mapcount; an idle folio has refcount 0;
//! truncate waits for pins (interruptibly); FOLL_LONGTERM pins of fs-dax pages are refused.

pub mod fuzz;
pub mod input;
pub mod klog;
pub mod longterm;
pub mod pmd;
pub mod small;
pub mod truncate;

use crate::abi::{Pin, Query};
use crate::sys::{ename, Dev};

/// GUP_PIN_COUNTING_BIAS (include/linux/mm.h): what one FOLL_PIN adds to a small folio's refcount.
pub const PIN_BIAS: i32 = 1024;

pub fn q_str(q: &Query) -> String {
    format!(
        "pfn {:#x} order {} ref_count {} mapcount {} handle_pins {} flags {:#x} pgmap_offset {:#x}",
        q.pfn, q.order, q.ref_count, q.mapcount, q.handle_pins, q.flags, q.pgmap_offset
    )
}

pub fn query(d: &Dev, h: u64, i: u64) -> Result<Query, String> {
    d.query(h, i).map_err(|e| format!("QUERY handle {h} index {i}: {}", ename(e)))
}

pub fn pin(d: &Dev, addr: usize, len: usize, flags: u32) -> Result<Pin, String> {
    d.pin(addr, len, flags).map_err(|e| format!("PIN {addr:#x}+{len:#x} flags {flags}: {}", ename(e)))
}
