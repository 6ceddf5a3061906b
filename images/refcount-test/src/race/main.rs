//! `daxvmm-race --plan FS:SCENARIO:RUNS,...`: the guest side of `daxvmm test`. For each plan item it
//! makes and mounts the filesystem on the fsdax NVDIMM (when it changes), then runs the scenario RUNS
//! times. Runs are numbered from 0 across the whole plan, and each is bracketed by run-begin/run-end
//! events, on which the host arms that run's schedule and judges the run. The console lines starting with
//! `@@race` are the protocol with the host:
//!
//! ```text
//! @@race hello run=0 kernel=RELEASE config-sha256=HASH driver=yes|no fault=yes|no cpus=N mutant=NAME|none build-id=HEX
//! @@race begin run=N scenario=NAME fs=FS
//! @@race note|finding|skip run=N TEXT
//! @@race end run=N
//! @@race done run=N runs=COUNT
//! ```

mod ctx;
mod error;
mod files;
mod fsck;
mod mappings;
mod poison;
mod racers;
mod refs;
mod scenarios;
mod watchdog;

use std::process::Command;
use std::sync::Arc;

use daxvmm_refcount_test::sys::Dev;
use daxvmm_scenarios::ScenarioId;

use ctx::{bracket, code, skip, Ctx};
use error::RaceError;

const USAGE: &str = "usage: daxvmm-race --plan FS:SCENARIO:RUNS[,...] [--dev /dev/pmem0|virtio|nfit] [--raw /dev/pmem1|nfit] [--mnt DIR] [--sleeps]
  FS: ext4 or xfs; SCENARIO: one of the names below; RUNS: how many runs (one schedule each, chosen by the host).
  --raw: a second NVDIMM left raw, the non-DAX source of the O_DIRECT scenario.
  --sleeps: random 0-2 ms sleeps before every sync point (the baseline that daxvmm's benchmark compares with).";

#[derive(Debug)]
struct Args {
    plan: Vec<(String, ScenarioId, u64)>,
    dev: String,
    raw: Option<String>,
    mnt: String,
    sleeps: bool,
}

fn parse_args(args: &[String]) -> Result<Args, RaceError> {
    let mut a = Args {
        plan: Vec::new(),
        dev: "/dev/pmem0".into(),
        raw: None,
        mnt: "/mnt/race".into(),
        sleeps: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| RaceError::MissingValue(arg.clone()));
        match arg.as_str() {
            "--plan" => {
                for item in value()?.split(',').filter(|s| !s.is_empty()) {
                    let parts: Vec<&str> = item.split(':').collect();
                    let [fs, name, runs] = parts[..] else { return Err(RaceError::PlanItem(item.into())) };
                    if !matches!(fs, "ext4" | "xfs") {
                        return Err(RaceError::PlanFs(item.into()));
                    }
                    let Some(id) = ScenarioId::from_name(name) else {
                        return Err(RaceError::PlanScenario { item: item.into(), name: name.into() });
                    };
                    let runs =
                        runs.parse().map_err(|source| RaceError::PlanRuns { item: item.into(), source })?;
                    a.plan.push((fs.to_string(), id, runs));
                }
            }
            "--dev" => a.dev = value()?,
            "--raw" => a.raw = Some(value()?),
            "--mnt" => a.mnt = value()?,
            "--sleeps" => a.sleeps = true,
            _ => return Err(RaceError::UnknownArgument(arg.clone())),
        }
    }
    if a.plan.is_empty() {
        return Err(RaceError::NoPlan);
    }
    Ok(a)
}

/// `--dev` and `--raw` may name a bus instead of a disk: `virtio` or `nfit` is the first pmem disk on
/// virtio-pmem or on the ACPI NFIT (the guest numbers its pmem disks in probe order, which differs
/// between the buses, so the host cannot name them).
fn resolve_disks(mut a: Args) -> Result<Args, RaceError> {
    a.dev = disk(&a.dev)?;
    a.raw = a.raw.as_deref().map(disk).transpose()?;
    Ok(a)
}

