//! Handle scoping and argument checking: handles are per open file and die with it; bad addresses,
//! lengths, flags, reserved fields, handles, indexes and ioctl numbers give the documented errors; and a
//! fuzz run ([`super::fuzz`]).

use super::fuzz::fuzz;
use super::{pin, q_str, query, CheckError, IoctlResult, PIN_BIAS};
use crate::abi::{
    Pin, Query, Unpin, Write, DAX_RC_HOOK_STATS, DAX_RC_PIN, DAX_RC_QUERY, DAX_RC_UNPIN,
    DAX_RC_WRITE_THROUGH_PIN, MAX_PIN_PAGES, PIN_WRITE, UNPIN_KEEP_PFNS,
};
use crate::sys::{anon, map_file, Dev, TFile, PAGE};
use crate::tap::{check, diag, expect_err, Res};

pub const PERFILE: &[&str] =
    &["handles are per open file (another file's handle is ENOENT)", "closing a file releases its pins"];

pub fn per_file(dir: &str, out: &mut Vec<Res>) -> Result<(), CheckError> {
    let d1 = Dev::open()?;
    let d2 = Dev::open()?;
    let f = TFile::create(dir, "perfile", 4 * PAGE)?;
    let mut m = map_file(f.fd, 4 * PAGE)?;
    m.touch();
    let a = pin(&d1, m.addr(), PAGE, 0)?;
    let b = pin(&d1, m.addr() + PAGE, PAGE, 0)?;
    let c = pin(&d2, m.addr(), PAGE, 0)?;
    m.unmap();
    let q = query(&d2, c.handle, 0)?;
    out.push(
        check(b.handle != c.handle && a.handle != b.handle, || {
            format!("handles {} {} {}", a.handle, b.handle, c.handle)
        })
        .and_then(|_| expect_err("QUERY of the other file's handle", d2.query(b.handle, 0), &[libc::ENOENT]))
        .and_then(|_| expect_err("UNPIN of the other file's handle", d2.unpin(b.handle, 0), &[libc::ENOENT])),
    );
    drop(d1);
    let q2 = query(&d2, c.handle, 0)?;
    diag(&format!("two files pinned: {}; after closing one: {}", q_str(&q), q_str(&q2)));
    out.push(check(q.ref_count == 2 * PIN_BIAS && q2.ref_count == PIN_BIAS && q2.mapcount == 0, || {
        format!("two pins: {}; after close: {}", q_str(&q), q_str(&q2))
    }));
    Ok(())
}

pub const BAD: &[&str] = &[
    "bad addresses give EFAULT",
    "bad lengths, alignment, flags and reserved fields give EINVAL",
    "unknown handles give ENOENT",
    "bad index/offset give EINVAL; read-only pin write EPERM; released handle write ESTALE",
    "unknown ioctl numbers give ENOTTY",
    "fuzz: 20000 random ioctl numbers and arguments return without crashing",
];

