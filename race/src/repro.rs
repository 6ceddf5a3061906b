//! Repro files: everything needed to replay one violating run and to judge whether the replay shows the
//! same violation. The format is plain text for bug reports: `key: value` lines (the `finding` key
//! repeats), then the run's fault log and guest console as indented sections, which replay ignores.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use daxvmm_devices::fault::Schedule;
use thiserror::Error;

use crate::guest::Transport;
use crate::oracle::{Finding, FindingKind};

/// Largest repro file read; daxvmm's own are a few hundred KiB at most (the fault log and guest log of
/// one run).
pub const MAX_FILE: u64 = 16 << 20;
/// Filesystems a run can be on.
const FILESYSTEMS: [&str; 2] = ["ext4", "xfs"];
use crate::verdict::{Hello, RunResult};

/// First line of every repro file.
pub const HEADER: &str = "format: daxvmm-repro 1";

/// One violating run, as written and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repro {
    /// Guest kernel image.
    pub kernel: PathBuf,
    /// Guest initramfs.
    pub initrd: PathBuf,
    /// `uname -r` of the guest.
    pub kernel_release: String,
    /// sha256 of the guest kernel's configuration.
    pub config_sha256: String,
    /// The deliberate bug the kernel had selected (`--mutant`), if any.
    pub mutant: Option<String>,
    /// The guest kernel's GNU build id (empty: not known).
    pub build_id: String,
    /// Where the run was in its boot's plan: (run number from 0, runs in the plan). Earlier runs of a
    /// boot can leave state behind (a WARN_ON_ONCE that fired, a reused block), so a reader wants it.
    pub plan_position: Option<(u64, u64)>,
    /// The kernel's own events of the run in order ([`crate::kernel_order`]); a replay must show them
    /// in the same order.
    pub kernel_events: Vec<String>,
    /// Library scenario.
    pub scenario: String,
    /// ext4 or xfs.
    pub fs: String,
    /// What the filesystems' NVDIMM was to the guest.
    pub transport: Transport,
    /// The seed the schedule was sampled from, if it was.
    pub seed: Option<u64>,
    /// The exact schedule.
    pub schedule: Schedule,
    /// vCPUs.
    pub cpus: u8,
    /// Hold bound in milliseconds.
    pub bound_ms: u64,
    /// What the oracle found.
    pub findings: Vec<Finding>,
}

/// Why a repro file could not be read.
#[derive(Debug, Error)]
pub enum ReproError {
    /// Reading the file failed.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        err: std::io::Error,
    },
    /// The file is not a repro file, or a field is missing or bad.
    #[error("{path}: {why}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        why: ParseError,
    },
}

