//! The test host VM: QEMU TCG with `-cpu max` (AMD SVM with nested paging) booting the pinned Debian 6.1
//! kernel (images/test-host.pin) with kvm-amd, in which daxvmm (or QEMU) boots KVM guests on a machine
//! whose own /dev/kvm cannot (kvm-pvm). See docs/test-host-vm.md.
//!
//! [`run`] packs the VM's initramfs from three pieces (a cached base: the test host kernel's KVM modules,
//! busybox and images/test-host-init as /init; an optional cached QEMU with its libraries and firmware;
//! and per run the guest kernel, initramfs, daxvmm, extra binaries and the batch), waits for a slot
//! ([`Slot`]), boots QEMU and reads its console: the batch's cases between the markers of
//! [`crate::markers`]. Its stall watchdog kills a VM whose console has been silent for
//! [`Config::stall`] (no in-VM timeout fires when the test host kernel stops running user space),
//! printing each CPU's registers and local APIC state (QEMU's monitor) and whether QEMU's threads spin or
//! sleep. The test host kernel panics on a soft lockup, a task blocked 120 s or an RCU stall (its command
//! line, [`qemu_args`]), so a wedged kernel ends the VM at once; on a reset, QEMU's CPU state
//! (`-d cpu_reset`) is shown. Every end is one [`End`].
//!
//! A copy of each console is kept in `$DAXVMM_CACHE/test-host/logs/` (the newest 20).
//!
//! The packing is in test_host/pack.rs, the console reader and watchdog in test_host/watch.rs, and why a
//! run could not start is a [`TestHostError`] (test_host/error.rs).

mod error;
mod pack;
mod watch;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::console::{CaseLog, ConsoleParser};
use crate::host;
use error::io_err;
pub use error::TestHostError;
use pack::{base_piece, perf_piece, prune, qemu_piece, run_piece};
pub use pack::{concat_padded, read_pin};
use watch::Watch;
pub use watch::{is_register_line, parse_stat, reset_lines};

/// The repository root (this crate lives in tests/), without `..` in it: the scripts name files
/// relative to the root in their cache keys, so `tests/../scripts/x.sh` would key another kernel.
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `$DAXVMM_CACHE`, else `$XDG_CACHE_HOME/daxvmm`, else `~/.cache/daxvmm` (as scripts/lib.sh).
pub fn cache_dir() -> PathBuf {
    let var = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty()).map(PathBuf::from);
    var("DAXVMM_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("daxvmm")))
        .unwrap_or_else(|| var("HOME").unwrap_or_else(|| "/".into()).join(".cache/daxvmm"))
}

/// Progress lines on stderr.
#[allow(clippy::print_stderr)]
pub fn log(msg: &str) {
    eprintln!("test-host-vm: {msg}");
}

/// Everything one test host VM run needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The batch: one case per line, `NAME<TAB>SHELL COMMAND`; `#` lines and blank lines are skipped.
    /// The commands run one after another with stdin from /dev/null and may use /guest/bzImage,
    /// /guest/initrd.cpio.lz4 and /bin/daxvmm.
    pub batch: String,
    /// The VM's memory, like `4G` or `3072M`.
    pub mem: String,
    /// Its vCPUs; one VM runs at a time per this many host CPUs.
    pub cpus: usize,
    /// Limit on the whole QEMU run.
    pub timeout: Duration,
    /// Limit on each case inside the VM; a case that outlives it is killed (SIGKILL, rc=137).
    pub case_timeout: Duration,
    /// Kill the VM when its console has been silent this long.
    pub stall: Duration,
    /// The static daxvmm, packed as /bin/daxvmm.
    pub daxvmm: Option<PathBuf>,
    /// The guest bzImage, packed as /guest/bzImage.
    pub kernel: PathBuf,
    /// The guest initramfs, packed as /guest/initrd.cpio.lz4.
    pub initrd: PathBuf,
    /// Also pack qemu-system-x86_64 (its libraries and x86 firmware).
    pub with_qemu: bool,
    /// Also pack the host's perf (and its libraries), to profile the test host from a case.
    pub with_perf: bool,
    /// Static binaries copied into /bin.
    pub adds: Vec<PathBuf>,
    /// An experiment, off by default: the static daxvmm-kvm-hold (images/test-host-tools), which /init
    /// then runs to keep one idle KVM VM open, so that no case's VM is the first or the last one.
    pub kvm_hold: Option<PathBuf>,
    /// How the test host kernel's idle CPUs wait: [`L1Idle::Poll`] unless `DAXVMM_L1_IDLE` says otherwise.
    pub idle: L1Idle,
    /// Extra test host kernel arguments (e.g. `nosmt`).
    pub append: String,
}

