//! TAP output and the result type of a check: [`Tap`] numbers and prints the results of the scenarios,
//! [`check`] and [`expect_err`] turn a condition or an ioctl result into a [`Res`], and [`diag`] prints
//! a diagnostic line. All of the program's stdout except the header, plan and summary goes through here.

use crate::sys::ename;

/// The result of one check: `Err` carries the diagnostic printed after `not ok`. A String, not an error
/// type: it is a report, the finding of a check composed from what it measured (and from the errors that
/// stopped it, as text), cloned into the checks it did not reach and printed once; nothing matches on it.
pub type Res = Result<(), String>;

pub fn expect_err<T: std::fmt::Debug>(what: &str, r: Result<T, i32>, want: &[i32]) -> Res {
    match r {
        Err(e) if want.contains(&e) => Ok(()),
        Err(e) => Err(format!("{what}: got {}, want {}", ename(e), ename(want[0]))),
        Ok(v) => Err(format!("{what}: succeeded ({v:?}), want {}", ename(want[0]))),
    }
}

pub fn check(cond: bool, msg: impl FnOnce() -> String) -> Res {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

pub struct Tap {
    pub n: usize,
    pub failed: usize,
}

impl Tap {
    /// Counts one result and returns its TAP line.
    fn record(&mut self, name: &str, r: &Res) -> String {
        self.n += 1;
        match r {
            Ok(()) => format!("ok {} - {name}", self.n),
            Err(e) => {
                self.failed += 1;
                format!("not ok {} - {name} # {}", self.n, e.replace('\n', "; "))
            }
        }
    }

    // Printing the TAP stream is this program's output.
    #[allow(clippy::print_stdout)]
    fn report(&mut self, name: &str, r: &Res) {
        println!("{}", self.record(name, r));
    }

    /// Runs one scenario that reports `names.len()` results in order; if it stops early with an error,
    /// the results it did not reach fail with that error.
    pub fn scenario<E: std::fmt::Display>(
        &mut self,
        names: &[&str],
        f: impl FnOnce(&mut Vec<Res>) -> Result<(), E>,
    ) {
        let mut results = Vec::new();
        let stop = f(&mut results).map_err(|e| e.to_string());
        for (i, name) in names.iter().enumerate() {
            self.report(name, &outcome(&results, i, &stop));
        }
    }
}

/// The result of check `i` of a scenario that pushed `results` and then returned `stop`.
fn outcome(results: &[Res], i: usize, stop: &Res) -> Res {
    match results.get(i) {
        Some(r) => r.clone(),
        None => {
            Err(format!("not reached: {}", stop.clone().err().unwrap_or_else(|| "scenario ended".into())))
        }
    }
}

// A TAP diagnostic line: part of the program's output.
#[allow(clippy::print_stdout)]
pub fn diag(s: &str) {
    println!("# {s}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_and_failures_counted() {
        let mut tap = Tap { n: 0, failed: 0 };
        assert_eq!(tap.record("first", &Ok(())), "ok 1 - first");
        assert_eq!(tap.record("second", &Err("a\nb".into())), "not ok 2 - second # a; b");
        assert_eq!(tap.record("third", &Ok(())), "ok 3 - third");
        assert_eq!((tap.n, tap.failed), (3, 1));
    }

    #[test]
    fn unreached_checks_fail_with_the_stop_error() {
        let results = vec![Ok(()), Err("bad".to_string())];
        let stop: Res = Err("PIN: EFAULT".into());
        assert_eq!(outcome(&results, 0, &stop), Ok(()));
        assert_eq!(outcome(&results, 1, &stop), Err("bad".into()));
        assert_eq!(outcome(&results, 2, &stop), Err("not reached: PIN: EFAULT".into()));
        assert_eq!(outcome(&results, 2, &Ok(())), Err("not reached: scenario ended".into()));
    }

    #[test]
    fn expect_err_messages() {
        assert_eq!(expect_err::<()>("x", Err(libc::EINVAL), &[libc::EINVAL]), Ok(()));
        assert_eq!(
            expect_err::<()>("PIN len 0", Err(libc::EFAULT), &[libc::EINVAL]),
            Err("PIN len 0: got EFAULT, want EINVAL".into())
        );
        assert_eq!(
            expect_err("QUERY", Ok::<u32, i32>(7), &[libc::ENOENT]),
            Err("QUERY: succeeded (7), want ENOENT".into())
        );
    }

    #[test]
    fn check_builds_the_message_only_on_failure() {
        assert_eq!(check(true, || unreachable!()), Ok(()));
        assert_eq!(check(false, || "why".into()), Err("why".into()));
    }
}
