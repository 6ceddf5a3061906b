//! The filesystem check after a filesystem's last run: unmount it and run `e2fsck -fn` or `xfs_repair -n`
//! (read-only: report, change nothing). A check that finds damage is a finding of that last run; one that
//! could not run is a note.

use std::process::Command;

use crate::ctx::{finding, note};

/// The read-only check of `fs` on `dev`.
fn command(fs: &str, dev: &str) -> Option<String> {
    match fs {
        "ext4" => Some(format!("e2fsck -fn {dev}")),
        "xfs" => Some(format!("xfs_repair -n {dev}")),
        _ => None,
    }
}

/// The last `n` non-empty lines of `text`, joined into one line.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Unmounts `mnt` and checks `fs` on `dev`, reporting on run `run`.
pub fn check(fs: &str, dev: &str, mnt: &str, run: u64) {
    let Some(cmd) = command(fs, dev) else { return };
    let umount = Command::new("umount").arg(mnt).output();
    if !umount.as_ref().is_ok_and(|o| o.status.success()) {
        let why = match umount {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        note(run, &format!("fsck not run: cannot unmount {mnt}: {why}"));
        return;
    }
    match Command::new("sh").arg("-c").arg(format!("{cmd} 2>&1")).output() {
        Ok(out) if out.status.success() => note(run, &format!("fsck: {cmd}: clean")),
        Ok(out) => {
            let code = out.status.code().map_or_else(|| "killed".to_string(), |c| c.to_string());
            let text = String::from_utf8_lossy(&out.stdout);
            finding(run, &format!("fsck: {cmd} exited {code}: {}", tail(&text, 3)));
        }
        Err(e) => note(run, &format!("fsck not run: {cmd}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_tails() {
        assert_eq!(command("ext4", "/dev/pmem0").as_deref(), Some("e2fsck -fn /dev/pmem0"));
        assert_eq!(command("xfs", "/dev/pmem0").as_deref(), Some("xfs_repair -n /dev/pmem0"));
        assert_eq!(command("btrfs", "/dev/pmem0"), None);
        assert_eq!(tail("a\n\n b \nc\nd\n", 3), "b | c | d");
        assert_eq!(tail("", 3), "");
    }
}
