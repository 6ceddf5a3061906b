//! daxvmm's own footprint between guest runs (threads, mappings, resident memory), for `--repeat`: a run
//! must leave nothing behind, so after the first run (which sets up what lives for the whole process)
//! every later run must end with the same threads and no more mappings or memory than that.

use std::fmt;

use thiserror::Error;

use crate::procfs;

/// Mappings a later run may add over the first one's: the allocator maps arenas as it likes.
const MAPPING_SLACK: usize = 8;
/// Resident memory a later run may add over the first one's.
const RSS_SLACK: u64 = 32 << 20;

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Threads of this process.
    pub threads: usize,
    /// Lines of /proc/self/maps.
    pub mappings: usize,
    /// VmRSS in bytes.
    pub rss: u64,
}

impl fmt::Display for Footprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} threads, {} mappings, RSS {} MiB", self.threads, self.mappings, self.rss >> 20)
    }
}

/// A later run left more behind than the first one.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("run {run} left {now} behind, against {baseline} after the first run: a thread or guest memory outlived its run")]
pub struct Leak {
    /// Which run (1-based).
    pub run: u32,
    /// After the first run.
    pub baseline: Footprint,
    /// After this run.
    pub now: Footprint,
}

/// This process now; `None` when /proc is not there.
pub fn measure() -> Option<Footprint> {
    let threads = std::fs::read_dir("/proc/self/task").ok()?.count();
    let mappings = std::fs::read_to_string("/proc/self/maps").ok()?.lines().count();
    Some(Footprint { threads, mappings, rss: procfs::vm_rss()? })
}

/// Footprints after each run, checked against the first.
#[derive(Debug, Default)]
pub struct Tracker {
    runs: u32,
    baseline: Option<Footprint>,
    peak: Option<Footprint>,
}

impl Tracker {
    /// Records the footprint after a run; an error when it grew past the first run's.
    pub fn after_run(&mut self, now: Footprint) -> Result<(), Leak> {
        self.runs += 1;
        let Some(baseline) = self.baseline else {
            self.baseline = Some(now);
            self.peak = Some(now);
            return Ok(());
        };
        let peak = self.peak.get_or_insert(now);
        *peak = Footprint {
            threads: peak.threads.max(now.threads),
            mappings: peak.mappings.max(now.mappings),
            rss: peak.rss.max(now.rss),
        };
        if now.threads > baseline.threads
            || now.mappings > baseline.mappings + MAPPING_SLACK
            || now.rss > baseline.rss + RSS_SLACK
        {
            return Err(Leak { run: self.runs, baseline, now });
        }
        Ok(())
    }

    /// One line for the end of a `--repeat`.
    pub fn summary(&self) -> String {
        match (self.baseline, self.peak) {
            (Some(b), Some(p)) => format!(
                "repeat: {} runs in one process; after the first: {}; most after any later run: {}",
                self.runs, b, p
            ),
            _ => format!("repeat: {} runs in one process (no /proc to measure them)", self.runs),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fp(threads: usize, mappings: usize, rss_mib: u64) -> Footprint {
        Footprint { threads, mappings, rss: rss_mib << 20 }
    }

    #[test]
    fn the_first_run_sets_the_baseline_and_later_growth_is_a_leak() {
        let mut t = Tracker::default();
        t.after_run(fp(2, 40, 10)).unwrap();
        t.after_run(fp(2, 43, 20)).unwrap();
        assert_eq!(t.after_run(fp(3, 40, 10)).unwrap_err().run, 3, "a thread outlived its run");
        assert!(t.after_run(fp(2, 49, 10)).is_err(), "guest memory still mapped");
        assert!(t.after_run(fp(2, 40, 100)).is_err(), "resident memory grew");
        assert!(t.summary().contains("5 runs"), "{}", t.summary());
        assert!(t.summary().contains("3 threads, 49 mappings, RSS 100 MiB"), "{}", t.summary());
    }

    #[test]
    fn measures_this_process() {
        let f = measure().unwrap();
        assert!(f.threads >= 1 && f.mappings > 5 && f.rss > 0, "{f}");
    }
}
