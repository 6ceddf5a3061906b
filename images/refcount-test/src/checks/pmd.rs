//! 2 MiB (PMD) fs-dax folios: one order-9 folio per aligned 2 MiB extent, one reference and one mapcount
//! per PMD mapping, one reference per pinned page, idle after unpin and munmap.

use super::{pin, q_str, query, CheckError, IoctlResult};
use crate::abi::{PIN_WRITE, Q_FSDAX, Q_RELEASED, UNPIN_KEEP_PFNS};
use crate::sys::{map_file_aligned, Dev, TFile, MAP_SHARED_VALIDATE, MAP_SYNC, PAGE, PMD};
use crate::tap::{check, diag, Res};

pub const PMD_NAMES: &[&str] = &[
    "2 MiB file mapped at a 2 MiB boundary is one order-9 fs-dax folio",
    "one mapping + one pinned page: ref_count 2, mapcount 1",
    "a second mapping (MAP_SYNC) adds +1 ref and +1 mapcount",
    "range pin of all 512 pages: +512 refs, contiguous pfns in the same folio",
    "after unpin and munmap of both mappings the folio is idle (ref_count 0, mapcount 0)",
];

pub fn pmd(dir: &str, out: &mut Vec<Res>) -> Result<(), CheckError> {
    let d = Dev::open()?;
    let f = TFile::create(dir, "pmd", PMD)?;
    let mut m1 = map_file_aligned(f.fd, PMD, libc::MAP_SHARED)?;
    m1.touch();
    let p = pin(&d, m1.addr(), PAGE, PIN_WRITE)?;
    let q1 = query(&d, p.handle, 0)?;
    diag(&format!("pmd, one mapping: {}", q_str(&q1)));
    out.push(check(q1.order == 9 && q1.flags & Q_FSDAX != 0 && q1.pfn % 512 == 0, || {
        format!(
            "{} (order 0 means the fault fell back to 4 KiB pages: is the extent 2 MiB aligned?)",
            q_str(&q1)
        )
    }));
    out.push(check(q1.ref_count == 2 && q1.mapcount == 1, || q_str(&q1)));
    let mut m2 = map_file_aligned(f.fd, PMD, MAP_SHARED_VALIDATE | MAP_SYNC)?;
    m2.touch();
    let q2 = query(&d, p.handle, 0)?;
    diag(&format!("pmd, two mappings: {}", q_str(&q2)));
    out.push(check(
        q2.ref_count == q1.ref_count + 1 && q2.mapcount == q1.mapcount + 1 && q2.order == 9,
        || format!("one mapping: {}; two: {}", q_str(&q1), q_str(&q2)),
    ));
    let all = pin(&d, m2.addr(), PMD, 0)?;
    let qa0 = query(&d, all.handle, 0)?;
    let qa511 = query(&d, all.handle, 511)?;
    diag(&format!("pmd, +range pin: {}", q_str(&qa511)));
    out.push(check(
        all.nr_pages == 512
            && qa0.ref_count == q2.ref_count + 512
            && qa0.pfn == q1.pfn
            && qa511.pfn == q1.pfn + 511
            && qa511.order == 9
            && qa511.handle_pins == 512,
        || format!("nr_pages {}; index 0: {}; index 511: {}", all.nr_pages, q_str(&qa0), q_str(&qa511)),
    ));
    d.unpin(all.handle, 0).ioctl("UNPIN")?;
    m1.unmap();
    m2.unmap();
    d.unpin(p.handle, UNPIN_KEEP_PFNS).ioctl("UNPIN keep")?;
    let q3 = query(&d, p.handle, 0)?;
    diag(&format!("pmd idle: {}", q_str(&q3)));
    out.push(check(q3.ref_count == 0 && q3.mapcount == 0 && q3.flags & Q_RELEASED != 0, || q_str(&q3)));
    Ok(())
}
