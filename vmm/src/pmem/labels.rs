//! The namespace label area of an NVDIMM with `--pmem SIZE,label-size=N` (what `ndctl init-labels`,
//! `create-namespace` and `read-labels` work on), served to the guest through the `_DSM` mailbox
//! (daxvmm_devices::nvdimm_dsm): by the DIMM's ACPI label methods and, unless `label-dsm=off`, by its
//! `_DSM` label functions. It is not part of the guest-physical region: the guest reaches it only
//! through those, as on hardware.
//!
//! Where it lives: with `file=PATH` and `share=on`, in the file `PATH.labels`, exactly N bytes, created
//! zero-filled when missing (a file of another size is refused and left alone), so labels and namespaces
//! persist with the data; with `share=off` the guest's label writes are discarded like its data writes
//! (an existing `PATH.labels` is read, never written); without a file, in daxvmm's memory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use daxvmm_devices::nvdimm_dsm::{LabelArea, LabelStore, MemoryLabels};

use super::backing::BackingError;
use super::file;
use super::spec::PmemSpec;
use crate::units::format_size;

/// Where a region's label area is kept.
enum Area {
    Memory(MemoryLabels),
    File(File),
}

/// A region's label area, shared between the region (which outlives a run) and the mailbox device.
#[derive(Clone)]
pub struct Labels {
    area: Arc<Mutex<Area>>,
    size: u32,
    /// `label-dsm=`: whether the `_DSM` serves the area as well as the label methods.
    dsm: bool,
    /// The label file, when this run created it (removed again if the start fails).
    created: Option<PathBuf>,
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Labels")
            .field("size", &self.size)
            .field("dsm", &self.dsm)
            .field("created", &self.created)
            .finish()
    }
}

/// The label file of a region backed by `file`.
pub fn label_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(".labels");
    PathBuf::from(p)
}

impl Labels {
    /// The label area `spec` asks for (None without `label-size=`), opened or created as the module
    /// documentation says.
    pub fn open(index: usize, spec: &PmemSpec) -> Result<Option<Labels>, BackingError> {
        let Some(size) = spec.label_size else { return Ok(None) };
        let memory = |bytes: Vec<u8>| Area::Memory(MemoryLabels(bytes));
        let new = |area: Area, created: Option<PathBuf>| Labels {
            area: Arc::new(Mutex::new(area)),
            size,
            dsm: spec.label_dsm,
            created,
        };
        let Some(data) = &spec.file else {
            return Ok(Some(new(memory(vec![0; size as usize]), None)));
        };
        let path = label_path(data);
        let bad = |why: String| BackingError::File { index, path: path.display().to_string(), why };
        if !spec.share {
            // Read it if it is there (through the same checks), write nothing.
            return match std::fs::symlink_metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(Some(new(memory(vec![0; size as usize]), None)))
                }
                _ => {
                    let mut bytes = vec![0; size as usize];
                    let o = file::open_existing_readonly(&path, u64::from(size)).map_err(bad)?;
                    o.read_exact_at(&mut bytes, 0).map_err(|e| bad(format!("cannot read it: {e}")))?;
                    Ok(Some(new(memory(bytes), None)))
                }
            };
        }
        // `resize` only lets `open` return a file of another size: the size check is made here, with
        // a message about labels (a label area cannot be resized: its index says how big it is).
        let o = file::open(&path, u64::from(size), true).map_err(bad)?;
        match o.kind {
            file::FileKind::Regular(len) if !o.created && len != u64::from(size) => {
                return Err(bad(format!(
                    "is {len} bytes but label-size= asks for {}; give the size it was made with, or move the file away to start with no labels",
                    format_size(u64::from(size))
                )))
            }
            file::FileKind::Regular(_) => {}
            file::FileKind::Block(_) => return Err(bad("is a block device; a label file must be a regular file".into())),
        }
        if o.created {
            if let Err(e) = o.file.set_len(u64::from(size)) {
                let _ = std::fs::remove_file(&path);
                return Err(bad(format!("cannot set its size: {e}")));
            }
        }
        let created = o.created.then(|| path.clone());
        Ok(Some(new(Area::File(o.file), created)))
    }

    /// Removes the label file if this run created it (a start that failed before the guest ran).
    pub fn discard_if_created(&self) {
        if let Some(path) = &self.created {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!("could not remove {} created by this failed start: {e}", path.display());
            }
        }
    }

    /// The area's size in bytes.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Whether the `_DSM` serves the area too (`label-dsm=`).
    pub fn dsm(&self) -> bool {
        self.dsm
    }

    /// The area as the mailbox device serves it to the DIMM with NFIT device handle `handle`.
    pub fn area(&self, handle: u32) -> LabelArea {
        LabelArea { handle, store: Box::new(self.clone()), dsm: self.dsm }
    }
}

