//! The modules of a kernel build tree that a suite guest loads: the options the suites need that the
//! tree builds as modules (=m), each found through the kbuild line that builds it
//! (`obj-$(CONFIG_X) += name.o` in the Makefile beside a module that modules.order lists), with the
//! modules they depend on (`depends=` in each .ko's .modinfo), dependencies first. [`pack`] writes them
//! as a cpio archive that the image's init unpacks into /lib/modules and loads in that order
//! (docs/suites.md).

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::cpio;

/// Modules the guest loads, from one tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeModules {
    /// The tree's kernel release (`uname -r` of the guest), from include/config/kernel.release.
    pub release: String,
    /// Dependencies before the modules that need them.
    pub modules: Vec<Module>,
}

/// One module of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Its name as the kernel knows it (`-` written `_`).
    pub name: String,
    /// The .ko in the tree.
    pub file: PathBuf,
    /// Where `make modules_install` puts it under /lib/modules/RELEASE.
    pub install: String,
}

/// The first entry of the archive: the release, then the modules' install paths in load order.
pub const LIST: &str = "daxvmm-modules";
/// The guest maps NVDIMMs in 2 MiB pages: the archive file is padded to a multiple of that.
const ALIGN: u64 = 2 << 20;

/// Why a tree's modules cannot be used.
#[derive(Debug, Error)]
pub enum ModulesError {
    /// A file of the tree cannot be read.
    #[error("--kernel {tree}: cannot read {file}: {source}")]
    Read {
        /// The tree.
        tree: String,
        /// The file, relative to the tree.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No module of an option was built.
    #[error("--kernel {tree}: CONFIG_{symbol}=m, but modules.order lists no module built for it; build the modules: make -C {tree} -j$(nproc) modules")]
    NoModule {
        /// The tree.
        tree: String,
        /// The option.
        symbol: String,
    },
    /// A module is listed but missing or older than .config.
    #[error("--kernel {tree}: {file} is {why}; build the modules: make -C {tree} -j$(nproc) modules")]
    NotBuilt {
        /// The tree.
        tree: String,
        /// The .ko, relative to the tree.
        file: String,
        /// Missing or stale.
        why: &'static str,
    },
    /// A .ko without a readable .modinfo.
    #[error("--kernel {tree}: {file} is not a kernel module daxvmm can read: {why}")]
    BadModule {
        /// The tree.
        tree: String,
        /// The .ko, relative to the tree.
        file: String,
        /// What is wrong.
        why: String,
    },
    /// A module built for another release (a tree rebuilt with another version, modules not).
    #[error("--kernel {tree}: {file} was built for {built}, the tree's kernel is {release}; rebuild the modules: make -C {tree} -j$(nproc) modules")]
    OtherRelease {
        /// The tree.
        tree: String,
        /// The .ko, relative to the tree.
        file: String,
        /// Its vermagic's release.
        built: String,
        /// The tree's release.
        release: String,
    },
    /// A dependency that modules.order does not list.
    #[error(
        "--kernel {tree}: module {module} needs module {needs}, which the tree's modules.order does not list"
    )]
    MissingDependency {
        /// The tree.
        tree: String,
        /// The module.
        module: String,
        /// Its dependency.
        needs: String,
    },
    /// The archive cannot be written.
    #[error("cannot write the modules archive {path}: {source}")]
    Archive {
        /// The archive's path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The modules that build `symbols` in `tree` and what they depend on, in load order.
pub fn find(tree: &Path, symbols: &[&str]) -> Result<TreeModules, ModulesError> {
    let shown = tree.display().to_string();
    let read = |file: &str| {
        std::fs::read_to_string(tree.join(file)).map_err(|source| ModulesError::Read {
            tree: shown.clone(),
            file: file.to_string(),
            source,
        })
    };
    let release = read("include/config/kernel.release")?.trim().to_string();
    let order = read("modules.order")?;
    // modules.order names objects (`fs/xfs/xfs.o`) since Linux 6.3, the .ko files before: one stem each.
    let listed: Vec<&str> = order
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_suffix(".o").or_else(|| l.strip_suffix(".ko")).unwrap_or(l))
        .collect();
    let builders = builders(tree, &listed);
    let mut walk = Walk {
        tree,
        shown: tree.display().to_string(),
        by_name: listed.iter().map(|stem| (module_name(stem), *stem)).collect(),
        config_time: std::fs::metadata(tree.join(".config")).and_then(|m| m.modified()).ok(),
        release: &release,
        seen: BTreeSet::new(),
        out: Vec::new(),
    };
    for symbol in symbols {
        let Some(stems) = builders.get(*symbol) else {
            return Err(ModulesError::NoModule { tree: shown, symbol: symbol.to_string() });
        };
        for stem in stems {
            walk.add(stem, &mut Vec::new())?;
        }
    }
    let modules = walk.out;
    Ok(TreeModules { release, modules })
}

