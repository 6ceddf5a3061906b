//! `daxvmm-boot-timer`: spawns a VMM with its console (stdout) on a pipe and measures the time from spawn to
//! the first console line containing a marker (by default `daxvmm-guest: init reached`), then waits for the
//! VMM to exit, killing it when it outlives the deadline. Used by scripts/bench-boot.sh.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

/// The line /init prints once guest user space runs (docs/guest-interface.md).
pub const DEFAULT_MARKER: &str = "daxvmm-guest: init reached";

/// Usage text of `daxvmm-boot-timer`.
pub const USAGE: &str = "usage: daxvmm-boot-timer [--marker TEXT] [--timeout SECS] [--grace SECS] [--console FILE] -- PROGRAM [ARGS...]
Spawns PROGRAM with stdout on a pipe and prints one line to stdout:
  daxvmm-boot-timer: marker_ms=<ms from spawn to the marker line, or none> exit_ms=<ms to exit> exit=<code|signal N|killed>
--timeout: give up waiting for the marker after SECS (default 300); --grace: after the marker, wait SECS (default 60)
for PROGRAM to exit before killing it; --console: copy PROGRAM's stdout to FILE.
Exit status: 0 when the marker was seen, 1 when not, 2 on usage errors.";

/// Parsed `daxvmm-boot-timer` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerArgs {
    pub marker: String,
    pub timeout: Duration,
    pub grace: Duration,
    pub console: Option<OsString>,
    pub command: Vec<OsString>,
}

/// A `daxvmm-boot-timer` command line that cannot be used (exit code 2, with the usage text).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TimerArgsError {
    /// An option was the last argument.
    #[error("{0} needs a value")]
    MissingValue(String),
    /// Not an option this tool knows.
    #[error("unknown argument '{0}' (the command goes after --)")]
    UnknownArgument(String),
    /// Nothing to run.
    #[error("no command given after --")]
    NoCommand,
    /// `--marker ''`.
    #[error("--marker must not be empty")]
    EmptyMarker,
    /// A duration that is not a positive number of seconds.
    #[error("{flag} wants a positive number of seconds, got '{value}'")]
    BadSeconds {
        /// The option.
        flag: String,
        /// What was given.
        value: String,
    },
}

/// Parses the arguments after the program name.
pub fn parse_timer_args(args: &[OsString]) -> Result<TimerArgs, TimerArgsError> {
    let mut out = TimerArgs {
        marker: DEFAULT_MARKER.to_string(),
        timeout: Duration::from_secs(300),
        grace: Duration::from_secs(60),
        console: None,
        command: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let flag = arg.to_str().unwrap_or("");
        if flag == "--" {
            out.command = it.cloned().collect();
            break;
        }
        let mut value = || it.next().ok_or_else(|| TimerArgsError::MissingValue(flag.to_string()));
        match flag {
            "--marker" => out.marker = value()?.to_string_lossy().into_owned(),
            "--timeout" => out.timeout = parse_secs(flag, value()?)?,
            "--grace" => out.grace = parse_secs(flag, value()?)?,
            "--console" => out.console = Some(value()?.clone()),
            _ => return Err(TimerArgsError::UnknownArgument(arg.to_string_lossy().into_owned())),
        }
    }
    if out.command.is_empty() {
        return Err(TimerArgsError::NoCommand);
    }
    if out.marker.is_empty() {
        return Err(TimerArgsError::EmptyMarker);
    }
    Ok(out)
}

fn parse_secs(flag: &str, v: &OsString) -> Result<Duration, TimerArgsError> {
    let text = v.to_string_lossy();
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(TimerArgsError::BadSeconds { flag: flag.to_string(), value: text.into_owned() }),
    }
}

/// What one timed run measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Spawn to the marker line, if it appeared.
    pub marker_after: Option<Duration>,
    /// Spawn to the child's exit (or to its kill).
    pub exit_after: Duration,
    /// `exit=` value: the exit code, `signal N`, or `killed` when we had to kill it.
    pub exit: String,
}

impl Timing {
    /// The one result line the benchmark script parses.
    pub fn line(&self) -> String {
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        format!(
            "daxvmm-boot-timer: marker_ms={} exit_ms={} exit={}",
            self.marker_after.map_or_else(|| "none".to_string(), ms),
            ms(self.exit_after),
            self.exit
        )
    }
}

