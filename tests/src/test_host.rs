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

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::case::{NESTED_INITRD, NESTED_KERNEL};
use crate::console::{CaseLog, ConsoleParser};
use crate::host;
use crate::markers::{self, L1_HOST_LOG};

/// The repository root (this crate lives in tests/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
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
    /// Static binaries copied into /bin.
    pub adds: Vec<PathBuf>,
    /// An experiment, off by default: the static daxvmm-kvm-hold (images/test-host-tools), which /init
    /// then runs to keep one idle KVM VM open, so that no case's VM is the first or the last one.
    pub kvm_hold: Option<PathBuf>,
    /// Extra test host kernel arguments (e.g. `idle=poll`).
    pub append: String,
}

impl Config {
    /// The defaults: 4G, 2 vCPUs, 900 s in all, 300 s per case, a stall after the case timeout + 60 s;
    /// `DAXVMM_KVM_HOLD` and `DAXVMM_L1_APPEND` from the environment.
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
            adds: Vec::new(),
            kvm_hold: env("DAXVMM_KVM_HOLD").filter(|h| h != "none").map(PathBuf::from),
            append: env("DAXVMM_L1_APPEND").unwrap_or_default(),
        }
    }

    /// Checks the batch and the files; the number of cases.
    pub fn check(&self) -> Result<usize, String> {
        let cases = check_batch(&self.batch)?;
        let mem_ok = self.mem.len() > 1
            && self.mem.ends_with(['M', 'G'])
            && self.mem[..self.mem.len() - 1].bytes().all(|b| b.is_ascii_digit());
        if !mem_ok {
            return Err(format!("--mem wants a size like 4G or 3072M, got '{}'", self.mem));
        }
        if self.cpus == 0 {
            return Err("--cpus wants a positive number".into());
        }
        let files = [("guest kernel", Some(&self.kernel)), ("guest initramfs", Some(&self.initrd))];
        let more = [("daxvmm binary", self.daxvmm.as_ref()), ("--kvm-hold", self.kvm_hold.as_ref())];
        for (what, f) in files.into_iter().chain(more).chain(self.adds.iter().map(|a| ("--add", Some(a)))) {
            if let Some(f) = f.filter(|f| !f.is_file()) {
                return Err(format!("{what} {} does not exist", f.display()));
            }
        }
        if let Some(d) = self.daxvmm.as_ref().filter(|d| host::has_elf_interpreter(d)) {
            return Err(format!(
                "{} is dynamically linked; the test host VM needs a static build (--target x86_64-unknown-linux-musl)",
                d.display()
            ));
        }
        Ok(cases)
    }
}

/// Checks a batch's lines (`NAME<TAB>COMMAND`, names of letters, digits and `_.:-`); the number of cases.
pub fn check_batch(batch: &str) -> Result<usize, String> {
    let mut n = 0;
    for line in batch.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let Some((name, _)) = line.split_once('\t') else {
            return Err(format!("batch line without a TAB between NAME and COMMAND: {line}"));
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)) {
            return Err(format!("case name '{name}' may only use letters, digits and _.:-"));
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
            Fault::Died(rc) => write!(f, "QEMU exited with status {rc:?} before the batch was done"),
        }
    }
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
pub fn run(cfg: &Config, on_line: OnLine<'_>) -> Result<Run, String> {
    let cases = cfg.check()?;
    let qemu = find_qemu()?;
    let cache = cache_dir().join("test-host");
    fs::create_dir_all(&cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let base = base_piece(&cache)?;
    let mut pieces = vec![base.join("l1-base.cpio.gz")];
    if cfg.with_qemu {
        pieces.push(qemu_piece(&cache, &qemu)?);
    }
    // Pieces of older inputs go after a day unused (each QEMU piece is ~50 MB).
    let _ = Command::new("touch").args(&pieces).arg(&base).status();
    prune(&cache, Duration::from_secs(86400));
    let dir = TempDir::new("daxvmm-l1run")?;
    pieces.push(run_piece(cfg, dir.path())?);
    let initramfs = dir.path().join("l1.cpio");
    concat_padded(&pieces, &initramfs).map_err(|e| format!("cannot write {}: {e}", initramfs.display()))?;

    let _slot = Slot::acquire(&cache, slot_count(host_cpus(), cfg.cpus))?;
    log(&format!(
        "booting the test host VM ({} vCPUs, {}, timeout {}s, {cases} cases)",
        cfg.cpus,
        cfg.mem,
        cfg.timeout.as_secs()
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
    let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
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
            "the test host VM did not finish the batch: {f} (QEMU exit status {rc:?} after {:.1}s; console: {})",
            elapsed.as_secs_f64(),
            console_log.display()
        )),
    }
    Ok(Run { end, console: std::mem::take(&mut watch.parser), console_log, elapsed })
}