impl LabelStore for Labels {
    fn size(&self) -> u32 {
        self.size
    }

    fn read(&mut self, offset: u32, buf: &mut [u8]) -> std::io::Result<()> {
        match &mut *self.area.lock().unwrap_or_else(|e| e.into_inner()) {
            Area::Memory(m) => m.read(offset, buf),
            Area::File(f) => f.read_exact_at(buf, u64::from(offset)),
        }
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> std::io::Result<()> {
        match &mut *self.area.lock().unwrap_or_else(|e| e.into_inner()) {
            Area::Memory(m) => m.write(offset, data),
            // Written through at once: the label area is small, and a namespace the guest created must
            // survive daxvmm being killed.
            Area::File(f) => f.write_all_at(data, u64::from(offset)).and_then(|()| f.sync_data()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("daxvmm-labels-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(label_path(&p));
        p
    }

    fn spec(s: &str) -> PmemSpec {
        PmemSpec::parse(s).unwrap()
    }

    #[test]
    fn no_label_size_no_area() {
        assert!(Labels::open(0, &spec("2M")).unwrap().is_none());
    }

    #[test]
    fn a_file_backed_area_is_created_persists_and_is_discarded_only_if_created() {
        let p = temp("persist");
        let s = spec(&format!("2M,file={},label-size=128K", p.display()));
        let mut l = Labels::open(0, &s).unwrap().unwrap();
        let lp = label_path(&p);
        assert_eq!(std::fs::metadata(&lp).unwrap().len(), 128 << 10);
        l.write(0x1000, b"index").unwrap();
        drop(l);
        let mut again = Labels::open(0, &s).unwrap().unwrap();
        let mut buf = [0u8; 5];
        again.read(0x1000, &mut buf).unwrap();
        assert_eq!(&buf, b"index", "the labels persist in PATH.labels");
        again.discard_if_created();
        assert!(lp.exists(), "a label file this run did not create stays");
        std::fs::remove_file(&lp).unwrap();
        let created = Labels::open(0, &s).unwrap().unwrap();
        created.discard_if_created();
        assert!(!lp.exists(), "a label file this run created goes with a failed start");
    }

    #[test]
    fn a_label_file_of_another_size_is_refused_and_left_alone() {
        let p = temp("size");
        let lp = label_path(&p);
        std::fs::write(&lp, [5u8; 100]).unwrap();
        let e = Labels::open(0, &spec(&format!("2M,file={},label-size=128K", p.display()))).unwrap_err();
        assert!(e.to_string().contains("is 100 bytes"), "{e}");
        assert_eq!(std::fs::read(&lp).unwrap(), [5u8; 100]);
        std::fs::remove_file(&lp).unwrap();
    }

    #[test]
    fn share_off_reads_the_label_file_and_never_writes_it() {
        let p = temp("private");
        let lp = label_path(&p);
        let s = spec(&format!("2M,file={},label-size=128K,share=off", p.display()));
        let mut fresh = Labels::open(0, &s).unwrap().unwrap();
        assert!(!lp.exists(), "share=off creates no label file");
        fresh.write(0, b"x").unwrap();
        let mut bytes = vec![0u8; 128 << 10];
        bytes[..4].copy_from_slice(b"disk");
        std::fs::write(&lp, &bytes).unwrap();
        let mut l = Labels::open(0, &s).unwrap().unwrap();
        let mut buf = [0u8; 4];
        l.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"disk");
        l.write(0, b"gone").unwrap();
        assert_eq!(std::fs::read(&lp).unwrap(), bytes, "the guest's label writes are discarded");
        std::fs::remove_file(&lp).unwrap();
    }

    #[test]
    fn label_dsm_reaches_the_mailbox_area() {
        let on = Labels::open(0, &spec("2M,label-size=128K")).unwrap().unwrap().area(1);
        assert_eq!((on.handle, on.dsm, on.store.size()), (1, true, 128 << 10));
        let off = Labels::open(0, &spec("2M,label-size=256K,label-dsm=off")).unwrap().unwrap().area(3);
        assert_eq!((off.handle, off.dsm, off.store.size()), (3, false, 256 << 10));
    }

    #[test]
    fn a_memory_area_starts_zeroed() {
        let mut l = Labels::open(0, &spec("2M,label-size=128K")).unwrap().unwrap();
        let mut buf = [1u8; 16];
        l.read((128 << 10) - 16, &mut buf).unwrap();
        assert_eq!(buf, [0; 16]);
        assert_eq!(l.size(), 128 << 10);
    }
}
