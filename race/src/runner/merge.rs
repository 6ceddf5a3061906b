//! `daxvmm test` on more than one transport (`--transport nfit,virtio`): one guest boot per transport,
//! each running the same (possibly sharded) plan, merged into one session. Run numbers stay unique and
//! stable across the merge: run k of the whole plan on transport index t is run `k + t * whole`, `whole`
//! being the whole plan's length, so the reports of shards of a multi-transport session merge as the
//! shards of a one-transport session do. Every result carries its transport ([`RunResult::transport`]),
//! and each boot keeps its own console file, guest kernel line and console tail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use daxvmm_devices::fault::Schedule;

use super::{abs, create_dir, short, write, BootResult, RaceError};
use crate::guest::Transport;
use crate::oracle::FindingKind;
use crate::report;
use crate::repro::Repro;
use crate::shard::Shard;
use crate::verdict::RunResult;

/// The console file of a boot on `transport` in a session of `boots` boots: console.log for one (as
/// scripts and docs expect), console-TRANSPORT.log for several, so that no boot overwrites another's.
pub(super) fn console_file(transport: Transport, boots: usize) -> String {
    if boots > 1 {
        format!("console-{transport}.log")
    } else {
        "console.log".to_string()
    }
}

/// Renames a boot's runs (numbered from 0 in the plan it ran) by their place in the merged session: in
/// the whole plan when `shard` ran only part of it, after the whole plans of the `index` transports
/// that came before.
pub(super) fn number(results: &mut [RunResult], shard: Option<Shard>, index: usize, whole: usize) {
    let offset = (index * whole) as u64;
    for r in results {
        r.run = shard.map_or(r.run, |s| s.global(r.run)) + offset;
    }
}

/// How a `daxvmm test` session booted its guests, for the repro files.
pub(super) struct Recorded<'a> {
    /// Guest kernel.
    pub kernel: &'a Path,
    /// Guest initramfs.
    pub initrd: &'a Path,
    /// vCPUs.
    pub cpus: u8,
    /// Hold bound.
    pub bound: Duration,
    /// Runs in the whole plan of one transport.
    pub whole: usize,
}

/// A repro file per violating run with a schedule, in `out/repro/`, each with the transport and the
/// guest kernel of its own boot; their paths.
pub(super) fn write_repros(
    boots: &[BootResult],
    out: &Path,
    g: &Recorded<'_>,
) -> Result<Vec<PathBuf>, RaceError> {
    let mut paths = Vec::new();
    for (t, boot) in boots.iter().enumerate() {
        let hello = boot.guest.hello.as_ref();
        for r in boot.results.iter().filter(|r| r.failed()) {
            let bound_ms = g.bound.as_millis() as u64;
            let Some(mut rep) = Repro::of(r, &abs(g.kernel), &abs(g.initrd), hello, g.cpus, bound_ms) else {
                continue;
            };
            // The place in the boot's whole plan: earlier runs of the same boot may have left state.
            let offset = (t * g.whole) as u64;
            rep.plan_position = Some((r.run - offset, g.whole as u64));
            let dir = out.join("repro");
            create_dir(&dir)?;
            let path = dir.join(rep.file_name(r.run));
            write(&path, &rep.render(&r.fault_log, &r.log))?;
            paths.push(path);
        }
    }
    Ok(paths)
}

/// The guest kernel of every boot, the table, every violation and the totals; `secs` is the whole
/// session's time, boots included.
pub(super) fn summary(boots: &[BootResult], secs: f64) -> String {
    let several = boots.len() > 1;
    let mut s = String::new();
    for boot in boots {
        if let Some(h) = &boot.guest.hello {
            let driver = if h.driver { "bound" } else { "absent" };
            let on = match boot.transport {
                Transport::Virtio => ", filesystems on virtio-pmem",
                // A one-transport session on the NFIT says nothing, as it always did.
                Transport::Nfit if several => ", filesystems on an NFIT NVDIMM",
                Transport::Nfit => "",
            };
            s.push_str(&format!(
                "guest kernel {} (config sha256 {}), driver {driver}{}{on}\n",
                h.kernel,
                short(&h.config_sha256),
                h.mutant.as_ref().map_or(String::new(), |m| format!(", mutant {m} selected")),
            ));
        }
    }
    let results: Vec<&RunResult> = boots.iter().flat_map(|b| &b.results).collect();
    s.push_str(&report::table(&report::rows(&merged(boots))));
    let scheduled: Vec<&Schedule> = results.iter().filter_map(|r| r.planned.schedule.as_ref()).collect();
    let unforced = scheduled.iter().filter(|s| s.leaves_order_to_timing()).count();
    if unforced > 0 {
        s.push_str(&format!(
            "unforced: {unforced} of {} schedules put an event step after another thread's step; events cannot be held, so that order is left to timing\n",
            scheduled.len()
        ));
    }
    for r in results.iter().filter(|r| r.failed()) {
        s.push_str(&format!(
            "VIOLATION run {} {} on {} ({}):\n",
            r.run, r.planned.scenario, r.planned.fs, r.transport
        ));
        for f in &r.findings {
            s.push_str(&format!("  {f}\n"));
        }
    }
    for boot in boots {
        if boot.results.iter().flat_map(|r| &r.findings).any(|f| f.kind == FindingKind::Crash) {
            let whose = if several { format!("the {} boot's", boot.transport) } else { "the".to_string() };
            s.push_str(&format!("{whose} guest console's last lines:\n"));
            for l in &boot.tail {
                s.push_str(&format!("  | {l}\n"));
            }
        }
    }
    // The runs alone: each boot's span, or its whole time when the guest reported none.
    let runs_secs: f64 = boots.iter().map(|b| b.span.unwrap_or(b.elapsed).as_secs_f64()).sum();
    let violations = results.iter().filter(|r| r.failed()).count();
    let skipped = results.iter().filter(|r| r.skipped.is_some()).count();
    s.push_str(&format!(
        "daxvmm test: {} runs in {secs:.1} s with the boot{}, {runs_secs:.1} s of runs ({:.0} runs/minute), {violations} with violations, {skipped} skipped; guest boots: {}\n",
        results.len(),
        if several { "s" } else { "" },
        results.len() as f64 * 60.0 / runs_secs.max(0.001),
        boots.len()
    ));
    s
}

/// Every boot's results, in boot order.
pub(super) fn merged(boots: &[BootResult]) -> Vec<RunResult> {
    boots.iter().flat_map(|b| b.results.iter().cloned()).collect()
}

/// The "results:" line: the reports and every boot's console file in `out`.
pub(super) fn results_line(out: &Path, boots: &[BootResult]) -> String {
    let consoles: Vec<String> = boots.iter().map(|b| console_file(b.transport, boots.len())).collect();
    format!("results: {}/results.tap, results.xml, {}\n", out.display(), consoles.join(", "))
}
