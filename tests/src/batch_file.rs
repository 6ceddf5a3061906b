//! Batch files of shell cases (`NAME<TAB>SHELL COMMAND` lines) and what they run on: the default guest
//! artifacts, and running a batch on this host with the test host VM's markers, so that its output
//! parses the same way as a nested run's ([`crate::test_host::run`]). Used by the `test-host-vm` and
//! `bench` binaries.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use thiserror::Error;

use crate::console::ConsoleParser;
use crate::host::Artifacts;
use crate::markers;
use crate::test_host::{cache_dir, root, OnLine};

/// Why a batch file could not run here, or an artifact is missing.
#[derive(Debug, Error)]
pub enum BatchFileError {
    /// One of the build scripts could not start.
    #[error("cannot run scripts/{script}: {source}; check that the repository is complete")]
    ScriptSpawn {
        /// The script, under scripts/.
        script: String,
        /// Why.
        source: io::Error,
    },
    /// One of the build scripts failed (its own messages went to stderr).
    #[error("scripts/{script} failed; see its messages above")]
    ScriptFailed {
        /// The script, under scripts/.
        script: String,
    },
    /// The cached guest kernel is not built yet.
    #[error(
        "the guest kernel is not built yet ({}); run scripts/build-guest-kernel.sh or pass --kernel",
        path.display()
    )]
    KernelNotBuilt {
        /// Where it would be.
        path: PathBuf,
    },
    /// The daxvmm binary does not exist.
    #[error("daxvmm binary {} does not exist; run scripts/build-all.sh", path.display())]
    NoDaxvmm {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The guest kernel does not exist.
    #[error(
        "guest kernel {} does not exist; run scripts/build-guest-kernel.sh or pass --kernel",
        path.display()
    )]
    NoKernel {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The guest initramfs does not exist.
    #[error("guest initramfs {} does not exist; run scripts/build-initramfs.sh", path.display())]
    NoInitrd {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// bash could not start.
    #[error("cannot run bash: {0}; install bash")]
    Bash(#[source] io::Error),
    /// A case's output could not be written.
    #[error("cannot write {}: {source}; check that the directory is writable", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The output of one of the build scripts, trimmed.
fn script_output(script: &str, args: &[&str]) -> Result<PathBuf, BatchFileError> {
    let out = Command::new(root().join("scripts").join(script))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| BatchFileError::ScriptSpawn { script: script.into(), source })?;
    if !out.status.success() {
        return Err(BatchFileError::ScriptFailed { script: script.into() });
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Where cargo puts its builds: `$CARGO_TARGET_DIR`, else the repository's target/.
pub fn target_dir() -> PathBuf {
    env_path("CARGO_TARGET_DIR").unwrap_or_else(|| root().join("target"))
}

/// The static daxvmm: `$DAXVMM_BIN`, else target/x86_64-unknown-linux-musl/release/daxvmm.
pub fn default_daxvmm() -> PathBuf {
    env_path("DAXVMM_BIN").unwrap_or_else(|| target_dir().join("x86_64-unknown-linux-musl/release/daxvmm"))
}

/// The guest bzImage: `$DAXVMM_GUEST_KERNEL`, else the cached build of scripts/build-guest-kernel.sh;
/// an error when that is not built yet.
pub fn default_kernel() -> Result<PathBuf, BatchFileError> {
    if let Some(k) = env_path("DAXVMM_GUEST_KERNEL") {
        return Ok(k);
    }
    let key = script_output("build-guest-kernel.sh", &["--print-key"])?;
    let k = cache_dir().join("kernels").join(key).join("bzImage");
    if !k.is_file() {
        return Err(BatchFileError::KernelNotBuilt { path: k });
    }
    Ok(k)
}

/// The guest initramfs: `$DAXVMM_GUEST_INITRD`, else scripts/build-initramfs.sh's (cached) build.
pub fn default_initrd() -> Result<PathBuf, BatchFileError> {
    env_path("DAXVMM_GUEST_INITRD").map_or_else(|| script_output("build-initramfs.sh", &[]), Ok)
}

/// The three artifacts: each the one given, else its default; an error naming what to run when one
/// does not exist.
pub fn artifacts(
    daxvmm: Option<PathBuf>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
) -> Result<Artifacts, BatchFileError> {
    let daxvmm = daxvmm.unwrap_or_else(default_daxvmm);
    if !daxvmm.is_file() {
        return Err(BatchFileError::NoDaxvmm { path: daxvmm });
    }
    let kernel = kernel.map_or_else(default_kernel, Ok)?;
    if !kernel.is_file() {
        return Err(BatchFileError::NoKernel { path: kernel });
    }
    let initrd = initrd.map_or_else(default_initrd, Ok)?;
    if !initrd.is_file() {
        return Err(BatchFileError::NoInitrd { path: initrd });
    }
    Ok(Artifacts { daxvmm, kernel, initrd, adds: Vec::new() })
}

/// The cases of a batch file, in order: (name, command); `#` lines and blank lines are skipped.
pub fn cases(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).filter_map(|l| l.split_once('\t'))
}

/// Runs a batch's cases on this host, one after another (`bash -c`, stdin from /dev/null, stderr with
/// stdout), framed by the same markers as inside the test host VM; each line goes to `on_line`, as
/// [`crate::test_host::run`] hands them.
pub fn run_here(text: &str, on_line: OnLine<'_>) -> Result<ConsoleParser, BatchFileError> {
    let mut parser = ConsoleParser::new();
    let start = Instant::now();
    for (name, cmd) in cases(text) {
        let out = Command::new("bash")
            .args(["-c", &format!("exec 2>&1\n{cmd}")])
            .stdin(Stdio::null())
            .output()
            .map_err(BatchFileError::Bash)?;
        let rc = out.status.code().unwrap_or(128 + 9);
        let mut console = vec![markers::begin(name)];
        console.extend(String::from_utf8_lossy(&out.stdout).lines().map(String::from));
        console.push(markers::end(name, rc));
        for l in &console {
            let ended = parser.feed(l, start.elapsed());
            on_line(
                l,
                ended.as_deref().and_then(|n| parser.finished.get_key_value(n)).map(|(n, c)| (n.as_str(), c)),
            );
        }
    }
    Ok(parser)
}

/// Writes each finished case's output to `dir/NAME` and its exit status to `dir/NAME.rc`, and the
/// output of a case that began but never ended to `dir/NAME`.
pub fn write_split(dir: &Path, console: &ConsoleParser) -> Result<(), BatchFileError> {
    let write = |path: PathBuf, text: &str| {
        std::fs::write(&path, text).map_err(|source| BatchFileError::Write { path, source })
    };
    for (name, case) in &console.finished {
        write(dir.join(name), &case.console)?;
        write(dir.join(format!("{name}.rc")), &format!("{}\n", case.exit_code))?;
    }
    if let Some((name, partial)) = &console.unfinished {
        write(dir.join(name), partial)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_skip_comments_and_blank_lines() {
        let text = "# a comment\n\na\techo 1\nb\techo 2; echo 3\n";
        assert_eq!(cases(text).collect::<Vec<_>>(), [("a", "echo 1"), ("b", "echo 2; echo 3")]);
    }

    #[test]
    fn a_batch_runs_here_with_the_markers() {
        let mut seen = Vec::new();
        let mut ended = Vec::new();
        let mut on_line = |l: &str, e: Option<(&str, &crate::console::CaseLog)>| {
            seen.push(l.to_string());
            ended.extend(e.map(|(n, c)| (n.to_string(), c.exit_code)));
        };
        let p = run_here("one\techo hi; echo err >&2\ntwo\texit 3\n", &mut on_line).expect("bash runs");
        assert_eq!(p.finished["one"].console, "hi\nerr\n");
        assert_eq!(p.finished["two"].exit_code, 3);
        assert_eq!(ended, [("one".to_string(), 0), ("two".to_string(), 3)]);
        assert_eq!(seen.first().map(String::as_str), Some(markers::begin("one").as_str()));
    }
}