/// The kernel's name of a module at `path` (without .ko).
fn module_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).replace('-', "_")
}

/// The dependency walk over one tree's listed modules.
struct Walk<'a> {
    tree: &'a Path,
    shown: String,
    /// Listed modules by kernel name: their stems.
    by_name: BTreeMap<String, &'a str>,
    /// When .config last changed: a module older than that is stale.
    config_time: Option<std::time::SystemTime>,
    release: &'a str,
    /// Modules already in `out`.
    seen: BTreeSet<String>,
    /// Dependencies before the modules that need them.
    out: Vec<Module>,
}

impl Walk<'_> {
    /// Adds the module at `stem` after its dependencies (depth first; `visiting` guards against a cycle).
    fn add(&mut self, stem: &str, visiting: &mut Vec<String>) -> Result<(), ModulesError> {
        let name = module_name(stem);
        if self.seen.contains(&name) || visiting.contains(&name) {
            return Ok(());
        }
        visiting.push(name.clone());
        let shown = self.shown.clone();
        let rel = format!("{stem}.ko");
        let file = self.tree.join(&rel);
        let not_built = |why| ModulesError::NotBuilt { tree: shown.clone(), file: rel.clone(), why };
        let meta =
            std::fs::metadata(&file).map_err(|_| not_built("listed in modules.order but not built"))?;
        if let (Some(config), Ok(built)) = (self.config_time, meta.modified()) {
            if built < config {
                return Err(not_built("older than .config"));
            }
        }
        let bytes = std::fs::read(&file).map_err(|source| ModulesError::Read {
            tree: shown.clone(),
            file: rel.clone(),
            source,
        })?;
        let info = modinfo(&bytes).map_err(|why| ModulesError::BadModule {
            tree: shown.clone(),
            file: rel.clone(),
            why: why.to_string(),
        })?;
        let value = |key: &str| info.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let built = value("vermagic").and_then(|v| v.split_whitespace().next()).unwrap_or("");
        if built != self.release {
            return Err(ModulesError::OtherRelease {
                tree: shown,
                file: rel,
                built: if built.is_empty() { "no release (no vermagic)".into() } else { built.into() },
                release: self.release.into(),
            });
        }
        let depends = value("depends").unwrap_or("").split(',').filter(|d| !d.is_empty());
        // A soft "pre:" dependency that the tree built as a module loads first too; one it does not
        // list is built in or optional.
        let soft = info
            .iter()
            .filter(|(k, _)| k == "softdep")
            .flat_map(|(_, v)| v.split("post:").next().unwrap_or("").split_whitespace())
            .filter(|w| *w != "pre:")
            .filter(|w| self.by_name.contains_key(&w.replace('-', "_")));
        let needs: Vec<String> = depends.chain(soft).map(|d| d.replace('-', "_")).collect();
        for dep in needs {
            let Some(dep_stem) = self.by_name.get(&dep).copied() else {
                return Err(ModulesError::MissingDependency { tree: shown, module: name, needs: dep });
            };
            self.add(dep_stem, visiting)?;
        }
        visiting.pop();
        self.seen.insert(name.clone());
        self.out.push(Module { name, file, install: format!("kernel/{rel}") });
        Ok(())
    }
}