/// What is wrong with a repro file's text.
#[derive(Debug, Error)]
pub enum ParseError {
    /// The first line is not [`HEADER`].
    #[error("not a daxvmm repro file (the first line must be '{HEADER}')")]
    NotRepro,
    /// Larger than [`MAX_FILE`].
    #[error("larger than {} MiB: not a repro file daxvmm wrote", MAX_FILE >> 20)]
    TooLarge,
    /// A header line without "key: value".
    #[error("bad line '{0}' (expected 'key: value')")]
    BadLine(String),
    /// A field is missing.
    #[error("missing '{0}'")]
    Missing(&'static str),
    /// A field is not a number.
    #[error("'{0}' is not a number")]
    NotANumber(&'static str),
    /// A finding line without "kind: text".
    #[error("bad finding '{0}'")]
    BadFinding(String),
    /// A finding kind daxvmm does not know.
    #[error("unknown finding kind '{0}'")]
    FindingKind(String),
    /// A scenario the library does not have.
    #[error("unknown scenario '{0}' (daxvmm test --list)")]
    Scenario(String),
    /// A build id that is not hex.
    #[error("kernel-build-id '{0}': must be hex")]
    BuildId(String),
    /// A mutant the variant does not have.
    #[error("unknown mutant '{0}'")]
    Mutant(String),
    /// A transport daxvmm does not have.
    #[error("transport '{0}': must be nfit or virtio")]
    Transport(String),
    /// A filesystem other than ext4 or xfs.
    #[error("fs '{0}': must be ext4 or xfs")]
    Filesystem(String),
    /// A number out of its range.
    #[error("{field} {value}: must be {range}")]
    Range {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What it may be.
        range: &'static str,
    },
    /// The schedule does not parse.
    #[error("schedule: {0}")]
    Schedule(#[from] daxvmm_devices::fault::FaultError),
}

impl Repro {
    /// The repro of a violating run.
    pub fn of(
        result: &RunResult,
        kernel: &Path,
        initrd: &Path,
        hello: Option<&Hello>,
        cpus: u8,
        bound_ms: u64,
    ) -> Option<Self> {
        Some(Self {
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            kernel_release: hello.map_or_else(String::new, |h| h.kernel.clone()),
            config_sha256: hello.map_or_else(String::new, |h| h.config_sha256.clone()),
            // The guest's hello is untrusted: what would not load again is left out (a mutant the host
            // does not know, a build id that is not hex), so every file written can be replayed.
            mutant: hello.and_then(|h| h.mutant.clone()).filter(|m| crate::mutants::find(m).is_some()),
            build_id: hello
                .map(|h| h.build_id.clone())
                .filter(|b| b.bytes().all(|c| c.is_ascii_hexdigit()))
                .unwrap_or_default(),
            kernel_events: result.kernel_order.clone(),
            plan_position: None,
            scenario: result.planned.scenario.clone(),
            fs: result.planned.fs.clone(),
            transport: result.transport,
            seed: result.planned.seed,
            schedule: result.planned.schedule.clone()?,
            cpus,
            bound_ms,
            findings: result.findings.clone(),
        })
    }

    /// The file's text, with the run's logs appended for the reader.
    pub fn render(&self, fault_log: &[String], guest_log: &str) -> String {
        let mut s = format!(
            "{HEADER}\n# Replay: daxvmm repro THIS_FILE (add --kernel/--initrd if the images moved).\n"
        );
        let _ = writeln!(s, "kernel: {}", self.kernel.display());
        let _ = writeln!(s, "initrd: {}", self.initrd.display());
        let _ = writeln!(s, "kernel-release: {}", self.kernel_release);
        let _ = writeln!(s, "kernel-config-sha256: {}", self.config_sha256);
        let _ = writeln!(s, "mutant: {}", self.mutant.as_deref().unwrap_or("none"));
        let _ = writeln!(
            s,
            "kernel-build-id: {}",
            if self.build_id.is_empty() { "unknown" } else { &self.build_id }
        );
        let _ = writeln!(s, "scenario: {}", self.scenario);
        let _ = writeln!(s, "fs: {}", self.fs);
        let _ = writeln!(s, "transport: {}", self.transport.name());
        let _ = writeln!(s, "seed: {}", self.seed.map_or("none (enumerated)".to_string(), |v| v.to_string()));
        let _ = writeln!(s, "schedule: {}", self.schedule);
        let _ = writeln!(s, "cpus: {}", self.cpus);
        let _ = writeln!(s, "hold-bound-ms: {}", self.bound_ms);
        if let Some((run, of)) = self.plan_position {
            let _ = writeln!(s, "plan-position: run {run} of {of}");
        }
        let events =
            if self.kernel_events.is_empty() { "none".to_string() } else { self.kernel_events.join(" ") };
        let _ = writeln!(s, "kernel-events: {events}");
        for f in &self.findings {
            let _ = writeln!(s, "finding: {f}");
        }
        s.push_str("== fault log (the host's view of the run)\n");
        for l in fault_log {
            let _ = writeln!(s, "  {l}");
        }
        s.push_str("== guest log (console lines of the run)\n");
        for l in guest_log.lines() {
            let _ = writeln!(s, "  {l}");
        }
        s
    }

    /// Reads a repro file; one larger than [`MAX_FILE`] is refused before it is read.
    pub fn load(path: &Path) -> Result<Self, ReproError> {
        use std::io::Read as _;
        let shown = path.display().to_string();
        let io = |err| ReproError::Io { path: shown.clone(), err };
        let mut text = String::new();
        std::fs::File::open(path).map_err(io)?.take(MAX_FILE + 1).read_to_string(&mut text).map_err(io)?;
        if text.len() as u64 > MAX_FILE {
            return Err(ReproError::Format { path: shown, why: ParseError::TooLarge });
        }
        Self::parse(&text).map_err(|why| ReproError::Format { path: shown, why })
    }

    /// Parses a repro file's text.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if text.lines().next() != Some(HEADER) {
            return Err(ParseError::NotRepro);
        }
        let mut fields: Vec<(&str, &str)> = Vec::new();
        for line in text.lines().skip(1) {
            if line.starts_with("== ") {
                break;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (k, v) = line.split_once(": ").ok_or_else(|| ParseError::BadLine(line.to_string()))?;
            fields.push((k, v.trim()));
        }
        let get = |k: &'static str| {
            fields.iter().find(|(key, _)| *key == k).map(|(_, v)| *v).ok_or(ParseError::Missing(k))
        };
        let num = |k: &'static str| get(k)?.parse::<u64>().map_err(|_| ParseError::NotANumber(k));
        let findings = fields
            .iter()
            .filter(|(k, _)| *k == "finding")
            .map(|(_, v)| {
                // "KIND: TEXT"; a finding with no text is written as "KIND: " and read back trimmed.
                let (kind, text) = v.split_once(':').ok_or_else(|| ParseError::BadFinding(v.to_string()))?;
                let text = text.trim();
                let kind =
                    FindingKind::from_name(kind).ok_or_else(|| ParseError::FindingKind(kind.to_string()))?;
                Ok(Finding::new(kind, text))
            })
            .collect::<Result<Vec<_>, ParseError>>()?;
        let scenario = get("scenario")?;
        crate::library::find(scenario).ok_or_else(|| ParseError::Scenario(scenario.to_string()))?;
        let fs = get("fs")?;
        if !FILESYSTEMS.contains(&fs) {
            return Err(ParseError::Filesystem(fs.to_string()));
        }
        let cpus = num("cpus")?;
        if !(1..=8).contains(&cpus) {
            return Err(ParseError::Range { field: "cpus", value: cpus, range: "1 to 8" });
        }
        let bound_ms = num("hold-bound-ms")?;
        if !(1..=600_000).contains(&bound_ms) {
            return Err(ParseError::Range { field: "hold-bound-ms", value: bound_ms, range: "1 to 600000" });
        }
        // Files from before mutants existed have no such line.
        let mutant = match get("mutant") {
            Err(_) | Ok("none") => None,
            Ok(m) if crate::mutants::find(m).is_some() => Some(m.to_string()),
            Ok(m) => return Err(ParseError::Mutant(m.to_string())),
        };
        // Files from before virtio-pmem have no transport line: they ran on the NFIT.
        let transport = match get("transport") {
            Err(_) => Transport::Nfit,
            Ok(t) => t.parse().map_err(|_| ParseError::Transport(t.to_string()))?,
        };
        // Also absent from older files.
        let build_id = get("kernel-build-id").ok().filter(|b| *b != "unknown").unwrap_or("");
        if !build_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseError::BuildId(build_id.to_string()));
        }
        let plan_position = match get("plan-position") {
            Err(_) => None,
            Ok(p) => {
                Some(parse_position(p).ok_or_else(|| ParseError::BadLine(format!("plan-position: {p}")))?)
            }
        };
        let kernel_events = match get("kernel-events") {
            Err(_) | Ok("none") => Vec::new(),
            Ok(e) => e.split_whitespace().map(String::from).collect(),
        };
        Ok(Self {
            kernel: PathBuf::from(get("kernel")?),
            initrd: PathBuf::from(get("initrd")?),
            kernel_release: get("kernel-release")?.to_string(),
            config_sha256: get("kernel-config-sha256")?.to_string(),
            mutant,
            build_id: build_id.to_string(),
            kernel_events,
            plan_position,
            scenario: scenario.to_string(),
            fs: fs.to_string(),
            transport,
            seed: get("seed")?.parse().ok(),
            schedule: get("schedule")?.parse()?,
            cpus: cpus as u8,
            bound_ms,
            findings,
        })
    }

    /// The file name for run `run`.
    pub fn file_name(&self, run: u64) -> String {
        format!("{}-{}-run{run}.repro", self.scenario, self.fs)
    }
}