/// How the test host kernel's idle CPUs wait for work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L1Idle {
    /// `idle=poll`: they spin and never halt. The default: under QEMU TCG a halted CPU is sometimes
    /// never woken (a soft-lockup panic ~300 s in), and with `idle=poll` a full suite run saw one
    /// emulation fault in 87 nested boots against 21 in 146 without it (docs/test-host-vm.md).
    Poll,
    /// The kernel's default: they halt.
    Halt,
    /// A value of `DAXVMM_L1_IDLE` that is neither; [`Config::check`] refuses it.
    Unknown(String),
}

impl L1Idle {
    /// `poll` or `halt` (`None` or empty: the default, poll).
    pub fn parse(given: Option<&str>) -> L1Idle {
        match given.map(str::trim) {
            None | Some("") | Some("poll") => L1Idle::Poll,
            Some("halt") => L1Idle::Halt,
            Some(other) => L1Idle::Unknown(other.to_string()),
        }
    }
}

impl Config {
    /// The defaults: 4G, 2 vCPUs, 900 s in all, 300 s per case, a stall after the case timeout + 60 s;
    /// `DAXVMM_KVM_HOLD`, `DAXVMM_L1_IDLE` and `DAXVMM_L1_APPEND` from the environment.
    pub fn new(batch: String, kernel: PathBuf, initrd: PathBuf) -> Config {
        let env = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
        Config {
            batch,
            mem: "4G".into(),
            cpus: 2,
            timeout: Duration::from_secs(900),
            case_timeout: Duration::from_secs(300),
            stall: Duration::from_secs(360),
            daxvmm: None,
            kernel,
            initrd,
            with_qemu: false,
            with_perf: false,
            adds: Vec::new(),
            kvm_hold: env("DAXVMM_KVM_HOLD").filter(|h| h != "none").map(PathBuf::from),
            idle: L1Idle::parse(env("DAXVMM_L1_IDLE").as_deref()),
            append: env("DAXVMM_L1_APPEND").unwrap_or_default(),
        }
    }

    /// Checks the batch and the files; the number of cases.
    pub fn check(&self) -> Result<usize, TestHostError> {
        let cases = check_batch(&self.batch)?;
        let mem_ok = self.mem.len() > 1
            && self.mem.ends_with(['M', 'G'])
            && self.mem[..self.mem.len() - 1].bytes().all(|b| b.is_ascii_digit());
        if !mem_ok {
            return Err(TestHostError::Mem { mem: self.mem.clone() });
        }
        if self.cpus == 0 {
            return Err(TestHostError::NoCpus);
        }
        if let L1Idle::Unknown(given) = &self.idle {
            return Err(TestHostError::Idle { given: given.clone() });
        }
        let files = [("guest kernel", Some(&self.kernel)), ("guest initramfs", Some(&self.initrd))];
        let more = [("daxvmm binary", self.daxvmm.as_ref()), ("--kvm-hold", self.kvm_hold.as_ref())];
        for (what, f) in files.into_iter().chain(more).chain(self.adds.iter().map(|a| ("--add", Some(a)))) {
            if let Some(f) = f.filter(|f| !f.is_file()) {
                return Err(TestHostError::Missing { what, path: f.clone() });
            }
        }
        if let Some(d) = self.daxvmm.as_ref().filter(|d| host::has_elf_interpreter(d)) {
            return Err(TestHostError::Dynamic { path: d.clone() });
        }
        Ok(cases)
    }
}

/// Checks a batch's lines (`NAME<TAB>COMMAND`, names of letters, digits and `_.:-`); the number of cases.
pub fn check_batch(batch: &str) -> Result<usize, TestHostError> {
    let mut n = 0;
    for line in batch.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let Some((name, _)) = line.split_once('\t') else {
            return Err(TestHostError::NoTab { line: line.to_string() });
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)) {
            return Err(TestHostError::BadName { name: name.to_string() });
        }
        n += 1;
    }
    Ok(n)
}