/// The QEMU command line (without the program).
pub fn qemu_args(cfg: &Config, l1_kernel: &Path, initramfs: &Path, run_dir: &Path) -> Vec<String> {
    // panic=-1 with -no-reboot: a test host kernel panic ends QEMU. loglevel=5 keeps chatter off the
    // console but puts a soft lockup's backtrace on it before softlockup_panic ends the VM.
    let mut append = "console=ttyS0 panic=-1 quiet loglevel=5 softlockup_panic=1 hung_task_panic=1 \
                      sysctl.kernel.panic_on_rcu_stall=1 nokaslr"
        .to_string();
    if !cfg.append.trim().is_empty() {
        append = format!("{append} {}", cfg.append.trim());
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

fn find_qemu() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .ok_or_else(|| "qemu-system-x86_64 not found; run scripts/setup-host.sh".into())
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
    pub fn try_acquire(dir: &Path, slots: usize) -> Result<Option<Slot>, String> {
        for index in 0..slots {
            let path = dir.join(format!("vm-slot.{index}.lock"));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            // SAFETY: flock on a file descriptor this function owns; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Some(Slot { _file: file, index }));
            }
        }
        Ok(None)
    }

    /// Waits for a free slot, saying so once.
    pub fn acquire(dir: &Path, slots: usize) -> Result<Slot, String> {
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
    pub fn new(prefix: &str) -> Result<TempDir, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
        fs::create_dir(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
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

/// Runs a snippet of bash with scripts/lib.sh and images/pack.sh sourced (apt downloads and the
/// initramfs packing helpers), the words `args` as `$1...`; its stdout, trimmed.
fn pack_sh(snippet: &str, args: &[&Path]) -> Result<String, String> {
    let r = root();
    let script = format!(
        "source {}/scripts/lib.sh && source {}/images/pack.sh && {snippet}",
        r.display(),
        r.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    if !out.status.success() {
        return Err(format!("`{snippet}` failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run_tool(cmd: &mut Command) -> Result<(), String> {
    let st = cmd.status().map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    st.success().then_some(()).ok_or_else(|| format!("{cmd:?} failed ({st})"))
}

/// A short content key of files (names and contents) and extra words.
fn content_key(files: &[PathBuf], words: &[&str]) -> Result<String, String> {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    for w in words {
        h.write(w.as_bytes());
    }
    for f in files {
        h.write(f.to_string_lossy().as_bytes());
        h.write(&fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?);
    }
    Ok(format!("{:016x}", h.finish()))
}

/// `KEY=VALUE` lines of a pin file.
pub fn read_pin(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Bumped when the base piece's layout changes without any of its input files changing.
const BASE_LAYOUT: &str = "base-layout-2";

/// Piece 1, cached: the test host kernel, its KVM modules, busybox and /init.
fn base_piece(cache: &Path) -> Result<PathBuf, String> {
    let r = root();
    let pin_path = r.join("images/test-host.pin");
    let pin_text =
        fs::read_to_string(&pin_path).map_err(|e| format!("cannot read {}: {e}", pin_path.display()))?;
    let pin = read_pin(&pin_text);
    let get = |k: &str| pin.get(k).cloned().ok_or_else(|| format!("no {k}= in {}", pin_path.display()));
    let busybox = PathBuf::from(pack_sh("busybox_static", &[])?);
    let init = r.join("images/test-host-init");
    let key =
        content_key(&[pin_path.clone(), init.clone(), r.join("images/pack.sh"), busybox], &[BASE_LAYOUT])?;
    let base = cache.join(format!("base-{key}"));
    if base.join("l1-base.cpio.gz").is_file() && base.join("vmlinuz").is_file() {
        return Ok(base);
    }
    let (suite, pkg, version, sha) = (get("SUITE")?, get("PKG")?, get("PKG_VERSION")?, get("PKG_SHA256")?);
    let release = get("KERNEL_RELEASE")?;
    let deb =
        pack_sh("apt_download \"$@\"", &[suite.as_ref(), pkg.as_ref(), version.as_ref(), sha.as_ref()])?;
    log(&format!("packing the test host VM's base image ({key})"));
    let work = TempDir::new("daxvmm-l1")?;
    let (unpacked, stage) = (work.path().join("deb"), work.path().join("root"));
    run_tool(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    pack_sh("stage_busybox \"$1\"", &[&stage])?;
    install(&init, &stage.join("init"))?;
    let modules = stage.join("modules");
    fs::create_dir_all(&modules).map_err(|e| e.to_string())?;
    let mut order = String::new();
    for m in get("MODULES")?.split_whitespace() {
        let src = unpacked.join("lib/modules").join(&release).join(m);
        let name = Path::new(m).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // Newer Debian kernels compress modules; busybox insmod takes them uncompressed.
        let with = |ext: &str| PathBuf::from(format!("{}{ext}", src.display()));
        let bytes = if src.is_file() {
            fs::read(&src).map_err(|e| e.to_string())?
        } else if let Some((tool, file)) =
            [("xz", with(".xz")), ("zstd", with(".zst")), ("gzip", with(".gz"))]
                .into_iter()
                .find(|(_, f)| f.is_file())
        {
            let out =
                Command::new(tool).arg("-dc").arg(&file).output().map_err(|e| format!("{tool}: {e}"))?;
            if !out.status.success() {
                return Err(format!("{tool} -dc {} failed", file.display()));
            }
            out.stdout
        } else {
            return Err(format!(
                "module {m} is not in {pkg} (looked for .ko, .ko.xz, .ko.zst, .ko.gz); fix MODULES in {}",
                pin_path.display()
            ));
        };
        fs::write(modules.join(&name), bytes).map_err(|e| e.to_string())?;
        order.push_str(&name);
        order.push('\n');
    }
    fs::write(modules.join("order"), order).map_err(|e| e.to_string())?;
    let tmp = cache.join(format!("base-{key}.tmp.{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let vmlinuz = unpacked.join(format!("boot/vmlinuz-{release}"));
    fs::copy(&vmlinuz, tmp.join("vmlinuz")).map_err(|e| {
        format!("no {} in the package ({e}); fix KERNEL_RELEASE in {}", vmlinuz.display(), pin_path.display())
    })?;
    pack_sh("pack_cpio \"$1\" \"$2\" gzip", &[&stage, &tmp.join("l1-base.cpio.gz")])?;
    // Another run may have packed the same piece meanwhile; then keep theirs.
    if fs::rename(&tmp, &base).is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    Ok(base)
}

/// QEMU's x86 firmware that the test host VM's QEMU may load.
fn qemu_firmware() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        ["kvmvapic", "linuxboot", "linuxboot_dma", "multiboot", "multiboot_dma", "pvh", "sgabios"]
            .iter()
            .map(|n| PathBuf::from(format!("/usr/share/qemu/{n}.bin")))
            .collect();
    if let Ok(rd) = fs::read_dir("/usr/share/seabios") {
        let mut s: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        s.sort();
        v.extend(s);
    }
    v.push("/usr/lib/ipxe/qemu/efi-e1000.rom".into());
    v.into_iter().filter(|p| p.exists()).collect()
}

/// Piece 2, cached, optional: QEMU with its libraries and the x86 firmware it loads.
fn qemu_piece(cache: &Path, qemu: &Path) -> Result<PathBuf, String> {
    let real = fs::canonicalize(qemu).map_err(|e| format!("{}: {e}", qemu.display()))?;
    let firmware = qemu_firmware();
    let libs: Vec<PathBuf> = pack_sh("shared_libs \"$1\"", &[&real])?.lines().map(PathBuf::from).collect();
    let mut inputs = vec![real.clone(), root().join("images/pack.sh")];
    inputs.extend(libs);
    inputs.extend(firmware.iter().filter_map(|f| fs::canonicalize(f).ok()));
    let piece = cache.join(format!("qemu-{}.cpio", content_key(&inputs, &[])?));
    if piece.is_file() {
        return Ok(piece);
    }
    log(&format!("packing QEMU for the test host VM ({})", piece.display()));
    let work = TempDir::new("daxvmm-l1q")?;
    pack_sh("stage_dynamic \"$1\" \"$2\"", &[work.path(), &real])?;
    let usr_bin = work.path().join("usr/bin");
    if real != Path::new("/usr/bin/qemu-system-x86_64") {
        fs::create_dir_all(&usr_bin).map_err(|e| e.to_string())?;
        let _ = std::os::unix::fs::symlink(&real, usr_bin.join("qemu-system-x86_64"));
    }
    for f in &firmware {
        let dest = work.path().join(f.strip_prefix("/").unwrap_or(f));
        if let Some(d) = dest.parent() {
            fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        fs::copy(f, &dest).map_err(|e| format!("cannot copy {}: {e}", f.display()))?;
    }
    // Uncompressed: gunzip of 50 MB under TCG costs more than copying it.
    pack_sh("pack_cpio \"$1\" \"$2\" none", &[work.path(), &piece])?;
    Ok(piece)
}

/// Removes cached pieces (`base-*`, `qemu-*.cpio`) unused for `age`.
fn prune(cache: &Path, age: Duration) {
    let Ok(rd) = fs::read_dir(cache) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let piece = name.starts_with("base-") || (name.starts_with("qemu-") && name.ends_with(".cpio"));
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a > age);
        if piece && old {
            let p = e.path();
            let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        }
    }
}

fn install(src: &Path, dest: &Path) -> Result<(), String> {
    if let Some(d) = dest.parent() {
        fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    fs::copy(src, dest).map_err(|e| format!("cannot copy {} to {}: {e}", src.display(), dest.display()))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}

/// Piece 3, per run, uncompressed: daxvmm, the guest kernel and initramfs, extra binaries, the batch.
fn run_piece(cfg: &Config, dir: &Path) -> Result<PathBuf, String> {
    let stage = dir.join("root");
    let at = |p: &str| stage.join(p.trim_start_matches('/'));
    install(&cfg.kernel, &at(NESTED_KERNEL))?;
    install(&cfg.initrd, &at(NESTED_INITRD))?;
    if let Some(d) = &cfg.daxvmm {
        install(d, &at("/bin/daxvmm"))?;
    }
    for a in &cfg.adds {
        let name = a.file_name().ok_or_else(|| format!("--add {}: not a file name", a.display()))?;
        install(a, &stage.join("bin").join(name))?;
    }
    if let Some(h) = &cfg.kvm_hold {
        install(h, &at("/bin/daxvmm-kvm-hold"))?;
    }
    fs::write(at("/batch"), &cfg.batch).map_err(|e| e.to_string())?;
    fs::write(at("/case-timeout"), format!("{}\n", cfg.case_timeout.as_secs())).map_err(|e| e.to_string())?;
    let piece = dir.join("run.cpio");
    pack_sh("pack_cpio \"$1\" \"$2\" none", &[&stage, &piece])?;
    Ok(piece)
}

/// The kernel unpacks concatenated archives; zero padding between them is skipped, and an uncompressed
/// archive must start 4-byte aligned, so every piece is padded to 512 bytes.
pub fn concat_padded(pieces: &[PathBuf], out: &Path) -> io::Result<()> {
    let mut w = io::BufWriter::new(File::create(out)?);
    for p in pieces {
        let n = io::copy(&mut File::open(p)?, &mut w)?;
        w.write_all(&vec![0u8; ((512 - n % 512) % 512) as usize])?;
    }
    w.flush()
}

/// A new console log in `logs`, keeping the newest 20.
fn new_console_log(logs: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
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

/// The console reader and stall watchdog of one running QEMU.
struct Watch<'a> {
    cfg: &'a Config,
    child: Child,
    log: File,
    parser: ConsoleParser,
    stalled: bool,
    timed_out: bool,
    /// The last test host kernel panic line not followed by a case's or daxvmm's own line: a guest's
    /// panic is followed by daxvmm's lines ("daxvmm: guest kernel panicked"), the test host kernel's
    /// is not.
    l1_panic: Option<String>,
    powered_down: bool,
    start: Instant,
    rx: mpsc::Receiver<Vec<u8>>,
    /// The run directory: QEMU's monitor socket and debug log.
    dir: PathBuf,
}

impl<'a> Watch<'a> {
    fn new(cfg: &'a Config, mut child: Child, log: &Path, dir: &Path) -> Result<Watch<'a>, String> {
        let (tx, rx) = mpsc::channel();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            thread::spawn(move || pump(stream, tx));
        }
        let log = File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        Ok(Watch {
            cfg,
            child,
            log,
            parser: ConsoleParser::new(),
            stalled: false,
            timed_out: false,
            l1_panic: None,
            powered_down: false,
            start: Instant::now(),
            rx,
            dir: dir.to_path_buf(),
        })
    }

    fn line(&mut self, line: &str, on_line: OnLine<'_>) {
        let _ = self.log.write_all(line.as_bytes());
        let _ = self.log.write_all(b"\n");
        let clean = line.trim_end_matches('\r');
        if let Some(i) = clean.find("Kernel panic - not syncing") {
            self.l1_panic = Some(clean[i..].to_string());
        }
        if clean.starts_with("daxvmm") || clean.contains(markers::CASE_END) {
            self.l1_panic = None;
        }
        self.powered_down |= clean.contains("reboot: Power down");
        let ended = self.parser.feed(line, self.start.elapsed());
        let log = ended.as_deref().and_then(|n| self.parser.finished.get_key_value(n));
        on_line(line, log.map(|(n, l)| (n.as_str(), l)));
    }

    /// Reads the console until QEMU exits (or the watchdog kills it); QEMU's exit status.
    fn read(&mut self, on_line: OnLine<'_>) -> Option<i32> {
        let mut pending: Vec<u8> = Vec::new();
        let mut last = Instant::now();
        let mut term_at: Option<Instant> = None;
        loop {
            match self.rx.recv_timeout(Duration::from_millis(500)) {
                Ok(chunk) => {
                    last = Instant::now();
                    pending.extend_from_slice(&chunk);
                    while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=nl).collect();
                        let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                        self.line(&text, on_line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if !self.stalled && !self.timed_out && last.elapsed() >= self.cfg.stall {
                self.stalled = true;
                self.stall_report(on_line);
                let _ = self.child.kill();
            }
            if !self.timed_out && !self.stalled && self.start.elapsed() >= self.cfg.timeout {
                self.timed_out = true;
                log(&format!(
                    "the test host VM ran into its timeout ({}s); killing it",
                    self.cfg.timeout.as_secs()
                ));
                // SAFETY: a signal to our own child, which has not been reaped yet (no pid reuse).
                unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
                term_at = Some(Instant::now());
            }
            if term_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
                let _ = self.child.kill();
                term_at = None;
            }
        }
        if !pending.is_empty() {
            let text = String::from_utf8_lossy(&pending).into_owned();
            self.line(&text, on_line);
        }
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// The diagnostics of a stalled VM: the stall marker, then each CPU's registers and local APIC, and
    /// QEMU's threads; on the console stream, in the console log and on stderr.
    fn stall_report(&mut self, on_line: OnLine<'_>) {
        let sock = self.dir.join("monitor.sock");
        let mut report: Vec<String> = monitor_dump(&sock, self.cfg.cpus)
            .lines()
            .filter(|l| is_register_line(l))
            .map(|l| format!("{L1_HOST_LOG} {}", l.trim_end()))
            .collect();
        report.extend(qemu_threads(self.child.id()));
        self.line("", on_line);
        self.line(markers::L1_STALL, on_line);
        for l in &report {
            let _ = writeln!(self.log, "{l}");
            log(l);
        }
        log(&format!(
            "the test host VM's console was silent for {}s: it hung; killed it",
            self.cfg.stall.as_secs()
        ));
    }

    fn end(&mut self, rc: Option<i32>) -> End {
        if self.stalled {
            return End::Fault(Fault::Stall);
        }
        if let Some(why) = &self.parser.no_kvm {
            return End::NoKvm(why.clone());
        }
        if self.parser.done {
            return End::Done;
        }
        if self.timed_out {
            return End::Fault(Fault::Timeout);
        }
        if let Some(p) = &self.l1_panic {
            return End::Fault(Fault::Panic(p.clone()));
        }
        if rc == Some(0) && !self.powered_down {
            // QEMU exits 0 on a guest reset (-no-reboot); -d cpu_reset logged each CPU's state at it.
            let debug = fs::read_to_string(self.dir.join("qemu-debug.log")).unwrap_or_default();
            let lines = reset_lines(&debug, self.cfg.cpus);
            log("the test host VM reset itself with no panic message (a triple fault?); QEMU's CPU state at that reset:");
            if lines.is_empty() {
                log("(no QEMU CPU reset log)");
            }
            for l in lines {
                let _ = writeln!(self.log, "{l}");
                log(&l);
            }
            return End::Fault(Fault::Reset);
        }
        End::Fault(Fault::Died(rc))
    }
}

fn pump(mut r: Box<dyn Read + Send>, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        }
    }
}

/// The monitor lines worth keeping at a stall: where each CPU is, and its local APIC timer and pending
/// interrupts (is a timer armed, an interrupt pending?).
pub fn is_register_line(l: &str) -> bool {
    ["RIP=", "CPU#", "local APIC state"].iter().any(|k| l.contains(k))
        || ["LVTT", "Timer", "ISR", "IRR", "PPR"].iter().any(|k| l.starts_with(k))
}

/// QEMU's CPU state at a reset, from its `-d cpu_reset` log: the last `4 * cpus + 1` lines of interest.
/// (The power-on resets at start log the same way, with RIP=fff0.)
pub fn reset_lines(debug_log: &str, cpus: usize) -> Vec<String> {
    let keep = |l: &&str| {
        l.contains("CPU Reset")
            || l.contains("Triple fault")
            || ["RIP=", "EIP=", "CR0=", "EFER="].iter().any(|k| l.starts_with(k))
    };
    let v: Vec<&str> = debug_log.lines().filter(keep).collect();
    v[v.len().saturating_sub(4 * cpus + 1)..].iter().map(|l| format!("{L1_HOST_LOG} {l}")).collect()
}

/// Asks QEMU's monitor for every CPU's registers and local APIC state.
fn monitor_dump(sock: &Path, cpus: usize) -> String {
    let Ok(mut s) = UnixStream::connect(sock) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut cmds = vec!["info registers -a".to_string()];
    for cpu in 0..cpus {
        cmds.push(format!("cpu {cpu}"));
        cmds.push("info lapic".into());
    }
    let _ = s.write_all(format!("{}\n", cmds.join("\n")).as_bytes());
    let (mut out, end) = (Vec::new(), Instant::now() + Duration::from_secs(3));
    let mut buf = [0u8; 65536];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One thread's state and CPU ticks (user + system) from its `/proc/.../stat` (the fields after the
/// name: a thread name like "CPU 0/TCG" has spaces).
pub fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((fields.first()?.to_string(), ticks))
}

/// Each QEMU thread's name, state, kernel wait channel and CPU ticks used during one second: vCPU
/// threads burning CPU mean the test host (or TCG) spins, sleeping ones a wait inside QEMU.
fn qemu_threads(pid: u32) -> Vec<String> {
    let task = PathBuf::from(format!("/proc/{pid}/task"));
    let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let tids = |_: ()| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            fs::read_dir(&task).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        v.sort();
        v
    };
    let before: BTreeMap<PathBuf, u64> = tids(())
        .into_iter()
        .filter_map(|t| Some((t.clone(), parse_stat(&read(t.join("stat")))?.1)))
        .collect();
    thread::sleep(Duration::from_secs(1));
    tids(())
        .into_iter()
        .filter_map(|t| {
            let (state, ticks) = parse_stat(&read(t.join("stat")))?;
            let tid = t.file_name()?.to_string_lossy().into_owned();
            Some(format!(
                "{L1_HOST_LOG} qemu thread {tid} ({}) state {state} wchan {}, {} ticks of CPU in 1 s",
                read(t.join("comm")),
                read(t.join("wchan")),
                ticks.saturating_sub(before.get(&t).copied().unwrap_or(0))
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = Config::new("a\ttrue\n".into(), "/k/bzImage".into(), "/i/initrd".into());
        c.append = String::new();
        c
    }

    #[test]
    fn the_qemu_command_line_has_the_panic_settings_and_the_monitor() {
        let mut c = config();
        c.cpus = 3;
        c.mem = "3072M".into();
        c.append = " idle=poll ".into();
        let args = qemu_args(&c, Path::new("/b/vmlinuz"), Path::new("/r/l1.cpio"), Path::new("/r"));
        let after = |flag: &str| args[args.iter().position(|a| a == flag).expect(flag) + 1].as_str();
        assert_eq!(after("-accel"), "tcg,thread=multi");
        assert_eq!(after("-cpu"), "max");
        assert_eq!((after("-smp"), after("-m")), ("3", "3072M"));
        assert_eq!((after("-kernel"), after("-initrd")), ("/b/vmlinuz", "/r/l1.cpio"));
        assert_eq!(
            after("-append"),
            "console=ttyS0 panic=-1 quiet loglevel=5 softlockup_panic=1 hung_task_panic=1 \
             sysctl.kernel.panic_on_rcu_stall=1 nokaslr idle=poll"
        );
        assert_eq!((after("-d"), after("-D")), ("cpu_reset", "/r/qemu-debug.log"));
        assert_eq!(after("-monitor"), "unix:/r/monitor.sock,server=on,wait=off");
        assert_eq!(after("-serial"), "stdio");
        assert!(args.iter().any(|a| a == "-no-reboot"));
        c.append = String::new();
        let args = qemu_args(&c, Path::new("/b/vmlinuz"), Path::new("/r/l1.cpio"), Path::new("/r"));
        assert!(args.iter().any(|a| a.ends_with("panic_on_rcu_stall=1 nokaslr")));
    }

    #[test]
    fn batches_and_sizes_are_checked() {
        assert_eq!(check_batch("# c\n\na\ttrue\nb.1:x-y_z\techo\n"), Ok(2));
        assert!(check_batch("a true\n").expect_err("no tab").contains("TAB"));
        assert!(check_batch("a b\ttrue\n").expect_err("space").contains("letters"));
        let mut c = config();
        c.mem = "4T".into();
        assert!(c.check().expect_err("mem").contains("--mem"));
        c.mem = "4G".into();
        assert!(c.check().expect_err("kernel").contains("/k/bzImage"));
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
