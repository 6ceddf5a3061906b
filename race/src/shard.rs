//! `--shard I/N`: a stable split of a plan into N parts, so that N machines (a CI matrix, an indexed
//! job) each run one and their results add up to the whole plan. Item k of the plan (0-based) goes to
//! shard `k mod N + 1`: the parts differ in size by at most one, and the split depends only on the
//! plan, which the same options and the same daxvmm build always make the same.
//!
//! The fstests runner in the suite image splits check's expanded test list the same way
//! (images/rootfs/daxvmm-fstests); `daxvmm fstests` only validates and forwards the shard.

use std::fmt;
use std::str::FromStr;

/// The largest N: more shards than that are not a split but a mistake.
pub const MAX_SHARDS: usize = 1000;

/// Shard `index` of `count`, both 1-based as the user writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

/// Why `--shard` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a shard: give I/N with 1 <= I <= N <= {MAX_SHARDS}, e.g. 2/4 for the second of four")]
pub struct ShardError(String);

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, ShardError> {
        let bad = || ShardError(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let num = |t: &str| -> Result<usize, ShardError> {
            if t.is_empty() || t.len() > 4 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse().map_err(|_| bad())
        };
        let (index, count) = (num(i)?, num(n)?);
        if index == 0 || index > count || count > MAX_SHARDS {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether item `k` (0-based) of the whole plan belongs to this shard.
    pub fn picks(&self, k: usize) -> bool {
        k % self.count == self.index - 1
    }

    /// This shard's items, in plan order.
    pub fn select<T: Clone>(&self, plan: &[T]) -> Vec<T> {
        plan.iter().enumerate().filter(|(k, _)| self.picks(*k)).map(|(_, t)| t.clone()).collect()
    }

    /// The position in the whole plan of this shard's item `local` (both 0-based, as run numbers are):
    /// what reports name, so that run numbers stay unique when the shards' results are merged.
    pub fn global(&self, local: u64) -> u64 {
        local * self.count as u64 + (self.index - 1) as u64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_i_of_n_and_refuses_the_rest() {
        let s: Shard = "2/4".parse().unwrap();
        assert_eq!(s.to_string(), "2/4");
        assert_eq!("1/1".parse::<Shard>().unwrap().to_string(), "1/1");
        for bad in
            ["", "2", "0/4", "5/4", "1/0", "a/b", "1/2/3", "-1/2", "+1/2", " 1/2", "1/1001", "99999/99999"]
        {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains("I/N"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_shards_partition_the_plan_and_keep_global_positions() {
        let plan: Vec<u32> = (1..=23).collect();
        for n in 1..=7usize {
            let mut seen = Vec::new();
            let mut sizes = Vec::new();
            for i in 1..=n {
                let s: Shard = format!("{i}/{n}").parse().unwrap();
                let mine = s.select(&plan);
                sizes.push(mine.len());
                for (local, item) in mine.iter().enumerate() {
                    // The item's 0-based global position is its value minus one here.
                    assert_eq!(s.global(local as u64) + 1, u64::from(*item));
                }
                seen.extend(mine);
            }
            seen.sort_unstable();
            assert_eq!(seen, plan, "{n} shards");
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        }
        // More shards than items: some are empty, none overlaps.
        let s: Shard = "9/10".parse().unwrap();
        assert_eq!(s.select(&plan[..5]), Vec::<u32>::new());
    }
}