/// A fault of the test host VM itself (of QEMU TCG's nested SVM, not of the code under test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Its console was silent for [`Config::stall`]: wedged; killed.
    Stall,
    /// It ran into [`Config::timeout`]; killed.
    Timeout,
    /// Its kernel panicked (a soft lockup, a hung task, an RCU stall...): the panic line.
    Panic(String),
    /// It reset itself with no panic message (a triple fault?).
    Reset,
    /// QEMU exited otherwise before the batch was done, with this status.
    Died(Option<i32>),
}

impl Fault {
    /// One word for logs and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Stall => "stall",
            Fault::Timeout => "timeout",
            Fault::Panic(_) => "panic",
            Fault::Reset => "reset",
            Fault::Died(_) => "died",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Stall => f.write_str("its console went silent (wedged); killed"),
            Fault::Timeout => f.write_str("it ran into its time limit; killed"),
            Fault::Panic(p) => write!(f, "its kernel panicked: {p}"),
            Fault::Reset => f.write_str("it reset itself with no panic message (a triple fault?)"),
            Fault::Died(rc) => write!(f, "QEMU {} before the batch was done", exit_status(*rc)),
        }
    }
}

/// How QEMU exited, for messages: `exited with status N`, or `was killed by a signal`.
fn exit_status(rc: Option<i32>) -> String {
    rc.map_or_else(|| "was killed by a signal".into(), |rc| format!("exited with status {rc}"))
}

/// How a test host VM run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every case of the batch ran (whatever they returned).
    Done,
    /// KVM could not be set up in the VM, for this reason.
    NoKvm(String),
    /// The VM failed before the batch was done.
    Fault(Fault),
}

/// A finished test host VM run.
#[derive(Debug)]
pub struct Run {
    /// How it ended.
    pub end: End,
    /// The console, parsed.
    pub console: ConsoleParser,
    /// The copy of the console.
    pub console_log: PathBuf,
    /// Start to exit.
    pub elapsed: Duration,
}

/// What [`run`] hands each console line to: the line, and the case it finished, if any.
pub type OnLine<'a> = &'a mut dyn FnMut(&str, Option<(&str, &CaseLog)>);

/// Packs, boots and reads one test host VM. `Err` when it could not start (bad input, packing failed,
/// QEMU missing); every run that booted is `Ok`, however it ended.
pub fn run(cfg: &Config, on_line: OnLine<'_>) -> Result<Run, TestHostError> {
    let cases = cfg.check()?;
    let qemu = find_qemu()?;
    let cache = cache_dir().join("test-host");
    fs::create_dir_all(&cache).map_err(io_err("create", &cache))?;
    let base = base_piece(&cache)?;
    let mut pieces = vec![base.join("l1-base.cpio.gz")];
    if cfg.with_qemu {
        pieces.push(qemu_piece(&cache, &qemu)?);
    }
    if cfg.with_perf {
        pieces.push(perf_piece(&cache, &find_perf(std::env::var_os("PATH"))?)?);
    }
    // Pieces of older inputs go after a day unused (each QEMU piece is ~50 MB).
    let _ = Command::new("touch").args(&pieces).arg(&base).status();
    prune(&cache, Duration::from_secs(86400));
    let dir = TempDir::new("daxvmm-l1run")?;
    pieces.push(run_piece(cfg, dir.path())?);
    let initramfs = dir.path().join("l1.cpio");
    concat_padded(&pieces, &initramfs).map_err(io_err("write", &initramfs))?;

    let _slot = Slot::acquire(&cache, slot_count(host_cpus(), cfg.cpus))?;
    log(&format!(
        "booting the test host VM ({} vCPUs, {}, timeout {}s, {cases} cases; kernel arguments added: {})",
        cfg.cpus,
        cfg.mem,
        cfg.timeout.as_secs(),
        added_args(cfg).unwrap_or_else(|| "none".into())
    ));
    let console_log = new_console_log(&cache.join("logs"))?;
    let args = qemu_args(cfg, &base.join("vmlinuz"), &initramfs, dir.path());
    let mut cmd = Command::new(&qemu);
    cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent; it makes
    // QEMU die with this process instead of running on without its slot.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    let start = Instant::now();
    let child =
        cmd.spawn().map_err(|source| TestHostError::Spawn { program: qemu.display().to_string(), source })?;
    let mut watch = Watch::new(cfg, child, &console_log, dir.path())?;
    let rc = watch.read(on_line);
    let elapsed = start.elapsed();
    let end = watch.end(rc);
    match &end {
        End::Done => {
            let ran = watch.parser.finished.len();
            let bad = watch.parser.finished.values().filter(|c| c.exit_code != 0).count();
            log(&format!(
                "batch done in {:.1}s: {ran} cases ran, {bad} returned non-zero (console: {})",
                elapsed.as_secs_f64(),
                console_log.display()
            ));
        }
        End::NoKvm(why) => log(&format!(
            "KVM could not be set up in the test host VM: {why} (console: {})",
            console_log.display()
        )),
        End::Fault(f) => log(&format!(
            "the test host VM did not finish the batch: {f} (QEMU {} after {:.1}s; console: {})",
            exit_status(rc),
            elapsed.as_secs_f64(),
            console_log.display()
        )),
    }
    Ok(Run { end, console: std::mem::take(&mut watch.parser), console_log, elapsed })
}

