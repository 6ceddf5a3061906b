//! FOLL_LONGTERM pins: refused on fs-dax pages, allowed on anonymous memory (the control).

use super::{pin, CheckError};
use crate::abi::{PIN_LONGTERM, PIN_WRITE};
use crate::sys::{anon, map_file, Dev, TFile, PAGE};
use crate::tap::{check, expect_err, Res};

pub const LONGTERM: &[&str] = &[
    "FOLL_LONGTERM pin of a DAX page fails with EOPNOTSUPP",
    "FOLL_LONGTERM pin of anonymous memory succeeds (control)",
];

pub fn longterm(dir: &str, out: &mut Vec<Res>) -> Result<(), CheckError> {
    let d = Dev::open()?;
    let f = TFile::create(dir, "longterm", 4 * PAGE)?;
    let m = map_file(f.fd, 4 * PAGE)?;
    m.touch();
    out.push(expect_err(
        "PIN WRITE|LONGTERM of a DAX page",
        d.pin(m.addr(), PAGE, PIN_WRITE | PIN_LONGTERM),
        &[libc::EOPNOTSUPP],
    ));
    let a = anon(4 * PAGE, libc::PROT_READ | libc::PROT_WRITE)?;
    a.touch();
    out.push(
        pin(&d, a.addr(), 4 * PAGE, PIN_WRITE | PIN_LONGTERM)
            .map_err(|e| e.to_string())
            .and_then(|p| check(p.nr_pages == 4, || format!("nr_pages {}", p.nr_pages))),
    );
    Ok(())
}
