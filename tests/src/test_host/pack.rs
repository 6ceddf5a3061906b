//! Packing the test host VM's initramfs pieces: the cached base (the test host kernel, its KVM modules,
//! busybox and /init), the cached optional QEMU, and the per-run piece; see [`super`].

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::error::{io_err, TestHostError};
use super::{log, root, Config, TempDir};
use crate::case::{shell_quote, NESTED_INITRD, NESTED_KERNEL};

/// Runs a snippet of bash with scripts/lib.sh and images/pack.sh sourced (apt downloads and the
/// initramfs packing helpers), the words `args` as `$1...`; its stdout, trimmed.
fn pack_sh(snippet: &str, args: &[&Path]) -> Result<String, TestHostError> {
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
        .map_err(|source| TestHostError::Spawn { program: "bash".into(), source })?;
    if !out.status.success() {
        return Err(TestHostError::Failed {
            command: format!("`{snippet}` (images/pack.sh)"),
            status: out.status,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run_tool(cmd: &mut Command) -> Result<(), TestHostError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let status = cmd.status().map_err(|source| TestHostError::Spawn { program: program.clone(), source })?;
    if status.success() {
        return Ok(());
    }
    let mut command = shell_quote(&program);
    for a in cmd.get_args() {
        command.push(' ');
        command.push_str(&shell_quote(&a.to_string_lossy()));
    }
    Err(TestHostError::Failed { command, status })
}

/// A short content key of files (names and contents) and extra words.
fn content_key(files: &[PathBuf], words: &[&str]) -> Result<String, TestHostError> {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    for w in words {
        h.write(w.as_bytes());
    }
    for f in files {
        h.write(f.to_string_lossy().as_bytes());
        h.write(&fs::read(f).map_err(io_err("read", f))?);
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
pub(super) fn base_piece(cache: &Path) -> Result<PathBuf, TestHostError> {
    let r = root();
    let pin_path = r.join("images/test-host.pin");
    let pin_text = fs::read_to_string(&pin_path).map_err(io_err("read", &pin_path))?;
    let pin = read_pin(&pin_text);
    let get = |k: &str| {
        pin.get(k).cloned().ok_or_else(|| TestHostError::PinKey { key: k.into(), pin: pin_path.clone() })
    };
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
    fs::create_dir_all(&modules).map_err(io_err("create", &modules))?;
    let mut order = String::new();
    for m in get("MODULES")?.split_whitespace() {
        let src = unpacked.join("lib/modules").join(&release).join(m);
        let name = Path::new(m).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // Newer Debian kernels compress modules; busybox insmod takes them uncompressed.
        let with = |ext: &str| PathBuf::from(format!("{}{ext}", src.display()));
        let bytes = if src.is_file() {
            fs::read(&src).map_err(io_err("read", &src))?
        } else if let Some((tool, file)) =
            [("xz", with(".xz")), ("zstd", with(".zst")), ("gzip", with(".gz"))]
                .into_iter()
                .find(|(_, f)| f.is_file())
        {
            let out = Command::new(tool)
                .arg("-dc")
                .arg(&file)
                .output()
                .map_err(|source| TestHostError::Spawn { program: tool.into(), source })?;
            if !out.status.success() {
                let command = format!("{tool} -dc {}", shell_quote(&file.to_string_lossy()));
                return Err(TestHostError::Failed { command, status: out.status });
            }
            out.stdout
        } else {
            return Err(TestHostError::NoModule { module: m.into(), pkg, pin: pin_path });
        };
        let dest = modules.join(&name);
        fs::write(&dest, bytes).map_err(io_err("write", &dest))?;
        order.push_str(&name);
        order.push('\n');
    }
    let order_file = modules.join("order");
    fs::write(&order_file, order).map_err(io_err("write", &order_file))?;
    let tmp = cache.join(format!("base-{key}.tmp.{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
    let vmlinuz = unpacked.join(format!("boot/vmlinuz-{release}"));
    if let Err(source) = fs::copy(&vmlinuz, tmp.join("vmlinuz")) {
        return Err(TestHostError::NoVmlinuz { vmlinuz, pin: pin_path, source });
    }
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
pub(super) fn qemu_piece(cache: &Path, qemu: &Path) -> Result<PathBuf, TestHostError> {
    program_piece(cache, "qemu", qemu, &qemu_firmware())
}

/// Piece 2b, cached, optional: the host's perf with its libraries, for profiling the test host kernel
/// and its processes from a case (`perf record -a`). Debian's perf matches the test host's 6.1 kernel.
pub(super) fn perf_piece(cache: &Path, perf: &Path) -> Result<PathBuf, TestHostError> {
    program_piece(cache, "perf", perf, &[])
}

/// `PREFIX-KEY.cpio` in the cache: the dynamic `program` with its libraries, reachable as
/// /usr/bin/NAME, and `files` at their host paths; packed again when any of them changes.
fn program_piece(
    cache: &Path,
    prefix: &str,
    program: &Path,
    files: &[PathBuf],
) -> Result<PathBuf, TestHostError> {
    let real = fs::canonicalize(program).map_err(io_err("resolve", program))?;
    let libs: Vec<PathBuf> = pack_sh("shared_libs \"$1\"", &[&real])?.lines().map(PathBuf::from).collect();
    let mut inputs = vec![real.clone(), root().join("images/pack.sh")];
    inputs.extend(libs);
    inputs.extend(files.iter().filter_map(|f| fs::canonicalize(f).ok()));
    let piece = cache.join(format!("{prefix}-{}.cpio", content_key(&inputs, &[])?));
    if piece.is_file() {
        return Ok(piece);
    }
    log(&format!("packing {} for the test host VM ({})", program.display(), piece.display()));
    let work = TempDir::new("daxvmm-l1p")?;
    pack_sh("stage_dynamic \"$1\" \"$2\"", &[work.path(), &real])?;
    let usr_bin = work.path().join("usr/bin");
    if let Some(name) = program.file_name().filter(|n| real != Path::new("/usr/bin").join(n)) {
        fs::create_dir_all(&usr_bin).map_err(io_err("create", &usr_bin))?;
        let _ = std::os::unix::fs::symlink(&real, usr_bin.join(name));
    }
    for f in files {
        let dest = work.path().join(f.strip_prefix("/").unwrap_or(f));
        if let Some(d) = dest.parent() {
            fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        fs::copy(f, &dest).map_err(|source| TestHostError::Copy {
            from: f.clone(),
            to: dest.clone(),
            source,
        })?;
    }
    // Uncompressed: gunzip of 50 MB under TCG costs more than copying it.
    pack_sh("pack_cpio \"$1\" \"$2\" none", &[work.path(), &piece])?;
    Ok(piece)
}

/// Removes cached pieces (`base-*`, `qemu-*.cpio`, `perf-*.cpio`) unused for `age`.
pub(super) fn prune(cache: &Path, age: Duration) {
    let Ok(rd) = fs::read_dir(cache) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let piece = name.starts_with("base-")
            || ((name.starts_with("qemu-") || name.starts_with("perf-")) && name.ends_with(".cpio"));
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

fn install(src: &Path, dest: &Path) -> Result<(), TestHostError> {
    if let Some(d) = dest.parent() {
        fs::create_dir_all(d).map_err(io_err("create", d))?;
    }
    fs::copy(src, dest).map_err(|source| TestHostError::Copy {
        from: src.into(),
        to: dest.into(),
        source,
    })?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755)).map_err(io_err("make executable", dest))
}

/// Piece 3, per run, uncompressed: daxvmm, the guest kernel and initramfs, extra binaries, the batch.
pub(super) fn run_piece(cfg: &Config, dir: &Path) -> Result<PathBuf, TestHostError> {
    let stage = dir.join("root");
    let at = |p: &str| stage.join(p.trim_start_matches('/'));
    install(&cfg.kernel, &at(NESTED_KERNEL))?;
    install(&cfg.initrd, &at(NESTED_INITRD))?;
    if let Some(d) = &cfg.daxvmm {
        install(d, &at("/bin/daxvmm"))?;
    }
    for a in &cfg.adds {
        let name = a.file_name().ok_or_else(|| TestHostError::AddNotFile { path: a.clone() })?;
        install(a, &stage.join("bin").join(name))?;
    }
    if let Some(h) = &cfg.kvm_hold {
        install(h, &at("/bin/daxvmm-kvm-hold"))?;
    }
    let (batch, case_timeout) = (at("/batch"), at("/case-timeout"));
    fs::write(&batch, &cfg.batch).map_err(io_err("write", &batch))?;
    fs::write(&case_timeout, format!("{}\n", cfg.case_timeout.as_secs()))
        .map_err(io_err("write", &case_timeout))?;
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
