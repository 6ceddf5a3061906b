//! `daxvmm-refcount-test DIR`: checks fs-dax page refcounting on a DAX-mounted filesystem at DIR through
//! the dax_refcount driver (/dev/dax_refcount, a Rust misc device in the daxvmm guest kernel). Prints TAP
//! and exits 1 if any check failed (2 on usage errors or when the device is missing).
//!
//! - [`abi`]: the driver's ioctl ABI.
//! - [`sys`]: errno, the device, mappings and test files.
//! - [`tap`]: TAP output and check results.
//! - [`checks`]: the check families, run in the order below; their invariants are listed there.

#[cfg(test)]
mod abi_tests;
mod checks;
mod tap;

use daxvmm_refcount_test::{abi, sys};

use checks::input::{bad_input, per_file, BAD, PERFILE};
use checks::klog::{klog, KLOG};
use checks::longterm::{longterm, LONGTERM};
use checks::pmd::{pmd, PMD_NAMES};
use checks::small::{small_page, SMALL};
use checks::truncate::{truncate, TRUNCATE};
use sys::Dev;
use tap::Tap;

// The TAP header, plan and summary are the program's output; usage errors go to stderr.
#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 2 || args[1].starts_with('-') {
        eprintln!("usage: daxvmm-refcount-test DIR   (DIR: a filesystem mounted with -o dax)");
        std::process::exit(2);
    }
    let dir = args[1].trim_end_matches('/').to_string();
    let total = SMALL.len()
        + LONGTERM.len()
        + TRUNCATE.len()
        + PMD_NAMES.len()
        + PERFILE.len()
        + BAD.len()
        + KLOG.len();
    println!("TAP version 13");
    if let Err(e) = Dev::open() {
        println!("1..0 # SKIP");
        println!("Bail out! {e}");
        std::process::exit(2);
    }
    println!("1..{total}");
    let mut tap = Tap { n: 0, failed: 0 };
    tap.scenario(SMALL, |o| small_page(&dir, o));
    tap.scenario(LONGTERM, |o| longterm(&dir, o));
    tap.scenario(TRUNCATE, |o| truncate(&dir, o));
    tap.scenario(PMD_NAMES, |o| pmd(&dir, o));
    tap.scenario(PERFILE, |o| per_file(&dir, o));
    tap.scenario(BAD, |o| bad_input(&dir, o));
    tap.scenario(KLOG, klog);
    println!("# {} of {} checks failed", tap.failed, tap.n);
    std::process::exit(if tap.failed == 0 { 0 } else { 1 });
}
