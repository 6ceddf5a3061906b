//! `--kernel` given a kernel build tree instead of a bzImage: the tree's `arch/x86/boot/bzImage` is
//! booted once its `.config` has what the command's guest needs. What each command needs is what the
//! project's own kernel is configured with for it (the fragments in guest-kernel/config, read at build
//! time, so there is one list). For `daxvmm fstests` and `ndctl-tests`, an option may be a module (=m)
//! unless the suite image needs it to mount its root file system: the guest loads those modules from
//! the tree ([`modules`]). The race initramfs has no module tree, so the other commands need everything
//! built in. Missing options are listed with the `scripts/config` command that sets them, as kunit does
//! for its kunitconfig.

pub mod cpio;
pub mod modules;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::cli::Command;
use modules::ModulesError;

/// fs-dax on NVDIMMs: every command.
const NVDIMM_DAX: &str = include_str!("../../../guest-kernel/config/10-nvdimm-dax.config");
/// The race scenarios' hooks and driver (the project's patch series).
const REFCOUNT: &str = include_str!("../../../guest-kernel/config/40-refcount.config");
/// What fstests and ndctl's tests use.
const SUITES: &str = include_str!("../../../guest-kernel/config/50-suites.config");
/// What any daxvmm guest needs besides: a console, ACPI (the NFIT and the fault injector), PCI (ACPICA
/// loads no DSDT without it; Linux inserts e820 pmem only after a PCI config access), the KVM guest
/// support with what it depends on (so the `scripts/config` line sets all three), and init programs.
const BOOT: &[&str] = &[
    "64BIT",
    "ACPI",
    "PCI",
    "HYPERVISOR_GUEST",
    "PARAVIRT",
    "KVM_GUEST",
    "SERIAL_8250",
    "SERIAL_8250_CONSOLE",
    "BINFMT_ELF",
    "BINFMT_SCRIPT",
    "DEVTMPFS",
    "PROC_FS",
    "SYSFS",
    "TMPFS",
];
/// What the suite image needs before its init can load a module: its root file system is ext4 on pmem0,
/// an NFIT NVDIMM (DAX is selected by LIBNVDIMM, so built in with it).
const SUITE_ROOT: &[&str] = &["LIBNVDIMM", "ACPI_NFIT", "BLK_DEV_PMEM", "EXT4_FS", "DAX"];
/// In the fragments, but not a requirement: only visible when no other tracer is enabled; any tracer
/// gives the tracepoints ndctl's dax.sh reads ([`EVENT_TRACING`]).
const NOT_REQUIRED: &[&str] = &["ENABLE_DEFAULT_TRACERS"];
/// Selected by any tracer; not settable on its own.
const EVENT_TRACING: &str = "EVENT_TRACING";

/// Why a kernel build tree cannot be booted.
#[derive(Debug, Error)]
pub enum KernelTreeError {
    /// A directory without a built bzImage.
    #[error("--kernel {tree}: a directory, but not a built kernel tree: it has no arch/x86/boot/bzImage (build it with `make -C {tree} -j$(nproc) bzImage`, or give a bzImage)")]
    NoImage {
        /// The tree.
        tree: String,
    },
    /// No .config.
    #[error("--kernel {tree}: no .config in it (out-of-tree builds: give the O= directory)")]
    NoConfig {
        /// The tree.
        tree: String,
    },
    /// The image was built before the last change to .config.
    #[error("--kernel {tree}: .config is newer than arch/x86/boot/bzImage; rebuild it: make -C {tree} -j$(nproc) bzImage")]
    Stale {
        /// The tree.
        tree: String,
    },
    /// A file of the tree cannot be read.
    #[error("--kernel {tree}: cannot read {file}: {source}")]
    Read {
        /// The tree.
        tree: String,
        /// The file.
        file: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Options the command's guest needs are missing or modules.
    #[error("{0}")]
    Missing(String),
    /// The tree's modules cannot be used.
    #[error(transparent)]
    Modules(#[from] ModulesError),
}

/// What a guest of `command` needs, as config symbols without `CONFIG_`.
fn required(command: &Command) -> Vec<&'static str> {
    let from = |fragment: &'static str| {
        fragment
            .lines()
            .filter_map(|l| l.strip_prefix("CONFIG_")?.strip_suffix("=y"))
            .filter(|s| !NOT_REQUIRED.contains(s))
            .collect::<Vec<_>>()
    };
    let mut need: Vec<&str> = BOOT.to_vec();
    need.extend(from(NVDIMM_DAX));
    need.push(EVENT_TRACING);
    match command {
        Command::Run(a) if a.initrd.is_some() => need.push("BLK_DEV_INITRD"),
        Command::Run(_) => {}
        Command::Test(_) | Command::Repro(_) => {
            need.push("BLK_DEV_INITRD");
            need.extend(from(REFCOUNT));
        }
        Command::Fstests(_) | Command::NdctlTests(_) => need.extend(from(SUITES)),
        Command::SuiteReport(_) => {}
    }
    let mut seen = std::collections::BTreeSet::new();
    need.retain(|s| seen.insert(*s));
    need
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Run(_) => "daxvmm run",
        Command::Test(_) => "daxvmm test",
        Command::Repro(_) => "daxvmm repro",
        Command::Fstests(_) => "daxvmm fstests",
        Command::NdctlTests(_) => "daxvmm ndctl-tests",
        Command::SuiteReport(_) => "daxvmm suite-report",
    }
}

