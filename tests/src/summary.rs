//! The closing lines of a test run (scripts/test.sh, through the `test-summary` binary): test totals
//! from cargo's `test result:` lines, and from the boot log ([`crate::record`]) the guest boots, the test
//! host VM faults and the reruns.
//!
//! ```text
//! guest boots: 12 ran (12 nested), 1 skipped (reasons: ...)
//! test host VM faults: 1 (stall 1), reruns: 2 (crasher: no result: its test host VM died; ...)
//! ```
//! (a case run again more than once says how many times), then
//! ```text
//! summary: 40 passed, 0 failed, 3 skipped
//! ```
//! CI reads the last line: `summary: P passed, F failed, S skipped`, alone on its line.

use std::collections::BTreeMap;

use crate::record::Record;

/// Totals of cargo's `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests ignored (reported as skipped).
    pub ignored: u64,
}

/// Adds up every `test result: ok. 5 passed; 0 failed; 1 ignored; ...` line of cargo's output.
pub fn totals(cargo_output: &str) -> Totals {
    let mut t = Totals::default();
    for line in cargo_output.lines() {
        let Some(rest) = line.trim_start().strip_prefix("test result:") else { continue };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let n = |w: &[&str]| w.iter().rev().nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            match words.last() {
                Some(&"passed") => t.passed += n(&words),
                Some(&"failed") => t.failed += n(&words),
                Some(&"ignored") => t.ignored += n(&words),
                _ => {}
            }
        }
    }
    t
}

/// The closing lines: guest boots, test host VM faults and reruns, and the totals (the last line).
pub fn lines(cargo_output: &str, boot_log: &str) -> Vec<String> {
    let records: Vec<Record> = boot_log.lines().filter_map(Record::parse).collect();
    let mut places: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut skips, mut faults, mut reruns) = (Vec::new(), BTreeMap::<&str, usize>::new(), BTreeMap::new());
    for r in &records {
        match r {
            Record::Boot(place, ..) => *places.entry(place).or_default() += 1,
            Record::Skip(why) => skips.push(why.as_str()),
            Record::Fault(kind, _) => *faults.entry(kind).or_default() += 1,
            Record::Rerun(case, why) => *reruns.entry(format!("{case}: {why}")).or_insert(0usize) += 1,
        }
    }
    let ran: usize = places.values().sum();
    let mut boots = format!("guest boots: {ran} ran");
    if ran > 0 {
        let by: Vec<String> = places.iter().map(|(p, n)| format!("{n} {p}")).collect();
        boots.push_str(&format!(" ({})", by.join(", ")));
    }
    boots.push_str(&format!(", {} skipped", skips.len()));
    if !skips.is_empty() {
        skips.sort_unstable();
        skips.dedup();
        boots.push_str(&format!(" (reasons: {})", skips.join("; ")));
    }
    let nfaults: usize = faults.values().sum();
    let mut vm = format!("test host VM faults: {nfaults}");
    if nfaults > 0 {
        let by: Vec<String> = faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
        vm.push_str(&format!(" ({})", by.join(", ")));
    }
    vm.push_str(&format!(", reruns: {}", reruns.values().sum::<usize>()));
    if !reruns.is_empty() {
        let by: Vec<String> =
            reruns.iter().map(|(r, n)| if *n > 1 { format!("{r} ({n} times)") } else { r.clone() }).collect();
        vm.push_str(&format!(" ({})", by.join("; ")));
    }
    let t = totals(cargo_output);
    vec![boots, vm, format!("summary: {} passed, {} failed, {} skipped", t.passed, t.failed, t.ignored)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARGO: &str = "\
running 3 tests
test a ... ok
test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

   Doc-tests daxvmm_tests
test result: FAILED. 10 passed; 2 failed; 0 ignored; 0 measured; 5 filtered out; finished in 9.50s
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
not a test result: 7 passed
";

    #[test]
    fn totals_add_every_test_result_line() {
        assert_eq!(totals(CARGO), Totals { passed: 13, failed: 2, ignored: 1 });
        assert_eq!(totals(""), Totals::default());
    }

    #[test]
    fn closing_lines_from_cargo_output_and_the_boot_log() {
        let log = "nested one_vcpu 0\nnested panic 3\ndirect x 0\nSKIP no qemu\nSKIP no qemu\nSKIP b\n\
                   FAULT stall its console went silent\nFAULT guest-fault race_xfs\nFAULT stall again\n\
                   RERUN race_xfs emulation fault in its output\nRERUN a why\nRERUN a why\n";
        assert_eq!(
            lines(CARGO, log),
            [
                "guest boots: 3 ran (1 direct, 2 nested), 3 skipped (reasons: b; no qemu)",
                "test host VM faults: 3 (guest-fault 1, stall 2), reruns: 3 (a: why (2 times); race_xfs: emulation fault in its output)",
                "summary: 13 passed, 2 failed, 1 skipped",
            ]
        );
        assert_eq!(
            lines("", ""),
            [
                "guest boots: 0 ran, 0 skipped",
                "test host VM faults: 0, reruns: 0",
                "summary: 0 passed, 0 failed, 0 skipped"
            ]
        );
    }
}
