//! The host's hugetlb pools: how many pages of a size the kernel can still hand out (reserved pool plus
//! overcommit), so daxvmm can pick or refuse a hugetlb backing before the guest faults into SIGBUS.

use std::path::{Path, PathBuf};

/// One pool, as /sys/kernel/mm/hugepages/hugepages-<N>kB describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pool {
    /// Pages in the pool not yet faulted in.
    pub free: u64,
    /// Free pages already promised to mappings.
    pub reserved: u64,
    /// How far the pool may grow on demand (vm.nr_overcommit_hugepages).
    pub overcommit: u64,
    /// Pages currently allocated beyond the pool through overcommit.
    pub surplus: u64,
}

impl Pool {
    /// Pages a new mapping can still get.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved) + self.overcommit.saturating_sub(self.surplus)
    }
}

/// Directory of the pool for pages of `page_size` bytes under `root` (normally /sys/kernel/mm/hugepages).
pub fn pool_dir(root: &Path, page_size: u64) -> PathBuf {
    root.join(format!("hugepages-{}kB", page_size >> 10))
}

/// Reads a pool; None when the host has no pool of that size (no hugetlbfs, or no 1 GiB page support).
pub fn read_pool(root: &Path, page_size: u64) -> Option<Pool> {
    let dir = pool_dir(root, page_size);
    let read =
        |name: &str| -> Option<u64> { std::fs::read_to_string(dir.join(name)).ok()?.trim().parse().ok() };
    Some(Pool {
        free: read("free_hugepages")?,
        reserved: read("resv_hugepages")?,
        overcommit: read("nr_overcommit_hugepages")?,
        surplus: read("surplus_hugepages")?,
    })
}

/// The sysctl that grows the pool of this page size, for error messages.
pub fn how_to_grow(page_size: u64, pages: u64) -> String {
    if page_size == 2 << 20 {
        format!("reserve them with 'echo {pages} > /proc/sys/vm/nr_hugepages' (or allow on-demand pages with vm.nr_overcommit_hugepages)")
    } else {
        format!(
            "reserve them with 'echo {pages} > {}/nr_hugepages' (best at boot: hugepagesz=1G hugepages={pages})",
            pool_dir(Path::new("/sys/kernel/mm/hugepages"), page_size).display()
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_pool_and_counts_overcommit() {
        let root = std::env::temp_dir().join(format!("daxvmm-hugetlb-{}", std::process::id()));
        let dir = pool_dir(&root, 2 << 20);
        std::fs::create_dir_all(&dir).unwrap();
        for (f, v) in [
            ("free_hugepages", 10),
            ("resv_hugepages", 4),
            ("nr_overcommit_hugepages", 8),
            ("surplus_hugepages", 3),
        ] {
            std::fs::write(dir.join(f), format!("{v}\n")).unwrap();
        }
        let p = read_pool(&root, 2 << 20).unwrap();
        assert_eq!(p, Pool { free: 10, reserved: 4, overcommit: 8, surplus: 3 });
        assert_eq!(p.available(), 6 + 5);
        assert_eq!(read_pool(&root, 1 << 30), None);
        std::fs::remove_dir_all(&root).unwrap();
        assert!(how_to_grow(2 << 20, 8).contains("/proc/sys/vm/nr_hugepages"));
        assert!(how_to_grow(1 << 30, 2).contains("hugepages-1048576kB"));
    }
}