/// `run N of M` with N < M.
fn parse_position(text: &str) -> Option<(u64, u64)> {
    let (n, m) = text.strip_prefix("run ")?.split_once(" of ")?;
    let (n, m) = (n.parse().ok()?, m.parse().ok()?);
    (n < m).then_some((n, m))
}

/// The kinds that identify a violation for replay: ordering, guest and crash findings are decided by the
/// schedule alone. Data findings also depend on which block the allocator hands out, and a WARN_ON_ONCE
/// fires only in the first violating run of a boot, so those count only when nothing else was found.
pub fn identity(findings: &[Finding]) -> BTreeSet<FindingKind> {
    let all: BTreeSet<FindingKind> = findings.iter().map(|f| f.kind).collect();
    let strict: BTreeSet<FindingKind> = all
        .iter()
        .copied()
        .filter(|k| matches!(k, FindingKind::Ordering | FindingKind::Guest | FindingKind::Crash))
        .collect();
    if strict.is_empty() {
        all
    } else {
        strict
    }
}

/// Whether a replay's findings show the recorded violation.
pub fn reproduced(recorded: &[Finding], replay: &[Finding]) -> bool {
    let want = identity(recorded);
    let got: BTreeSet<FindingKind> = replay.iter().map(|f| f.kind).collect();
    !want.is_empty() && want.is_subset(&got)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Repro {
        Repro {
            kernel: "/k/bzImage".into(),
            initrd: "/k/initrd".into(),
            kernel_release: "7.2.12".into(),
            config_sha256: "abc".into(),
            mutant: None,
            build_id: "0a1b".into(),
            kernel_events: vec!["wait-begin@+0".into(), "free@+0".into()],
            plan_position: Some((3, 10)),
            scenario: "truncate-unpin".into(),
            fs: "xfs".into(),
            transport: Transport::Virtio,
            seed: None,
            schedule: "0.s1 0.e7 1.s1 1.s2 0.s2".parse().unwrap(),
            cpus: 3,
            bound_ms: 2000,
            findings: vec![
                Finding::new(FindingKind::Ordering, "truncate returned: while pinned"),
                Finding::new(FindingKind::Data, "block 0x10"),
            ],
        }
    }

    #[test]
    fn round_trips_and_ignores_the_logs() {
        let r = sample();
        let text = r.render(&["#1 Event".into()], "finding: not a field\n");
        assert_eq!(Repro::parse(&text).unwrap(), r);
        let seeded = Repro { seed: Some(42), ..sample() };
        assert_eq!(Repro::parse(&seeded.render(&[], "")).unwrap().seed, Some(42));
        let mutant = Repro { mutant: Some("lost-wake".into()), ..sample() };
        assert_eq!(Repro::parse(&mutant.render(&[], "")).unwrap(), mutant);
        let old = sample().render(&[], "").replace("mutant: none\n", "");
        assert_eq!(Repro::parse(&old).unwrap().mutant, None, "a file without the line has none");
        let text = sample().render(&[], "");
        assert!(text.contains("transport: virtio\n"), "{text}");
        let old = text.replace("transport: virtio\n", "");
        assert_eq!(Repro::parse(&old).unwrap().transport, Transport::Nfit, "older files ran on the NFIT");
        let bad = text.replace("transport: virtio", "transport: pci");
        assert!(matches!(Repro::parse(&bad), Err(ParseError::Transport(t)) if t == "pci"));
        let bare = Repro { build_id: String::new(), kernel_events: Vec::new(), ..sample() };
        let text = bare.render(&[], "");
        assert!(
            text.contains("kernel-build-id: unknown\n") && text.contains("kernel-events: none\n"),
            "{text}"
        );
        assert_eq!(Repro::parse(&text).unwrap(), bare);
        assert_eq!(r.file_name(7), "truncate-unpin-xfs-run7.repro");
    }

    #[test]
    fn a_file_written_from_hostile_guest_output_loads_again() {
        use crate::plan::PlannedRun;
        use crate::verdict::{Hello, RunResult};
        let s = sample();
        let result = RunResult {
            run: 0,
            planned: PlannedRun {
                scenario: s.scenario.clone(),
                fs: s.fs.clone(),
                schedule: Some(s.schedule.clone()),
                seed: None,
            },
            transport: Transport::Virtio,
            // A guest finding with no text (`@@race finding run=0`).
            findings: vec![Finding::new(FindingKind::Guest, "")],
            skipped: None,
            summary: Default::default(),
            observed: None,
            notes: Vec::new(),
            log: String::new(),
            fault_log: Vec::new(),
            kernel_order: Vec::new(),
            stale_window: Vec::new(),
        };
        let hello = Hello {
            kernel: "7.2.12".into(),
            mutant: Some("bogus".into()),
            build_id: "xyz".into(),
            ..Default::default()
        };
        let r = Repro::of(&result, Path::new("/k"), Path::new("/i"), Some(&hello), 2, 2000).unwrap();
        let back = Repro::parse(&r.render(&[], "")).unwrap();
        assert_eq!((back.mutant, back.build_id.as_str()), (None, ""), "left out, not refused later");
        assert_eq!(back.findings, vec![Finding::new(FindingKind::Guest, "")]);
        assert_eq!(back.transport, Transport::Virtio, "the run's own transport");
        let known = Hello { mutant: Some("lost-wake".into()), build_id: "0a1b".into(), ..hello };
        let r = Repro::of(&result, Path::new("/k"), Path::new("/i"), Some(&known), 2, 2000).unwrap();
        assert_eq!((r.mutant.as_deref(), r.build_id.as_str()), (Some("lost-wake"), "0a1b"));
    }

    #[test]
    fn rejects_bad_files() {
        assert!(Repro::parse("hello").unwrap_err().to_string().contains("not a daxvmm repro file"));
        let text = sample().render(&[], "");
        assert!(Repro::parse(&text.replace("schedule: 0.s1", "schedule: 0.x1"))
            .unwrap_err()
            .to_string()
            .starts_with("schedule"));
        assert!(Repro::parse(&text.replace("cpus: 3\n", ""))
            .unwrap_err()
            .to_string()
            .contains("missing 'cpus'"));
        assert!(Repro::parse(&text.replace("finding: ordering", "finding: weird"))
            .unwrap_err()
            .to_string()
            .contains("unknown finding kind"));
        assert!(matches!(Repro::load(Path::new("/nonexistent.repro")), Err(ReproError::Io { .. })));
        for (from, to, why) in [
            ("cpus: 3", "cpus: 0", "cpus 0"),
            ("cpus: 3", "cpus: 200", "cpus 200"),
            ("fs: xfs", "fs: ext4; reboot", "fs 'ext4; reboot'"),
            ("scenario: truncate-unpin", "scenario: rm -rf", "unknown scenario"),
            ("hold-bound-ms: 2000", "hold-bound-ms: 0", "hold-bound-ms 0"),
            ("mutant: none", "mutant: $(reboot)", "unknown mutant '$(reboot)'"),
            ("kernel-build-id: 0a1b", "kernel-build-id: ../x", "kernel-build-id '../x'"),
            (
                "plan-position: run 3 of 10",
                "plan-position: run 10 of 3",
                "bad line 'plan-position: run 10 of 3'",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            let e = Repro::parse(&text.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains(why), "{to}: {e}");
        }
        let big = std::env::temp_dir().join(format!("daxvmm-big-{}.repro", std::process::id()));
        std::fs::write(&big, format!("{text}{}", "x".repeat(MAX_FILE as usize))).unwrap();
        let e = Repro::load(&big).unwrap_err().to_string();
        std::fs::remove_file(&big).unwrap();
        assert!(e.contains("larger than 16 MiB"), "{e}");
    }

    #[test]
    fn replay_matches_on_the_deterministic_kinds() {
        let rec = sample().findings;
        let ordering = Finding::new(FindingKind::Ordering, "x");
        let sig = Finding::new(FindingKind::Signature, "WARNING");
        assert!(reproduced(&rec, std::slice::from_ref(&ordering)));
        assert!(reproduced(&rec, &[sig.clone(), ordering]));
        assert!(!reproduced(&rec, std::slice::from_ref(&sig)));
        assert!(!reproduced(&rec, &[]));
        // Only a signature recorded: the signature is the identity.
        let one = std::slice::from_ref(&sig);
        assert!(reproduced(one, one));
        assert!(!reproduced(&[], &[]));
    }
}
