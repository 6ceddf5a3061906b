//! What the benchmarks of `bench` (tests/src/bin/bench.rs) share: the paths their batches use, the
//! memory write before each measured guest, reading figures out of what each case printed, and the
//! statistics of the printed tables. Each benchmark measures daxvmm
//! and its baseline (QEMU, the host) on the same host in the same run, so the ratios are the figures that
//! carry over from a test host VM to real hardware. The benchmarks themselves are [`crate::bench_boot`], [`crate::bench_pmem`], [`crate::bench_blk`], [`crate::bench_race`] and [`crate::bench_suites`].

use crate::case::{NESTED_INITRD, NESTED_KERNEL};
use crate::host::Where;

/// The paths a batch's commands use where they run: this host's files (direct), or the test host VM's
/// copies of them (nested).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The static daxvmm.
    pub daxvmm: String,
    /// The guest bzImage.
    pub kernel: String,
    /// The guest initramfs.
    pub initrd: String,
    /// The benchmark's helper program (daxvmm-boot-timer, daxvmm-dax-check), if it has one.
    pub tool: String,
    /// A shell command (ending in `; `) each measured VMM case runs first, outside what it measures
    /// (the pmem benchmark's host memcpy case too): [`launder`] in a test host VM, empty elsewhere.
    pub before_vmm: String,
}

impl Paths {
    /// The test host VM's paths: /bin/daxvmm, the guest artifacts under /guest, `/bin/TOOL`.
    pub fn nested(tool: &str) -> Paths {
        Paths {
            daxvmm: "/bin/daxvmm".into(),
            kernel: NESTED_KERNEL.into(),
            initrd: NESTED_INITRD.into(),
            tool: format!("/bin/{tool}"),
            before_vmm: launder(LAUNDER_MIB),
        }
    }
}

/// How much [`launder`] writes before each measured guest in a test host VM: more than a 512 MiB guest
/// and its VMM touch (300 MiB was enough after such a guest in the measurement below).
pub const LAUNDER_MIB: u32 = 768;

/// A command that writes `mib` MiB of zeros into a file in the test host VM's tmpfs and removes it
/// again, so the next guest lands in memory that was just written by the test host VM's kernel.
///
/// Inside the test host VM a guest booted right after another one runs its own boot about half as fast
/// as one booted into memory nothing ran in, whichever VMM boots either (2026-12-04, one test host VM,
/// by hand: the 512 MiB guest's initramfs unpacking took 2.2-2.7 s right after another guest and
/// 0.57-0.81 s after 300-1921 MiB were written this way; QEMU microvm 2.4 s against 0.6 s). It does not
/// depend on the VMM; why that memory is slower is not measured (a candidate: the emulator's, QEMU
/// TCG's, tracking of memory that held translated code). Benchmarks take it out the same way for both
/// sides.
pub fn launder(mib: u32) -> String {
    format!(
        "dd if=/dev/zero of=/tmp/daxvmm-launder bs=1M count={mib} 2>/dev/null; rm -f /tmp/daxvmm-launder; "
    )
}

/// The words after "measured ... in the same run (": where, and for nested what that means.
pub(crate) fn place_note(place: Where, nested: &str) -> String {
    match place {
        Where::Direct => "direct".into(),
        Where::Nested => format!("nested: {nested}"),
    }
}

/// The median, or `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The median of the values present, or `None` for none.
pub fn median_present(values: &[Option<f64>]) -> Option<f64> {
    median(&values.iter().flatten().copied().collect::<Vec<_>>())
}

/// `v` rounded to a whole number, `none` when missing (a figure no run produced).
pub fn no_decimals(v: Option<f64>) -> String {
    v.map_or_else(|| "none".into(), |v| format!("{v:.0}"))
}

/// `v` with two decimals, `n/a` when missing.
pub fn two_decimals(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.2}"))
}

/// `a / b` with two decimals, `n/a` when either is missing or `b` is 0.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    two_decimals(a.zip(b).filter(|&(_, b)| b != 0.0).map(|(a, b)| a / b))
}

/// The name of case `case` in round `round` (from 1) of a benchmark that runs its cases in rounds.
pub fn round_case(case: &str, round: u32) -> String {
    format!("{case}-{round}")
}

/// The text after `key` in `line`, up to the first character `stop` rejects.
pub(crate) fn value_after<'a>(line: &'a str, key: &str, stop: impl Fn(char) -> bool) -> Option<&'a str> {
    let rest = &line[line.rfind(key)? + key.len()..];
    Some(&rest[..rest.find(stop).unwrap_or(rest.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(ratio(Some(1.0), Some(3.0)), "0.33");
        assert_eq!(ratio(Some(1.0), Some(0.0)), "n/a");
        assert_eq!(ratio(None, Some(1.0)), "n/a");
        assert_eq!(median_present(&[None, Some(4.0), Some(2.0), None]), Some(3.0));
        assert_eq!(median_present(&[None]), None);
        assert_eq!(round_case("qemu_virtio", 2), "qemu_virtio-2");
        assert_eq!((no_decimals(Some(2632.4)), no_decimals(None)), ("2632".into(), "none".into()));
    }
}
