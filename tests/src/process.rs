//! Running a host process with a deadline and capturing its output: daxvmm per case (Direct) and the bad
//! input checks, which need no guest.

use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A finished (or killed) process.
#[derive(Debug, Clone)]
pub struct ProcessRun {
    /// The exit code; 128 + N when a signal N ended it.
    pub code: i32,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// Spawn to exit.
    pub wall: Duration,
    /// We killed it at the deadline.
    pub timed_out: bool,
}

/// Spawns `cmd` (stdin from /dev/null), waits for it at most `limit`, then kills it.
pub fn run_with_deadline(cmd: &mut Command, limit: Duration) -> io::Result<ProcessRun> {
    run_with_input(cmd, limit, None)
}

/// Like [`run_with_deadline`], but writes `input.1` to the process's stdin after `input.0` (then closes it).
pub fn run_with_input(
    cmd: &mut Command,
    limit: Duration,
    input: Option<(Duration, Vec<u8>)>,
) -> io::Result<ProcessRun> {
    let start = Instant::now();
    let stdin = if input.is_some() { Stdio::piped() } else { Stdio::null() };
    let mut child = cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    if let (Some((delay, bytes)), Some(mut w)) = (input, child.stdin.take()) {
        thread::spawn(move || {
            thread::sleep(delay);
            // The process may have exited already; then there is nobody to type to.
            let _ = w.write_all(&bytes);
        });
    }
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() >= limit {
            timed_out = true;
            // It may have exited since try_wait; then kill fails and wait reaps it.
            let _ = child.kill();
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed();
    let collect = |h: Option<thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    };
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1);
    Ok(ProcessRun { code, stdout: collect(out), stderr: collect(err), wall, timed_out })
}

fn drain<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error ends the capture; what was read so far is kept.
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_both_streams_and_the_code() {
        let r = run_with_deadline(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 6"]),
            Duration::from_secs(30),
        )
        .expect("sh runs");
        assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str(), r.timed_out), (6, "out\n", "err\n", false));
    }

    #[test]
    fn kills_at_the_deadline() {
        let r = run_with_deadline(Command::new("sleep").arg("30"), Duration::from_millis(200)).expect("runs");
        assert!(r.timed_out);
        assert_eq!(r.code, 128 + 9);
        assert!(r.wall < Duration::from_secs(10));
    }
}