enum Event {
    Marker(Instant),
    Eof,
}

/// Runs the command and measures it. The child is always waited for; it is killed when it outlives
/// `timeout` without the marker or `grace` after it.
pub fn run(args: &TimerArgs) -> io::Result<Timing> {
    let mut console = args.console.as_ref().map(File::create).transpose()?;
    let start = Instant::now();
    let mut child = Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            io::Error::new(e.kind(), format!("cannot run {}: {e}", args.command[0].to_string_lossy()))
        })?;
    let stdout = child.stdout.take().ok_or_else(|| io::Error::other("child has no stdout pipe"))?;
    let (tx, rx) = mpsc::channel();
    let marker = args.marker.clone().into_bytes();
    let reader = thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        let mut seen = false;
        // Errors end the loop like EOF does; the console copy is best effort.
        while r.read_until(b'\n', &mut line).map(|n| n > 0).unwrap_or(false) {
            if !seen && contains(&line, &marker) {
                seen = true;
                let _ = tx.send(Event::Marker(Instant::now()));
            }
            if let Some(f) = console.as_mut() {
                let _ = f.write_all(&line);
            }
            line.clear();
        }
        let _ = tx.send(Event::Eof);
    });

    let wait = args.timeout.saturating_sub(start.elapsed());
    let event = rx.recv_timeout(wait);
    let marker_at = match event {
        Ok(Event::Marker(t)) => Some(t),
        _ => None,
    };
    // After the marker or EOF the child is expected to exit by itself; after a timeout it is killed now.
    let exit_deadline = match event {
        Ok(_) => Instant::now() + args.grace,
        Err(_) => Instant::now(),
    };
    let (status, killed) = wait_until(&mut child, exit_deadline)?;
    let exit_after = start.elapsed();
    // The pipe closes when the child (and anything it forked that kept stdout) is gone.
    let _ = reader.join();
    Ok(Timing {
        marker_after: marker_at.map(|t| t - start),
        exit_after,
        exit: if killed { "killed".into() } else { describe(status) },
    })
}

/// Waits for the child until `deadline`, then kills it; returns its status and whether we killed it.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<(ExitStatus, bool)> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, false));
        }
        if Instant::now() >= deadline {
            // It may exit between try_wait and kill; kill then fails with InvalidInput, which is fine.
            let _ = child.kill();
            return Ok((child.wait()?, true));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => "unknown".into(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_options_and_command() {
        let a = parse_timer_args(&os(&["--timeout", "2.5", "--marker", "hi", "--", "echo", "--timeout"]))
            .expect("valid");
        assert_eq!(a.timeout, Duration::from_millis(2500));
        assert_eq!(a.marker, "hi");
        assert_eq!(a.command, os(&["echo", "--timeout"]));
        assert_eq!(a.grace, Duration::from_secs(60));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse_timer_args(&os(&["--",])).is_err());
        assert!(parse_timer_args(&os(&["echo"])).is_err());
        assert!(parse_timer_args(&os(&["--timeout", "-1", "--", "true"])).is_err());
        assert!(parse_timer_args(&os(&["--timeout", "soon", "--", "true"])).is_err());
        assert!(parse_timer_args(&os(&["--timeout"])).is_err());
    }

    #[test]
    fn times_a_marker_and_waits_for_exit() {
        let a = parse_timer_args(&os(&[
            "--marker",
            "init reached",
            "--",
            "sh",
            "-c",
            "echo x; echo 'daxvmm-guest: init reached'; exit 3",
        ]))
        .expect("valid");
        let t = run(&a).expect("runs");
        assert!(t.marker_after.is_some(), "{t:?}");
        assert_eq!(t.exit, "3");
        assert!(t.line().starts_with("daxvmm-boot-timer: marker_ms="), "{}", t.line());
    }

    #[test]
    fn kills_a_child_that_never_prints_the_marker() {
        let a = parse_timer_args(&os(&["--timeout", "0.3", "--", "sleep", "30"])).expect("valid");
        let started = Instant::now();
        let t = run(&a).expect("runs");
        assert_eq!(t.marker_after, None);
        assert_eq!(t.exit, "killed");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(t.line().contains("marker_ms=none"), "{}", t.line());
    }
}
