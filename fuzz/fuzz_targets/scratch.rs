//! The scratch directory of the targets that run `daxvmm test` or `daxvmm repro` (both write files):
//! one per process under /dev/shm (or the temporary directory), removed when libFuzzer exits (kept after
//! a crash: the files may help). Their stdout (tables, verdicts) goes to /dev/null.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_dir() {
    if let Some(d) = DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The directory, made on the first call (`daxvmm-fuzz-TARGET-PID`).
pub fn dir(target: &str) -> &'static PathBuf {
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let d = base.join(format!("daxvmm-fuzz-{target}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("making the scratch directory");
        // SAFETY: registers a plain function; libFuzzer ends a run with exit(), which calls it.
        unsafe { libc::atexit(remove_dir) };
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            use std::os::fd::AsRawFd;
            // SAFETY: dup2 onto fd 1 of a descriptor we hold open; nothing else uses fd 1 here.
            unsafe { libc::dup2(null.as_raw_fd(), 1) };
        }
        d
    })
}
