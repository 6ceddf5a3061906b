//! A hostile guest cannot keep daxvmm from ending a run on time: guests that write to a port in a tight
//! loop (the boot-marker debug port, each write an event for daxvmm's main loop; the serial port, each
//! byte one for daxvmm's stdout; the ACPI power block's sleep control, each write an exit daxvmm's power
//! device handles; the fault-injection device, through the guest driver, with events for its log and
//! sync reads) are stopped at `--timeout` and on SIGTERM within a second, and daxvmm's peak RSS does not
//! grow while the flood goes on. One batch (one test host VM boot when
//! nested).

use std::time::Duration;

use daxvmm_tests::{Case, Outcome, SharedBatch};

const INIT_REACHED: &str = "daxvmm-guest: init reached";
/// How late daxvmm may end a run after its deadline or a signal.
const SLACK: Duration = Duration::from_secs(1);
/// The `--timeout` of the flood runs: long enough for a nested boot to reach the flood.
const TIMEOUT_S: u64 = 25;
/// When the signal flood run gets SIGTERM, and its first and second peak-RSS samples before that.
const TERM_AT_S: u64 = 20;
const RSS_FIRST_S: u64 = 12;

fn flood(name: &str, port: &str, byte: &str, timeout: &str) -> Case {
    let cmdline = format!("quiet -- daxvmm-guest flood {port} {byte}");
    guest(name, &cmdline, timeout)
}

/// A guest case with one vCPU.
fn guest(name: &str, cmdline: &str, timeout: &str) -> Case {
    Case::guest(name, &["--cpus", "1"], cmdline, timeout)
}

fn cases() -> Vec<Case> {
    // The daxvmm running is this case's (cases run one at a time); its peak RSS twice while the guest
    // floods, then SIGTERM. The background job prints into the case's output.
    let later = TERM_AT_S - RSS_FIRST_S;
    // (The test host VM's busybox has no pgrep: the pid comes from /proc.)
    // It prints when, counted from its own start (just after the case's), it sent the signal: finding the
    // pid by reading every /proc/*/comm can take a second in the test host VM.
    let signal = format!(
        "( (s0=$(cut -d' ' -f1 /proc/uptime); sleep {RSS_FIRST_S}; for d in /proc/[0-9]*; do \
         [ \"$(cat $d/comm 2>/dev/null)\" = daxvmm ] && p=${{d#/proc/}}; done; grep VmHWM /proc/$p/status; \
         sleep {later}; grep VmHWM /proc/$p/status; \
         echo hostile-sigterm $p after $(awk -v a=$s0 -v b=$(cut -d' ' -f1 /proc/uptime) 'BEGIN {{ printf \"%.2f\", b - a }}'); \
         kill -TERM $p) & )"
    );
    vec![
        flood("flood_marker", "0x6f0", "0x55", &format!("{TIMEOUT_S}s")),
        flood("flood_serial", "0x3f8", "0x2e", &format!("{TIMEOUT_S}s")),
        // Sleep control without SLP_EN: no power-off, just an exit per write.
        flood("flood_power", "0x600", "0x00", &format!("{TIMEOUT_S}s")),
        guest("flood_fault", "quiet -- daxvmm-fault-flood", &format!("{TIMEOUT_S}s")),
        flood("flood_marker_sigterm", "0x6f0", "0x55", "60s").with_setup(&signal),
    ]
}

static BATCH: SharedBatch = SharedBatch::new(cases);

/// How long the case ran: measured inside the test host VM when nested (its `took` line), else on this
/// host.
fn ran_for(name: &str, out: &Outcome) -> Duration {
    let took = format!("daxvmm-l1: case {name} took ");
    out.console
        .lines()
        .find_map(|l| l.trim().strip_prefix(&took)?.strip_suffix('s')?.parse::<f64>().ok())
        .map_or(out.wall, Duration::from_secs_f64)
}

/// When the signal case's background job sent SIGTERM, counted from its start (its `hostile-sigterm PID
/// after SECONDS` line).
fn signal_sent_at(out: &Outcome) -> Option<Duration> {
    out.console.lines().find_map(|l| {
        let secs = l.trim().strip_prefix("hostile-sigterm ")?.split_once(" after ")?.1;
        secs.trim().parse::<f64>().ok().map(Duration::from_secs_f64)
    })
}

/// The two `VmHWM:` samples (KiB) the signal case's background job printed.
fn peak_rss_samples(out: &Outcome) -> Vec<u64> {
    out.console
        .lines()
        .filter_map(|l| l.trim().strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .collect()
}

fn stopped_at_timeout(name: &str) {
    let Some(out) = BATCH.outcome(name) else { return };
    assert!(out.contains(INIT_REACHED), "{name}: the guest never reached /init: {out}");
    assert!(!out.contains("daxvmm-guest: error"), "{name}: the flood did not run: {out}");
    assert_eq!(out.exit_code, 4, "{name}: an expired --timeout must exit 4: {out}");
    let ran = ran_for(name, out);
    let deadline = Duration::from_secs(TIMEOUT_S);
    assert!(ran >= deadline - SLACK, "{name}: stopped before --timeout {TIMEOUT_S}s ({ran:?}): {out}");
    assert!(ran <= deadline + SLACK, "{name}: --timeout {TIMEOUT_S}s served late, after {ran:?}: {out}");
}

#[test]
fn a_marker_port_flood_does_not_delay_the_timeout() {
    stopped_at_timeout("flood_marker");
}

#[test]
fn a_serial_port_flood_does_not_delay_the_timeout() {
    stopped_at_timeout("flood_serial");
    let Some(out) = BATCH.outcome("flood_serial") else { return };
    // The flood reached daxvmm's stdout.
    assert!(out.contains(&".".repeat(200)), "no serial flood in the output: {out}");
}

#[test]
fn a_power_port_flood_does_not_delay_the_timeout() {
    stopped_at_timeout("flood_power");
}

#[test]
fn a_fault_device_flood_does_not_delay_the_timeout() {
    stopped_at_timeout("flood_fault");
    let Some(out) = BATCH.outcome("flood_fault") else { return };
    assert!(out.contains("daxvmm-fault-flood: flooding"), "the flood never started: {out}");
    assert!(!out.contains("error: daxvmm-fault-flood"), "the driver refused the flood: {out}");
}

#[test]
fn sigterm_ends_a_flooding_guest_at_once_and_rss_stays_flat() {
    let name = "flood_marker_sigterm";
    let Some(out) = BATCH.outcome(name) else { return };
    assert!(out.contains(INIT_REACHED), "the guest never reached /init: {out}");
    let Some(sent) = signal_sent_at(out) else { panic!("the signal was never sent: {out}") };
    assert_eq!(out.exit_code, 128 + libc::SIGTERM, "SIGTERM must end daxvmm with 143: {out}");
    assert!(sent >= Duration::from_secs(TERM_AT_S), "the signal came before the flood ran long: {out}");
    let ran = ran_for(name, out);
    assert!(ran <= sent + SLACK, "SIGTERM sent at {sent:?} served late, after {ran:?}: {out}");
    let rss = peak_rss_samples(out);
    let [first, second] = rss[..] else { panic!("expected two VmHWM samples, got {rss:?}: {out}") };
    assert!(
        second <= first + 8 * 1024,
        "peak RSS grew from {first} to {second} KiB in {}s of flood: {out}",
        TERM_AT_S - RSS_FIRST_S
    );
}
