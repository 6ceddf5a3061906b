//! `daxvmm-fault-flood`: a hostile guest program for daxvmm's tests. Through /dev/dax_refcount it
//! writes events to the fault-injection device and reads its sync points in a tight loop, until it is
//! killed: every call is an MMIO exit daxvmm's fault device handles, and every event goes to its log.
//! Exit codes: 1 the device is missing or refused a call, 2 usage error.

use daxvmm_refcount_test::sys::{ename, Dev};

// A command-line tool: its diagnostics go to stderr.
#[allow(clippy::print_stderr)]
fn main() {
    if std::env::args().len() != 1 {
        eprintln!("usage: daxvmm-fault-flood   (floods the fault-injection device until killed)");
        std::process::exit(2);
    }
    let dev = match Dev::open() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: daxvmm-fault-flood: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("daxvmm-fault-flood: flooding the fault-injection device");
    for n in 0u64.. {
        // A marker event (code 0x0e) of thread n % 8 with a changing argument, then a sync read of a
        // point no schedule names: with nothing armed it returns at once.
        let event = 0x0e << 56 | (n % 8) << 48 | (n & 0xffff_ffff);
        let r = dev.event(event).and_then(|()| dev.sync((n % 8) as u8, 1 + (n % 4) as u16).map(drop));
        if let Err(e) = r {
            eprintln!("error: daxvmm-fault-flood: the driver refused call {n}: {}", ename(e));
            std::process::exit(1);
        }
    }
}
