//! Small (4 KiB) fs-dax pages: the reference counts a mapping and a pin hold, writes through a pin, the
//! idle state after unpin and munmap, and the folio_free hook.

use super::{pin, q_str, query, CheckError, IoctlResult, PIN_BIAS};
use crate::abi::{PIN_WRITE, Q_FSDAX, Q_PGMAP, Q_RELEASED, Q_WRITE, Q_ZONE_DEVICE, UNPIN_KEEP_PFNS};
use crate::sys::{map_file, Dev, TFile, PAGE};
use crate::tap::{check, diag, expect_err, Res};

pub const SMALL: &[&str] = &[
    "hooks registered; pinned page of a 4 KiB-mapped DAX file is an fs-dax page, order 0, pgmap found",
    "mapped and pinned: ref_count = 1 (mapping) + 1024 (pin bias), mapcount 1",
    "WRITE_THROUGH_PIN data is visible through the mapping",
    "pinned after munmap: ref_count = 1024 (pin bias only), mapcount 0",
    "idle after unpin and munmap: ref_count 0, mapcount 0",
    "folio_free hook reported the freed pfn",
    "a forgotten handle is gone (ENOENT)",
];

pub fn small_page(dir: &str, out: &mut Vec<Res>) -> Result<(), CheckError> {
    let d = Dev::open()?;
    let st0 = d.stats().ioctl("HOOK_STATS")?;
    let f = TFile::create(dir, "small", 4 * PAGE)?;
    let mut m = map_file(f.fd, 4 * PAGE)?;
    m.touch();
    let p = pin(&d, m.addr() + PAGE, PAGE, PIN_WRITE)?;
    let q = query(&d, p.handle, 0)?;
    diag(&format!("small: {}", q_str(&q)));
    let want = Q_ZONE_DEVICE | Q_FSDAX | Q_PGMAP | Q_WRITE;
    out.push(check(
        st0.hooks_registered == 1 && p.nr_pages == 1 && q.flags == want && q.order == 0 && q.handle_pins == 1,
        || {
            format!(
                "hooks_registered {} nr_pages {} {} (want flags {want:#x})",
                st0.hooks_registered,
                p.nr_pages,
                q_str(&q)
            )
        },
    ));
    out.push(check(q.ref_count == 1 + PIN_BIAS && q.mapcount == 1, || q_str(&q)));
    let r = d.write(p.handle, 0, 100, 50, 0xa5).ioctl("WRITE_THROUGH_PIN").map_err(|e| e.to_string());
    out.push(r.and_then(|_| {
        let ok = (PAGE + 100..PAGE + 150).all(|o| m.byte(o) == 0xa5)
            && m.byte(PAGE) == 0x5a
            && m.byte(PAGE + 99) == 0
            && m.byte(PAGE + 150) == 0;
        check(ok, || {
            format!(
                "bytes 0/99/100/149/150 of the page: {:#x} {:#x} {:#x} {:#x} {:#x}",
                m.byte(PAGE),
                m.byte(PAGE + 99),
                m.byte(PAGE + 100),
                m.byte(PAGE + 149),
                m.byte(PAGE + 150)
            )
        })
    }));
    m.unmap();
    let q = query(&d, p.handle, 0)?;
    out.push(check(q.ref_count == PIN_BIAS && q.mapcount == 0, || q_str(&q)));
    d.unpin(p.handle, UNPIN_KEEP_PFNS).ioctl("UNPIN keep")?;
    let q2 = query(&d, p.handle, 0)?;
    diag(&format!("small idle: {}", q_str(&q2)));
    out.push(check(
        q2.ref_count == 0
            && q2.mapcount == 0
            && q2.pfn == q.pfn
            && q2.flags & Q_RELEASED != 0
            && q2.handle_pins == 0,
        || q_str(&q2),
    ));
    let st1 = d.stats().ioctl("HOOK_STATS")?;
    out.push(check(st1.folio_free > st0.folio_free && st1.last_free_pfn == q.pfn, || {
        format!(
            "folio_free {} -> {}, last_free_pfn {:#x}, pinned pfn {:#x}",
            st0.folio_free, st1.folio_free, st1.last_free_pfn, q.pfn
        )
    }));
    d.unpin(p.handle, 0).ioctl("UNPIN forget")?;
    out.push(expect_err("QUERY of a forgotten handle", d.query(p.handle, 0), &[libc::ENOENT]));
    Ok(())
}