/// Whether `command`'s guest loads the tree's modules: the suite image does, once its root is mounted.
fn loads_modules(command: &Command) -> bool {
    matches!(command, Command::Fstests(_) | Command::NdctlTests(_))
}

/// The command's `--kernel`, when it has one.
fn kernel_of(command: &mut Command) -> Option<&mut PathBuf> {
    match command {
        Command::Run(a) => Some(&mut a.kernel),
        Command::Test(a) => a.boot.kernel.as_mut(),
        Command::Repro(a) => a.boot.kernel.as_mut(),
        Command::Fstests(a) => Some(&mut a.boot.kernel),
        Command::NdctlTests(a) => Some(&mut a.boot.kernel),
        Command::SuiteReport(_) => None,
    }
}

/// When `command`'s `--kernel` is a directory: checks it as a build tree and replaces it with the
/// tree's bzImage; for a suite whose options the tree builds as modules, finds the modules it loads.
/// A file is left as it is.
pub fn resolve(command: &mut Command) -> Result<(), KernelTreeError> {
    // The usual case, a bzImage, costs one stat and nothing else.
    let Some(tree) = kernel_of(command).filter(|k| k.is_dir()).cloned() else { return Ok(()) };
    let name = command_name(command);
    let (image, as_modules) = check_tree(&tree, name, &required(command), loads_modules(command))?;
    let found = if as_modules.is_empty() { None } else { Some(modules::find(&tree, &as_modules)?) };
    match &found {
        None => log::info!("booting {} (the tree's .config has what {name} needs)", image.display()),
        Some(m) => log::info!(
            "booting {} (the tree's .config has what {name} needs; the guest loads {} of its modules: {})",
            image.display(),
            m.modules.len(),
            m.modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(" ")
        ),
    }
    if let Some(kernel) = kernel_of(command) {
        *kernel = image;
    }
    match command {
        Command::Fstests(a) => a.boot.modules = found,
        Command::NdctlTests(a) => a.boot.modules = found,
        _ => {}
    }
    Ok(())
}

/// The state of one symbol in a .config.
#[derive(Debug, PartialEq, Eq)]
enum State {
    BuiltIn,
    Module,
    Unset,
}

fn state(config: &str, symbol: &str) -> State {
    let set = format!("CONFIG_{symbol}=");
    match config.lines().find_map(|l| l.strip_prefix(&set)) {
        Some("y") => State::BuiltIn,
        Some("m") => State::Module,
        _ => State::Unset,
    }
}

/// Checks the tree; its bzImage, and the needed options it builds as modules that the guest loads.
fn check_tree<'a>(
    tree: &Path,
    command: &str,
    need: &[&'a str],
    loads_modules: bool,
) -> Result<(PathBuf, Vec<&'a str>), KernelTreeError> {
    let shown = tree.display().to_string();
    let image = tree.join("arch/x86/boot/bzImage");
    let config_path = tree.join(".config");
    if !image.is_file() {
        return Err(KernelTreeError::NoImage { tree: shown });
    }
    let config = match std::fs::read_to_string(&config_path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KernelTreeError::NoConfig { tree: shown })
        }
        Err(source) => return Err(KernelTreeError::Read { tree: shown, file: ".config", source }),
    };
    let modified = |p: &Path, file| {
        std::fs::metadata(p).and_then(|m| m.modified()).map_err(|source| KernelTreeError::Read {
            tree: shown.clone(),
            file,
            source,
        })
    };
    let states: Vec<(&str, State)> = need.iter().map(|s| (*s, state(&config, s))).collect();
    let may_be_module = |s: &str| loads_modules && !SUITE_ROOT.contains(&s) && !BOOT.contains(&s);
    let as_modules: Vec<&str> =
        states.iter().filter(|(s, st)| *st == State::Module && may_be_module(s)).map(|(s, _)| *s).collect();
    let missing: Vec<(&str, State)> =
        states.into_iter().filter(|(s, st)| *st != State::BuiltIn && !as_modules.contains(s)).collect();
    if !missing.is_empty() {
        let out_of_tree = tree.join("source").is_dir() && !tree.join("scripts/config").is_file();
        return Err(KernelTreeError::Missing(missing_report(
            &shown,
            command,
            &missing,
            out_of_tree,
            loads_modules,
        )));
    }
    if modified(&config_path, ".config")? > modified(&image, "arch/x86/boot/bzImage")? {
        return Err(KernelTreeError::Stale { tree: shown });
    }
    Ok((image, as_modules))
}