fn disk(name: &str) -> Result<String, RaceError> {
    let marker = match name {
        "virtio" => "/virtio",
        "nfit" => "/ACPI0012:",
        _ => return Ok(name.to_string()),
    };
    let mut disks: Vec<String> = std::fs::read_dir("/sys/block")
        .map_err(|_| RaceError::NoDisk(name.to_string()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("pmem"))
        .filter(|n| {
            let path = std::fs::canonicalize(format!("/sys/block/{n}")).unwrap_or_default();
            path.to_string_lossy().contains(marker)
        })
        .collect();
    disks.sort();
    disks.first().map(|d| format!("/dev/{d}")).ok_or_else(|| RaceError::NoDisk(name.to_string()))
}

fn sh(script: &str) -> Result<String, RaceError> {
    let out = Command::new("sh").arg("-c").arg(script).output().map_err(RaceError::Shell)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(RaceError::Script { script: script.into(), stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn mount_fresh(fs: &str, dev: &str, mnt: &str) -> Result<(), RaceError> {
    sh(&format!(
        "umount {mnt} 2>/dev/null; . /tests/lib.sh && ensure_fsdax {dev} && mkfs_dax {fs} {dev} && mkdir -p {mnt} && mount -t {fs} -o dax {dev} {mnt}"
    ))
    .map(|_| ())
}

/// The GNU build id (hex) among the ELF notes `notes` (/sys/kernel/notes: namesz, descsz, type, then the
/// name and the descriptor, each padded to 4 bytes).
fn gnu_build_id(notes: &[u8]) -> Option<String> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let word = |at: usize| Some(u32::from_ne_bytes(notes.get(at..at + 4)?.try_into().ok()?) as usize);
    let pad = |n: usize| n.div_ceil(4) * 4;
    let mut at = 0;
    while at + 12 <= notes.len() {
        let (namesz, descsz, kind) = (word(at)?, word(at + 4)?, word(at + 8)?);
        let name = notes.get(at + 12..at + 12 + namesz)?;
        let desc_at = at + 12 + pad(namesz);
        let desc = notes.get(desc_at..desc_at + descsz)?;
        if kind as u32 == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return Some(desc.iter().map(|b| format!("{b:02x}")).collect());
        }
        at = desc_at + pad(descsz);
    }
    None
}

/// The deliberate bug the kernel selected at boot: `daxvmm_mutant=` on its command line, if the kernel has
/// the mutants patch (it has the mutants' wake file); `none` otherwise.
fn selected_mutant() -> String {
    if !std::path::Path::new(watchdog::WAKE_FILE).exists() {
        return "none".into();
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("daxvmm_mutant="))
        .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        .unwrap_or("none")
        .to_string()
}

// The usage text goes to stderr; everything else is the `@@race` protocol on stdout.
#[allow(clippy::print_stderr)]
fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv).and_then(resolve_disks) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("daxvmm-race: {e}\n{USAGE}");
            eprintln!("scenarios: {}", ScenarioId::ALL.map(ScenarioId::name).join(" "));
            std::process::exit(2);
        }
    };
    let dev = Dev::open().ok();
    // A marker tells whether the driver bound daxvmm's fault injector (ENODEV if not).
    let fault = dev.as_ref().is_some_and(|d| d.event(u64::from(code::MARKER) << 56).is_ok());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = sh("uname -r").unwrap_or_default();
    let config = sh("zcat /proc/config.gz 2>/dev/null | sha256sum | cut -d' ' -f1").unwrap_or_default();
    let mutant = selected_mutant();
    let build_id = std::fs::read("/sys/kernel/notes").ok().and_then(|n| gnu_build_id(&n)).unwrap_or_default();
    bracket(
        "hello",
        0,
        &format!(
            "kernel={kernel} config-sha256={config} driver={} fault={} cpus={cpus} mutant={mutant} build-id={build_id}",
            if dev.is_some() { "yes" } else { "no" },
            if fault { "yes" } else { "no" }
        ),
    );
    let mut run = 0u64;
    let mut mounted: Option<String> = None;
    for &(ref fs, id, runs) in &args.plan {
        let threads = usize::from(id.threads());
        let setup = if mounted.as_deref() == Some(fs.as_str()) {
            Ok(())
        } else {
            // The filesystem left behind is checked before the device gets a new one.
            if let (Some(old), Some(last)) = (mounted.take(), run.checked_sub(1)) {
                fsck::check(&old, &args.dev, &args.mnt, last);
            }
            mount_fresh(fs, &args.dev, &args.mnt).map(|_| mounted = Some(fs.clone())).map_err(Arc::new)
        };
        for _ in 0..runs {
            let ctx = Ctx {
                dev: dev.as_ref(),
                fault,
                run,
                cpus,
                sleeps: args.sleeps,
                mount: (fs.as_str(), args.dev.as_str()),
            };
            bracket("begin", run, &format!("scenario={id} fs={fs}"));
            ctx.event(code::RUN_BEGIN, 0, run, 0);
            let r = match &setup {
                Err(e) => Err(RaceError::Setup(Arc::clone(e))),
                Ok(()) if threads > cpus => Err(RaceError::TooFewCpus { threads, cpus }),
                Ok(()) => scenarios::run(&ctx, id, &args.mnt, args.raw.as_deref()),
            };
            if let Err(e) = r {
                skip(run, &e.to_string());
            }
            ctx.event(code::RUN_END, 0, run, 0);
            bracket("end", run, "");
            run += 1;
        }
    }
    if let (Some(old), Some(last)) = (mounted, run.checked_sub(1)) {
        fsck::check(&old, &args.dev, &args.mnt, last);
    }
    bracket("done", run, &format!("runs={run}"));
}

#[cfg(test)]
mod tests {
    use super::gnu_build_id;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [name.len() as u32, desc.len() as u32, kind] {
            v.extend_from_slice(&w.to_ne_bytes());
        }
        v.extend_from_slice(name);
        v.resize(v.len().div_ceil(4) * 4, 0);
        v.extend_from_slice(desc);
        v.resize(v.len().div_ceil(4) * 4, 0);
        v
    }

    #[test]
    fn finds_the_gnu_build_id_among_other_notes() {
        let mut notes = note(b"Xen\0", 1, &[1, 2, 3]);
        notes.extend(note(b"GNU\0", 3, &[0xde, 0xad, 0xbe, 0xef, 0x01]));
        assert_eq!(gnu_build_id(&notes).as_deref(), Some("deadbeef01"));
        assert_eq!(gnu_build_id(&note(b"GNU\0", 1, &[1])), None, "another GNU note");
        assert_eq!(gnu_build_id(&notes[..20]), None, "cut short");
        assert_eq!(gnu_build_id(&[]), None);
    }
}