/// Which listed modules each option builds: the `obj-$(CONFIG_X)` lines of the Makefile (or Kbuild)
/// in each listed module's directory (in an O= build directory, of the `source` tree).
fn builders(tree: &Path, listed: &[&str]) -> BTreeMap<String, Vec<String>> {
    let source = if tree.join("source").is_dir() { tree.join("source") } else { tree.to_path_buf() };
    let listed_stems: BTreeSet<&str> = listed.iter().copied().collect();
    let dirs: BTreeSet<&str> =
        listed_stems.iter().map(|s| s.rsplit_once('/').map_or("", |(d, _)| d)).collect();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for dir in dirs {
        for file in ["Makefile", "Kbuild"] {
            let Ok(text) = std::fs::read_to_string(source.join(dir).join(file)) else { continue };
            for (symbol, object) in kbuild_objects(&text) {
                let stem = if dir.is_empty() { object } else { format!("{dir}/{object}") };
                if listed_stems.contains(stem.as_str()) {
                    let stems = out.entry(symbol).or_default();
                    if !stems.contains(&stem) {
                        stems.push(stem);
                    }
                }
            }
        }
    }
    out
}

/// `(symbol, object without .o)` for each object of each `obj-$(CONFIG_SYMBOL) += a.o b.o` line.
fn kbuild_objects(text: &str) -> Vec<(String, String)> {
    let joined = text.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("obj-$(CONFIG_") else { continue };
        let Some((symbol, rest)) = rest.split_once(')') else { continue };
        let rest = rest.trim_start();
        let Some(objects) = ["+=", ":=", "="].iter().find_map(|op| rest.strip_prefix(op)) else { continue };
        for object in objects.split_whitespace() {
            if let Some(stem) = object.strip_suffix(".o") {
                out.push((symbol.to_string(), stem.to_string()));
            }
        }
    }
    out
}

/// The `key=value` strings of an x86-64 ELF object's .modinfo section.
fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    let u16_at = |at: usize| elf.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at =
        |at: usize| elf.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let u64_at = |at: usize| {
        elf.get(at..at + 8).and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok())
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not a 64-bit little-endian ELF file");
    }
    let truncated = "its section headers are truncated";
    let (shoff, shentsize, shnum, shstrndx) = match (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e)) {
        (Some(a), Some(b), Some(c), Some(d)) if b >= 0x28 => (a, b, c, d),
        _ => return Err(truncated),
    };
    let section = |i: usize| -> Result<(usize, &[u8]), &'static str> {
        let at = shoff.checked_add(i.checked_mul(shentsize).ok_or(truncated)?).ok_or(truncated)?;
        let (name, offset, size) = match (u32_at(at), u64_at(at + 0x18), u64_at(at + 0x20)) {
            (Some(n), Some(o), Some(s)) => (n, o, s),
            _ => return Err(truncated),
        };
        let end = offset.checked_add(size).ok_or(truncated)?;
        Ok((name, elf.get(offset..end).ok_or("a section lies outside the file")?))
    };
    let (_, names) = section(shstrndx)?;
    for i in 0..shnum {
        let (name, data) = section(i)?;
        let name = names.get(name..).and_then(|n| n.split(|b| *b == 0).next()).unwrap_or(b"");
        if name == b".modinfo" {
            return Ok(data
                .split(|b| *b == 0)
                .filter_map(|kv| {
                    let kv = std::str::from_utf8(kv).ok()?;
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect());
        }
    }
    Err("it has no .modinfo section")
}

/// Writes `modules` to `path` as the archive the guest unpacks; the file's size (a multiple of 2 MiB).
pub fn pack(modules: &TreeModules, path: &Path) -> Result<u64, ModulesError> {
    let err = |source| ModulesError::Archive { path: path.display().to_string(), source };
    let file = std::fs::File::create(path).map_err(err)?;
    let mut w = cpio::Writer::new(BufWriter::new(file));
    let mut list = format!("{}\n", modules.release);
    for m in &modules.modules {
        list.push_str(&m.install);
        list.push('\n');
    }
    w.file(LIST, list.as_bytes()).map_err(err)?;
    for m in &modules.modules {
        let data = std::fs::read(&m.file).map_err(err)?;
        w.file(&format!("{}/{}", modules.release, m.install), &data).map_err(err)?;
    }
    let (out, len) = w.finish().map_err(err)?;
    let file = out.into_inner().map_err(|e| err(e.into_error()))?;
    let size = len.div_ceil(ALIGN).max(1) * ALIGN;
    file.set_len(size).map_err(err)?;
    Ok(size)
}

#[cfg(test)]
#[path = "modules_tests.rs"]
pub(crate) mod tests;