fn missing_report(
    tree: &str,
    command: &str,
    missing: &[(&str, State)],
    out_of_tree: bool,
    loads_modules: bool,
) -> String {
    // A `make O=DIR` directory has no scripts/, but a `source` link to the tree that has.
    let config = if out_of_tree { "source/scripts/config --file .config" } else { "./scripts/config" };
    let mut s = format!("--kernel {tree}: its .config lacks what a guest of {command} needs:\n");
    for (symbol, st) in missing {
        let what = match st {
            State::Module if loads_modules => {
                "is a module (=m); the suite image needs it before it can load modules (to mount its root, ext4 on pmem0), so it must be built in"
            }
            State::Module => "is a module (=m); only daxvmm fstests and ndctl-tests load a tree's modules, so it must be built in",
            _ => "is not set",
        };
        let _ = writeln!(s, "  CONFIG_{symbol} {what}");
    }
    let enable: Vec<String> = missing
        .iter()
        .map(|(symbol, _)| {
            // EVENT_TRACING is selected by a tracer; with none enabled, the default tracers select it.
            let symbol = if *symbol == EVENT_TRACING { "ENABLE_DEFAULT_TRACERS" } else { symbol };
            format!("-e {symbol}")
        })
        .collect();
    let _ = write!(
        s,
        "set them and rebuild:\n  cd {tree} && {config} {} && make olddefconfig && make -j$(nproc) bzImage\n\
         (an option that olddefconfig turns off again lacks a dependency: find it with / in make menuconfig)",
        enable.join(" ")
    );
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cli::Cli;

    fn command(args: &[&str]) -> Command {
        Cli::try_parse_command(["daxvmm"].iter().chain(args)).unwrap()
    }

    fn tree(name: &str, config: &str) -> PathBuf {
        let t = std::env::temp_dir().join(format!("daxvmm-tree-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("arch/x86/boot")).unwrap();
        std::fs::write(t.join(".config"), config).unwrap();
        // The image after the config, as a build leaves them.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(t.join("arch/x86/boot/bzImage"), b"image").unwrap();
        t
    }

    fn full_config(command: &Command) -> String {
        required(command).iter().map(|s| format!("CONFIG_{s}=y\n")).collect()
    }

    #[test]
    fn each_command_needs_its_fragments_built_in() {
        let fst = required(&command(&["fstests", "--kernel", "/k", "--rootfs", "/r"]));
        let run = required(&command(&["--kernel", "/k"]));
        let test = required(&command(&["test", "--kernel", "/k"]));
        for s in ["FS_DAX", "ACPI_NFIT", "BLK_DEV_PMEM", "XFS_FS", "EXT4_FS", "SERIAL_8250_CONSOLE"] {
            assert!(fst.contains(&s) && run.contains(&s) && test.contains(&s), "{s}");
        }
        assert!(
            fst.contains(&"DM_LOG_WRITES")
                && fst.contains(&"X86_PMEM_LEGACY")
                && !run.contains(&"DM_LOG_WRITES")
        );
        assert!(test.contains(&"DAX_REFCOUNT_HOOKS") && !fst.contains(&"DAX_REFCOUNT_HOOKS"));
        assert!(test.contains(&"BLK_DEV_INITRD") && !run.contains(&"BLK_DEV_INITRD"));
        assert!(!fst.contains(&"ENABLE_DEFAULT_TRACERS") && fst.contains(&"EVENT_TRACING"));
    }

    #[test]
    fn a_complete_tree_boots_its_bzimage() {
        let mut c = command(&["fstests", "--kernel", "/k", "--rootfs", "/r"]);
        let t = tree("ok", &full_config(&c));
        if let Command::Fstests(a) = &mut c {
            a.boot.kernel = t.clone();
        }
        resolve(&mut c).unwrap();
        let Command::Fstests(a) = &c else { panic!() };
        assert_eq!(a.boot.kernel, t.join("arch/x86/boot/bzImage"));
        // A file is not a tree: left alone.
        resolve(&mut c).unwrap();
        let Command::Fstests(a) = &c else { panic!() };
        assert_eq!(a.boot.kernel, t.join("arch/x86/boot/bzImage"));
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn missing_options_and_modules_are_listed_with_the_command_that_sets_them() {
        let base = command(&["fstests", "--kernel", "/k", "--rootfs", "/r"]);
        let config = full_config(&base)
            .replace("CONFIG_FS_DAX=y\n", "# CONFIG_FS_DAX is not set\n")
            .replace("CONFIG_EXT4_FS=y\n", "CONFIG_EXT4_FS=m\n")
            .replace("CONFIG_EVENT_TRACING=y\n", "");
        let t = tree("missing", &config);
        let mut c = base;
        if let Command::Fstests(a) = &mut c {
            a.boot.kernel = t.clone();
        }
        let e = resolve(&mut c).unwrap_err().to_string();
        assert!(e.contains("a guest of daxvmm fstests needs:\n  CONFIG_FS_DAX is not set\n"), "{e}");
        assert!(e.contains("  CONFIG_EXT4_FS is a module (=m); the suite image needs it before it can load modules (to mount its root"), "{e}");
        assert!(
            e.contains(&format!(
                "cd {} && ./scripts/config -e FS_DAX -e EXT4_FS -e ENABLE_DEFAULT_TRACERS && make olddefconfig",
                t.display()
            )),
            "{e}"
        );
        assert_eq!(e.matches("  CONFIG_").count(), 3, "{e}");
        // A `make O=` directory: scripts/config is reached through its `source` link.
        std::fs::create_dir_all(t.join("source/scripts")).unwrap();
        let e = resolve(&mut c).unwrap_err().to_string();
        assert!(e.contains(" && source/scripts/config --file .config -e FS_DAX "), "{e}");
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_suite_loads_the_modules_of_a_tree_other_commands_refuse_them() {
        let mut fst = command(&["fstests", "--kernel", "/k", "--rootfs", "/r"]);
        let t = modules::tests::tree("suite");
        let config = full_config(&fst)
            .replace("CONFIG_BLK_DEV_DM=y\n", "CONFIG_BLK_DEV_DM=m\n")
            .replace("CONFIG_DM_LOG_WRITES=y\n", "CONFIG_DM_LOG_WRITES=m\n");
        std::fs::write(t.join(".config"), &config).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::create_dir_all(t.join("arch/x86/boot")).unwrap();
        std::fs::write(t.join("arch/x86/boot/bzImage"), b"image").unwrap();
        for ko in ["dm-mod", "dm-log-writes"] {
            let v = ["vermagic=6.12.117 SMP", if ko == "dm-mod" { "depends=" } else { "depends=dm_mod" }];
            std::fs::write(t.join(format!("drivers/md/{ko}.ko")), modules::tests::fake_ko(&v)).unwrap();
        }
        if let Command::Fstests(a) = &mut fst {
            a.boot.kernel = t.clone();
        }
        resolve(&mut fst).unwrap();
        let Command::Fstests(a) = &fst else { panic!() };
        let loaded: Vec<&str> =
            a.boot.modules.as_ref().unwrap().modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(loaded, ["dm_mod", "dm_log_writes"]);
        assert_eq!(a.boot.kernel, t.join("arch/x86/boot/bzImage"));

        // The race initramfs loads none: `daxvmm test` needs them built in.
        let mut test = command(&["test", "--kernel", "/k"]);
        std::fs::write(
            t.join(".config"),
            full_config(&test).replace("CONFIG_XFS_FS=y\n", "CONFIG_XFS_FS=m\n"),
        )
        .unwrap();
        if let Command::Test(a) = &mut test {
            a.boot.kernel = Some(t.clone());
        }
        let e = resolve(&mut test).unwrap_err().to_string();
        assert!(
            e.contains(
                "CONFIG_XFS_FS is a module (=m); only daxvmm fstests and ndctl-tests load a tree's modules"
            ),
            "{e}"
        );
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn a_tree_without_an_image_or_config_or_with_a_stale_image_is_one_error() {
        let run = command(&["--kernel", "/k"]);
        let t = tree("stale", &full_config(&run));
        let with = |c: &mut Command| {
            if let Command::Run(a) = c {
                a.kernel = t.clone();
            }
        };
        let mut c = run;
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(t.join(".config"), full_config(&c)).unwrap();
        with(&mut c);
        assert!(matches!(resolve(&mut c), Err(KernelTreeError::Stale { .. })));
        std::fs::remove_file(t.join(".config")).unwrap();
        with(&mut c);
        let e = resolve(&mut c).unwrap_err();
        assert!(matches!(e, KernelTreeError::NoConfig { .. }), "{e}");
        std::fs::remove_file(t.join("arch/x86/boot/bzImage")).unwrap();
        with(&mut c);
        let e = resolve(&mut c).unwrap_err().to_string();
        assert!(e.contains("no arch/x86/boot/bzImage (build it with `make -C"), "{e}");
        std::fs::remove_dir_all(&t).unwrap();
    }
}