/// The test host kernel arguments that [`Config::idle`] and [`Config::append`] add, if any.
fn added_args(cfg: &Config) -> Option<String> {
    let idle = (cfg.idle == L1Idle::Poll).then_some("idle=poll");
    let words: Vec<&str> = idle.into_iter().chain(cfg.append.split_whitespace()).collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// The QEMU command line (without the program).
pub fn qemu_args(cfg: &Config, l1_kernel: &Path, initramfs: &Path, run_dir: &Path) -> Vec<String> {
    // panic=-1 with -no-reboot: a test host kernel panic ends QEMU. loglevel=5 keeps chatter off the
    // console but puts a soft lockup's backtrace on it before softlockup_panic ends the VM.
    let mut append = "console=ttyS0 panic=-1 quiet loglevel=5 softlockup_panic=1 hung_task_panic=1 \
                      sysctl.kernel.panic_on_rcu_stall=1 nokaslr"
        .to_string();
    if let Some(more) = added_args(cfg) {
        append = format!("{append} {more}");
    }
    let p = |p: &Path| p.display().to_string();
    let mut v: Vec<String> = ["-accel", "tcg,thread=multi", "-cpu", "max", "-smp"].map(String::from).into();
    v.extend([cfg.cpus.to_string(), "-m".into(), cfg.mem.clone(), "-kernel".into(), p(l1_kernel)]);
    v.extend(["-initrd".into(), p(initramfs), "-append".into(), append]);
    v.extend(["-d".into(), "cpu_reset".into(), "-D".into(), p(&run_dir.join("qemu-debug.log"))]);
    v.extend(
        ["-name", "daxvmm-l1,debug-threads=on", "-nographic", "-serial", "stdio", "-monitor"]
            .map(String::from),
    );
    v.push(format!("unix:{},server=on,wait=off", run_dir.join("monitor.sock").display()));
    v.extend(["-parallel", "none", "-no-reboot"].map(String::from));
    v
}

fn find_qemu() -> Result<PathBuf, TestHostError> {
    on_path("qemu-system-x86_64", std::env::var_os("PATH")).ok_or(TestHostError::NoQemu)
}

/// The first file called `program` in the directories of `path` (as $PATH).
fn on_path(program: &str, path: Option<std::ffi::OsString>) -> Option<PathBuf> {
    std::env::split_paths(&path.unwrap_or_default()).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The host's `perf`, for `--with-perf`.
fn find_perf(path: Option<std::ffi::OsString>) -> Result<PathBuf, TestHostError> {
    on_path("perf", path).ok_or(TestHostError::NoPerf)
}

/// The host's CPUs this process may use (as `nproc`).
pub fn host_cpus() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Test host VMs take turns: each of their vCPUs is a busy host thread, and with more vCPUs than host
/// CPUs QEMU TCG's nested SVM misbehaves. One slot per `vm_cpus` host CPUs, at least one.
pub fn slot_count(host_cpus: usize, vm_cpus: usize) -> usize {
    (host_cpus / vm_cpus.max(1)).max(1)
}

/// A test host VM slot: an exclusive flock on `vm-slot.N.lock`, held until dropped.
#[derive(Debug)]
pub struct Slot {
    _file: File,
    /// Which slot.
    pub index: usize,
}

impl Slot {
    /// A free slot of `slots` in `dir`, or `None` when all are taken.
    pub fn try_acquire(dir: &Path, slots: usize) -> Result<Option<Slot>, TestHostError> {
        for index in 0..slots {
            let path = dir.join(format!("vm-slot.{index}.lock"));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?;
            // SAFETY: flock on a file descriptor this function owns; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Some(Slot { _file: file, index }));
            }
        }
        Ok(None)
    }

    /// Waits for a free slot, saying so once.
    pub fn acquire(dir: &Path, slots: usize) -> Result<Slot, TestHostError> {
        let mut said = false;
        loop {
            if let Some(s) = Slot::try_acquire(dir, slots)? {
                return Ok(s);
            }
            if !said {
                log(&format!("waiting for a test host VM slot ({slots} on this host: one per VM's vCPUs)"));
                said = true;
            }
            thread::sleep(Duration::from_secs(1));
        }
    }
}

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary directory.
    pub fn new(prefix: &str) -> Result<TempDir, TestHostError> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
        fs::create_dir(&p).map_err(io_err("create", &p))?;
        Ok(TempDir(p))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A new console log in `logs`, keeping the newest 20.
fn new_console_log(logs: &Path) -> Result<PathBuf, TestHostError> {
    fs::create_dir_all(logs).map_err(io_err("create", logs))?;
    let mut old: Vec<(SystemTime, PathBuf)> = fs::read_dir(logs)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("console-"))
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    old.sort();
    old.reverse();
    for (_, p) in old.iter().skip(19) {
        let _ = fs::remove_file(p);
    }
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(logs.join(format!("console-{secs}-{}.log", std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markers;

    #[test]
    fn the_root_has_no_dot_dot_and_holds_the_scripts() {
        let r = root();
        assert!(r.components().all(|c| c != std::path::Component::ParentDir), "{}", r.display());
        assert!(r.join("scripts/build-guest-kernel.sh").is_file(), "{}", r.display());
    }

    #[test]
    fn perf_is_found_on_the_path_or_the_error_names_the_package() {
        let (empty, with) =
            (TempDir::new("daxvmm-perf-none").expect("tmp"), TempDir::new("daxvmm-perf").expect("tmp"));
        let perf = with.path().join("perf");
        fs::write(&perf, "#!/bin/sh\n").expect("write");
        let path = |dirs: &[&Path]| std::env::join_paths(dirs).ok();
        let missing = find_perf(path(&[empty.path()])).expect_err("no perf there");
        assert!(missing.to_string().contains("apt-get install linux-perf"), "{missing}");
        assert_eq!(find_perf(path(&[empty.path(), with.path()])).expect("found"), perf);
    }

    fn config() -> Config {
        let mut c = Config::new("a\ttrue\n".into(), "/k/bzImage".into(), "/i/initrd".into());
        c.append = String::new();
        c.idle = L1Idle::Poll;
        c
    }

    #[test]
    fn the_qemu_command_line_has_the_panic_settings_and_the_monitor() {
        let mut c = config();
        c.cpus = 3;
        c.mem = "3072M".into();
        c.append = " nosmt  mitigations=off ".into();
        let args = qemu_args(&c, Path::new("/b/vmlinuz"), Path::new("/r/l1.cpio"), Path::new("/r"));
        let after = |flag: &str| args[args.iter().position(|a| a == flag).expect(flag) + 1].as_str();
        assert_eq!(after("-accel"), "tcg,thread=multi");
        assert_eq!(after("-cpu"), "max");
        assert_eq!((after("-smp"), after("-m")), ("3", "3072M"));
        assert_eq!((after("-kernel"), after("-initrd")), ("/b/vmlinuz", "/r/l1.cpio"));
        assert_eq!(
            after("-append"),
            "console=ttyS0 panic=-1 quiet loglevel=5 softlockup_panic=1 hung_task_panic=1 \
             sysctl.kernel.panic_on_rcu_stall=1 nokaslr idle=poll nosmt mitigations=off"
        );
        assert_eq!((after("-d"), after("-D")), ("cpu_reset", "/r/qemu-debug.log"));
        assert_eq!(after("-monitor"), "unix:/r/monitor.sock,server=on,wait=off");
        assert_eq!(after("-serial"), "stdio");
        assert!(args.iter().any(|a| a == "-no-reboot"));
        c.append = String::new();
        let args = qemu_args(&c, Path::new("/b/vmlinuz"), Path::new("/r/l1.cpio"), Path::new("/r"));
        assert!(args.iter().any(|a| a.ends_with("panic_on_rcu_stall=1 nokaslr idle=poll")));
        c.idle = L1Idle::Halt;
        let args = qemu_args(&c, Path::new("/b/vmlinuz"), Path::new("/r/l1.cpio"), Path::new("/r"));
        assert!(args.iter().any(|a| a.ends_with("panic_on_rcu_stall=1 nokaslr")));
        assert!(!args.iter().any(|a| a.contains("idle=")));
    }

    #[test]
    fn the_idle_setting_defaults_to_poll_and_refuses_unknown_values() {
        assert_eq!(L1Idle::parse(None), L1Idle::Poll);
        assert_eq!(L1Idle::parse(Some(" poll ")), L1Idle::Poll);
        assert_eq!(L1Idle::parse(Some("halt")), L1Idle::Halt);
        let mut c = config();
        c.idle = L1Idle::parse(Some("hlt"));
        let err = c.check().expect_err("unknown idle");
        assert_eq!(err.to_string(), "DAXVMM_L1_IDLE wants poll or halt, got 'hlt'");
    }

    #[test]
    fn batches_and_sizes_are_checked() {
        assert_eq!(check_batch("# c\n\na\ttrue\nb.1:x-y_z\techo\n").expect("valid"), 2);
        let err = check_batch("a true\n").expect_err("no tab");
        assert!(matches!(&err, TestHostError::NoTab { line } if line == "a true"), "{err}");
        assert!(err.to_string().contains("TAB"), "{err}");
        let err = check_batch("a b\ttrue\n").expect_err("space");
        assert!(matches!(&err, TestHostError::BadName { name } if name == "a b"), "{err}");
        assert!(err.to_string().contains("letters"), "{err}");
        let mut c = config();
        c.mem = "4T".into();
        let err = c.check().expect_err("mem");
        assert!(matches!(&err, TestHostError::Mem { mem } if mem == "4T"), "{err}");
        assert_eq!(err.to_string(), "--mem wants a size like 4G or 3072M, got '4T'");
        c.mem = "4G".into();
        let err = c.check().expect_err("kernel");
        assert!(matches!(&err, TestHostError::Missing { what: "guest kernel", .. }), "{err}");
        assert!(err.to_string().starts_with("guest kernel /k/bzImage does not exist; "), "{err}");
    }

    #[test]
    fn slots_are_one_per_vm_cpus_and_exclusive() {
        assert_eq!(slot_count(2, 2), 1);
        assert_eq!(slot_count(1, 2), 1);
        assert_eq!(slot_count(8, 2), 4);
        assert_eq!(slot_count(8, 3), 2);
        let dir = TempDir::new("daxvmm-slot-test").expect("tmp");
        let a = Slot::try_acquire(dir.path(), 2).expect("io").expect("slot 0 free");
        let b = Slot::try_acquire(dir.path(), 2).expect("io").expect("slot 1 free");
        assert_eq!((a.index, b.index), (0, 1));
        assert!(Slot::try_acquire(dir.path(), 2).expect("io").is_none(), "both taken");
        drop(a);
        assert_eq!(Slot::try_acquire(dir.path(), 2).expect("io").map(|s| s.index), Some(0));
    }

    #[test]
    fn pieces_are_padded_to_512_bytes() {
        let dir = TempDir::new("daxvmm-pad-test").expect("tmp");
        let (a, b, out) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("out"));
        fs::write(&a, [1u8; 700]).expect("write");
        fs::write(&b, [2u8; 512]).expect("write");
        concat_padded(&[a, b], &out).expect("concat");
        let bytes = fs::read(&out).expect("read");
        assert_eq!(bytes.len(), 1024 + 512);
        assert!(bytes[700..1024].iter().all(|&x| x == 0) && bytes[1024] == 2);
    }

    #[test]
    fn pins_stalls_and_resets_are_read() {
        let pin = read_pin("# c\nSUITE=bookworm\nMODULES=a.ko b.ko\n");
        assert_eq!(pin["SUITE"], "bookworm");
        assert_eq!(pin["MODULES"], "a.ko b.ko");
        let stat = "42 (CPU 0/TCG) R 1 2 3 4 5 6 7 8 9 10 100 23 0 0";
        assert_eq!(parse_stat(stat), Some(("R".into(), 123)));
        assert!(is_register_line("RAX=0 RIP=ffffffff81000000 RFL=00000246"));
        assert!(is_register_line("LVTT\t 0x000400ec active-hi edge"));
        assert!(!is_register_line("(qemu) cpu 1"));
        let debug = "CPU Reset (CPU 0)\nEAX=0\nEIP=0000fff0\nCR0=60000010\nEFER=0\nTriple fault\n\
                     CPU Reset (CPU 0)\nRIP=ffffffff81234567\nCR0=80050033\nEFER=d01\n";
        let lines = reset_lines(debug, 1);
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], "daxvmm-l1-host: Triple fault");
        assert_eq!(lines[4], "daxvmm-l1-host: EFER=d01");
    }

    /// Runs the watchdog on a shell script standing in for QEMU: its end and the lines seen.
    fn watch_fake(cfg: &Config, script: &str) -> (End, Vec<String>, ConsoleParser) {
        let dir = TempDir::new("daxvmm-watch-test").expect("tmp");
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let mut watch = Watch::new(cfg, child, &dir.path().join("console.log"), dir.path()).expect("watch");
        let mut seen = Vec::new();
        let rc = watch.read(&mut |l: &str, _| seen.push(l.to_string()));
        let end = watch.end(rc);
        let logged = fs::read_to_string(dir.path().join("console.log")).expect("console log");
        assert!(seen.iter().all(|l| logged.contains(l.as_str())), "every line is in the console log");
        (end, seen, std::mem::take(&mut watch.parser))
    }

    #[test]
    fn a_silent_console_is_a_stall() {
        let mut c = config();
        c.stall = Duration::from_millis(1200);
        let t = Instant::now();
        let (end, seen, parser) =
            watch_fake(&c, "echo booting; echo '@@DAXVMM-CASE-BEGIN a@@'; exec sleep 60");
        assert_eq!(end, End::Fault(Fault::Stall));
        assert!(t.elapsed() < Duration::from_secs(30), "killed at the stall, not at the sleep's end");
        assert!(seen.iter().any(|l| l == markers::L1_STALL), "{seen:?}");
        assert!(parser.stalled);
        assert_eq!(parser.unfinished.map(|u| u.0).as_deref(), Some("a"));
    }

    #[test]
    fn a_chatty_console_is_no_stall_but_runs_into_the_timeout() {
        let mut c = config();
        c.stall = Duration::from_millis(1500);
        c.timeout = Duration::from_secs(3);
        let (end, ..) = watch_fake(&c, "while :; do echo tick; sleep 0.3; done");
        assert_eq!(end, End::Fault(Fault::Timeout));
    }

    #[test]
    fn how_a_vm_ended_is_read_from_its_console_and_status() {
        let c = config();
        let done = "echo '@@DAXVMM-CASE-BEGIN a@@'; printf 'x\\n@@DAXVMM-CASE-END a rc=3@@\\n'; \
                    echo '@@DAXVMM-BATCH-DONE@@'; echo 'reboot: Power down'";
        let (end, _, parser) = watch_fake(&c, done);
        assert_eq!(end, End::Done);
        assert_eq!(parser.finished["a"].exit_code, 3);
        let (end, ..) = watch_fake(&c, "echo '@@DAXVMM-NO-KVM no svm flag@@'; echo 'reboot: Power down'");
        assert_eq!(end, End::NoKvm("no svm flag".into()));
        let panic = "echo '@@DAXVMM-CASE-BEGIN a@@'; echo '[ 9.1] Kernel panic - not syncing: softlockup: hung tasks'";
        let (end, ..) = watch_fake(&c, panic);
        assert_eq!(
            end,
            End::Fault(Fault::Panic("Kernel panic - not syncing: softlockup: hung tasks".into()))
        );
        // A guest's panic is followed by daxvmm's own lines: not the test host's.
        let guest = "echo '@@DAXVMM-CASE-BEGIN a@@'; echo 'Kernel panic - not syncing: x'; echo 'daxvmm: guest panicked'";
        assert_eq!(watch_fake(&c, guest).0, End::Fault(Fault::Reset));
        assert_eq!(
            watch_fake(&c, "echo '@@DAXVMM-CASE-BEGIN a@@'; exit 1").0,
            End::Fault(Fault::Died(Some(1)))
        );
    }
}