// Each group of input checks is a list of results pushed one by one.
#[allow(clippy::vec_init_then_push)]
pub fn bad_input(dir: &str, out: &mut Vec<Res>) -> Result<(), CheckError> {
    let d = Dev::open()?;
    let rw = anon(4 * PAGE, libc::PROT_READ | libc::PROT_WRITE)?;
    rw.touch();
    let ro = anon(PAGE, libc::PROT_READ)?;
    let none = anon(2 * PAGE, libc::PROT_NONE)?;
    let mut gone = anon(PAGE, libc::PROT_READ | libc::PROT_WRITE)?;
    let gone_addr = gone.addr();
    gone.unmap();
    let mut r: Vec<Res> = Vec::new();
    // EFAULT
    r.push(expect_err("PIN arg NULL", d.raw(DAX_RC_PIN, 0), &[libc::EFAULT]));
    r.push(expect_err("QUERY arg 0x10", d.raw(DAX_RC_QUERY, 0x10), &[libc::EFAULT]));
    r.push(expect_err(
        "HOOK_STATS into a read-only page",
        d.raw(DAX_RC_HOOK_STATS, ro.addr()),
        &[libc::EFAULT],
    ));
    r.push(expect_err("PIN of an unmapped page", d.pin(gone_addr, PAGE, 0), &[libc::EFAULT]));
    r.push(expect_err("PIN of a PROT_NONE page", d.pin(none.addr(), PAGE, 0), &[libc::EFAULT]));
    r.push(expect_err("PIN WRITE of a read-only page", d.pin(ro.addr(), PAGE, PIN_WRITE), &[libc::EFAULT]));
    r.push(expect_err("PIN of a kernel address", d.pin(0xffff_8880_0000_0000, PAGE, 0), &[libc::EFAULT]));
    let half = anon(2 * PAGE, libc::PROT_READ | libc::PROT_WRITE)?;
    half.touch();
    // SAFETY: the second page of our own mapping (Map's drop unmaps both, which is fine).
    unsafe { libc::munmap((half.addr() + PAGE) as *mut _, PAGE) };
    r.push(expect_err(
        "PIN of a range whose second page is unmapped",
        d.pin(half.addr(), 2 * PAGE, 0),
        &[libc::EFAULT],
    ));
    // QUERY reads its argument, then writes it: a read-only argument with a valid handle fails on the write.
    let qp = pin(&d, rw.addr(), PAGE, 0)?;
    let qro = anon(PAGE, libc::PROT_READ | libc::PROT_WRITE)?;
    // SAFETY: qro is one writable page, larger than Query; then made read-only.
    unsafe {
        std::ptr::write(qro.ptr.cast::<Query>(), Query { handle: qp.handle, ..Default::default() });
        libc::mprotect(qro.ptr.cast(), PAGE, libc::PROT_READ);
    }
    r.push(expect_err("QUERY with a read-only argument", d.raw(DAX_RC_QUERY, qro.addr()), &[libc::EFAULT]));
    r.push(d.unpin(qp.handle, 0).ioctl("UNPIN").map_err(|e| e.to_string()));
    out.push(r.into_iter().collect::<Res>());

    // EINVAL
    let mut r: Vec<Res> = Vec::new();
    r.push(expect_err("PIN len 0", d.pin(rw.addr(), 0, 0), &[libc::EINVAL]));
    r.push(expect_err("PIN len 100", d.pin(rw.addr(), 100, 0), &[libc::EINVAL]));
    r.push(expect_err("PIN unaligned addr", d.pin(rw.addr() + 1, PAGE, 0), &[libc::EINVAL]));
    r.push(expect_err(
        "PIN 513 pages",
        d.pin(rw.addr(), (MAX_PIN_PAGES as usize + 1) * PAGE, 0),
        &[libc::EINVAL],
    ));
    r.push(expect_err("PIN unknown flag", d.pin(rw.addr(), PAGE, 1 << 2), &[libc::EINVAL]));
    r.push(expect_err("PIN flags all ones", d.pin(rw.addr(), PAGE, u32::MAX), &[libc::EINVAL]));
    r.push(expect_err(
        "PIN addr+len overflows",
        d.pin(usize::MAX & !(PAGE - 1), 2 * PAGE, 0),
        &[libc::EINVAL],
    ));
    let mut pa = Pin { addr: rw.addr() as u64, len: PAGE as u64, nr_pages: 7, ..Default::default() };
    r.push(expect_err("PIN with a non-zero output field", d.io(DAX_RC_PIN, &mut pa), &[libc::EINVAL]));
    let mut ua = Unpin { handle: 1, flags: 0, reserved: 1 };
    r.push(expect_err("UNPIN reserved != 0", d.io(DAX_RC_UNPIN, &mut ua), &[libc::EINVAL]));
    r.push(expect_err("UNPIN unknown flag", d.unpin(1, 1 << 5), &[libc::EINVAL]));
    let mut wa =
        Write { handle: 1, index: 0, offset: 0, len: 1, pattern: 0, reserved: [0, 0, 1, 0, 0, 0, 0] };
    r.push(expect_err("WRITE reserved != 0", d.io(DAX_RC_WRITE_THROUGH_PIN, &mut wa), &[libc::EINVAL]));
    let mut qa = Query { handle: 1, reserved: 3, ..Default::default() };
    r.push(expect_err("QUERY reserved != 0", d.io(DAX_RC_QUERY, &mut qa), &[libc::EINVAL]));
    out.push(r.into_iter().collect::<Res>());

    // ENOENT
    let mut r: Vec<Res> = Vec::new();
    r.push(expect_err("QUERY handle 0", d.query(0, 0), &[libc::ENOENT]));
    r.push(expect_err("QUERY handle 9999", d.query(9999, 0), &[libc::ENOENT]));
    r.push(expect_err("QUERY handle u64::MAX", d.query(u64::MAX, 0), &[libc::ENOENT]));
    r.push(expect_err("UNPIN handle 9999", d.unpin(9999, 0), &[libc::ENOENT]));
    r.push(expect_err("WRITE handle 9999", d.write(9999, 0, 0, 1, 0), &[libc::ENOENT]));
    out.push(r.into_iter().collect::<Res>());

    // index/offset
    let mut r: Vec<Res> = Vec::new();
    let pw = pin(&d, rw.addr(), 2 * PAGE, PIN_WRITE)?;
    let pr = pin(&d, rw.addr() + 2 * PAGE, PAGE, 0)?;
    r.push(expect_err("QUERY index == nr_pages", d.query(pw.handle, 2), &[libc::EINVAL]));
    r.push(expect_err("QUERY index u64::MAX", d.query(pw.handle, u64::MAX), &[libc::EINVAL]));
    r.push(expect_err("WRITE index == nr_pages", d.write(pw.handle, 2, 0, 1, 0), &[libc::EINVAL]));
    r.push(expect_err("WRITE offset+len > page", d.write(pw.handle, 0, 4000, 200, 0), &[libc::EINVAL]));
    r.push(expect_err("WRITE len 0", d.write(pw.handle, 0, 0, 0, 0), &[libc::EINVAL]));
    r.push(expect_err("WRITE offset+len overflows", d.write(pw.handle, 0, u32::MAX, 2, 0), &[libc::EINVAL]));
    r.push(expect_err("WRITE through a read-only pin", d.write(pr.handle, 0, 0, 1, 0), &[libc::EPERM]));
    r.push(d.write(pw.handle, 1, 0, 4096, 0x11).ioctl("valid WRITE").map_err(|e| e.to_string()));
    r.push(check(rw.byte(PAGE + 4095) == 0x11, || "valid WRITE not visible".into()));
    r.push(d.unpin(pw.handle, UNPIN_KEEP_PFNS).ioctl("UNPIN keep").map_err(|e| e.to_string()));
    r.push(expect_err("WRITE through a released handle", d.write(pw.handle, 0, 0, 1, 0), &[libc::ESTALE]));
    r.push(expect_err("QUERY of a released non-ZONE_DEVICE page", d.query(pw.handle, 0), &[libc::ENXIO]));
    r.push(expect_err("UNPIN keep twice", d.unpin(pw.handle, UNPIN_KEEP_PFNS), &[libc::ESTALE]));
    r.push(d.unpin(pw.handle, 0).ioctl("UNPIN forget").map_err(|e| e.to_string()));
    r.push(d.unpin(pr.handle, 0).ioctl("UNPIN").map_err(|e| e.to_string()));
    out.push(r.into_iter().collect::<Res>());

    // ENOTTY
    let ioc = |dir: u32, ty: u32, nr: u32, size: u32| (dir << 30) | (size << 16) | (ty << 8) | nr;
    let mut r: Vec<Res> = Vec::new();
    let mut buf = [0u8; 256];
    let bp = buf.as_mut_ptr() as usize;
    for (what, cmd) in [
        ("_IO(0xDA, 0)", ioc(0, 0xDA, 0, 0)),
        ("_IOWR(0xDA, 6, 32)", ioc(3, 0xDA, 6, 32)),
        ("_IOWR(0xDA, 0xff, 72)", ioc(3, 0xDA, 0xff, 72)),
        ("PIN with size 31", (DAX_RC_PIN & !(0x3fff << 16)) | (31 << 16)),
        ("QUERY with dir _IOW", (DAX_RC_QUERY & !(3 << 30)) | (1 << 30)),
        ("PIN with magic 0xDB", DAX_RC_PIN + (1 << 8)),
        ("cmd 0", 0),
    ] {
        r.push(expect_err(what, d.raw(cmd, bp), &[libc::ENOTTY]));
    }
    out.push(r.into_iter().collect::<Res>());

    // fuzz
    out.push(fuzz(dir, 20_000).unwrap_or_else(|e| Err(e.to_string())));
    Ok(())
}
