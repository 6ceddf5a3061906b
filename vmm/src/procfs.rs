//! daxvmm's view of its own memory from /proc/self: resident set size, and for a mapping the page size
//! the kernel really backs it with (smaps KernelPageSize), which is how a user can tell that pmem got
//! the huge pages it asked for.

/// One mapping's entry in smaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmapsEntry {
    /// KernelPageSize in bytes.
    pub kernel_page_size: u64,
    /// Rss in bytes.
    pub rss: u64,
    /// AnonHugePages in bytes (THP in use).
    pub anon_huge: u64,
}

fn kb_field(line: &str, name: &str) -> Option<u64> {
    let rest = line.strip_prefix(name)?.strip_prefix(':')?;
    let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb << 10)
}

/// VmRSS of this process in bytes.
pub fn vm_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| kb_field(l, "VmRSS"))
}

/// Parses smaps text for the mapping that starts at `addr`.
pub fn parse_smaps(smaps: &str, addr: u64) -> Option<SmapsEntry> {
    let mut lines = smaps.lines();
    while let Some(line) = lines.next() {
        let Some((range, _)) = line.split_once(' ') else { continue };
        let Some((start, _)) = range.split_once('-') else { continue };
        if u64::from_str_radix(start, 16).ok() != Some(addr) {
            continue;
        }
        let mut e = SmapsEntry { kernel_page_size: 0, rss: 0, anon_huge: 0 };
        for l in lines.by_ref() {
            // The next mapping's header has no colon-terminated first word.
            if l.split_whitespace().next().is_some_and(|w| !w.ends_with(':')) {
                break;
            }
            if let Some(v) = kb_field(l, "KernelPageSize") {
                e.kernel_page_size = v;
            } else if let Some(v) = kb_field(l, "Rss") {
                e.rss = v;
            } else if let Some(v) = kb_field(l, "AnonHugePages") {
                e.anon_huge = v;
            }
        }
        return Some(e);
    }
    None
}

/// The smaps entry of this process's mapping at `addr`.
pub fn smaps_for(addr: u64) -> Option<SmapsEntry> {
    parse_smaps(&std::fs::read_to_string("/proc/self/smaps").ok()?, addr)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
7f0000000000-7f0040000000 rw-s 00000000 00:10 5  /memfd:daxvmm-pmem0 (deleted)
Size:            1048576 kB
KernelPageSize:     2048 kB
MMUPageSize:        2048 kB
Rss:                4096 kB
AnonHugePages:         0 kB
VmFlags: rd wr sh mr mw me ms ht
7f0040000000-7f0040001000 rw-p 00000000 00:00 0
Size:                  4 kB
KernelPageSize:        4 kB
Rss:                   4 kB
";

    #[test]
    fn finds_the_mapping() {
        let e = parse_smaps(SAMPLE, 0x7f00_0000_0000).unwrap();
        assert_eq!(e, SmapsEntry { kernel_page_size: 2 << 20, rss: 4 << 20, anon_huge: 0 });
        let e = parse_smaps(SAMPLE, 0x7f00_4000_0000).unwrap();
        assert_eq!(e.kernel_page_size, 4096);
        assert!(parse_smaps(SAMPLE, 0x1000).is_none());
    }

    #[test]
    fn reads_own_rss() {
        assert!(vm_rss().unwrap() > 0);
    }
}
