//! The `--pmem` specification: size, backing file and host page policy of one emulated NVDIMM.

use std::path::PathBuf;

use thiserror::Error;

use crate::units::{format_size, parse_size, UnitError, GIB, MIB};

/// How the host backs a pmem region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// hugetlb 2M if the pool can hold it, else shared memory with transparent huge pages.
    Auto,
    /// memfd with MFD_HUGETLB, 2 MiB pages.
    Hugetlb2M,
    /// memfd with MFD_HUGETLB, 1 GiB pages.
    Hugetlb1G,
    /// Shared memory advised with MADV_HUGEPAGE.
    Thp,
    /// Plain shared memory, 4 KiB pages.
    Anon,
}

/// How the guest sees a pmem region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmemKind {
    /// An ACPI NFIT NVDIMM (the default).
    Nfit,
    /// A legacy persistent-memory range in the e820 map (type 12, what `memmap=nn!ss` makes), on
    /// Linux's "e820" nvdimm bus.
    E820,
    /// A virtio-pmem device on virtio-mmio: its flush requests make the backing file durable.
    Virtio,
}

/// One `--pmem` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmemSpec {
    /// Region size in bytes, a multiple of 2 MiB (1 GiB with 1 GiB pages).
    pub size: u64,
    /// A file to map, so the contents outlive daxvmm.
    pub file: Option<PathBuf>,
    /// Host page policy.
    pub backing: Backing,
    /// Map shared (writes reach the file); defaults to on.
    pub share: bool,
    /// Touch every page before the guest starts.
    pub prefault: bool,
    /// Allow changing the size of an existing file to `size`.
    pub resize: bool,
    /// Guest-physical address; by default regions go above RAM and 4 GiB, 1 GiB aligned.
    pub addr: Option<u64>,
    /// `type=nfit|e820|virtio`.
    pub kind: PmemKind,
    /// `label-size=N`: a namespace label area of N bytes beside the region (see super::labels).
    pub label_size: Option<u32>,
    /// `label-dsm=on|off` (on unless given, and only given with `label-size=`): whether the DIMM's `_DSM`
    /// offers the label functions as well as the ACPI label methods `_LSI`/`_LSR`/`_LSW`.
    pub label_dsm: bool,
    /// `poison=OFFSET+LEN[:OFFSET+LEN...]`: ranges (offset in the region, length) poisoned from the start,
    /// as if injected (see daxvmm_devices::nvdimm_ars).
    pub poison: Vec<(u64, u64)>,
}

/// The granularity of `poison=` ranges: Linux's sector, which its badblocks count in.
pub const POISON_UNIT: u64 = 512;

/// The smallest label area (QEMU's rule: room for the two index blocks and a useful number of labels).
pub const MIN_LABEL_SIZE: u64 = 128 * 1024;
/// The largest label area daxvmm serves (far more labels than a region can have namespaces).
pub const MAX_LABEL_SIZE: u64 = 16 * MIB;

/// A `--pmem` argument that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PmemSpecError {
    /// The size did not parse.
    #[error(transparent)]
    Size(#[from] UnitError),
    /// Zero, or not a multiple of the alignment the guest and host page size need.
    #[error("pmem size {size} must be a non-zero multiple of {align}")]
    Alignment {
        /// Size given.
        size: String,
        /// Alignment needed.
        align: String,
    },
    /// An option we do not know.
    #[error("unknown pmem option '{0}' (known: file=, backing=, share=, prefault=, resize=, addr=, type=, label-size=, label-dsm=, poison=)")]
    UnknownOption(String),
    /// An option with a value we do not know.
    #[error("pmem option {key}={value}: expected {expected}")]
    BadValue {
        /// Option name.
        key: String,
        /// Value given.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
}

fn parse_addr(value: &str) -> Result<u64, PmemSpecError> {
    let parsed = match value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => parse_size(value).ok(),
    };
    parsed.ok_or_else(|| PmemSpecError::BadValue {
        key: "addr".into(),
        value: value.into(),
        expected: "a guest-physical address (0x... or a size like 8G)",
    })
}

/// `OFFSET+LEN[:OFFSET+LEN...]`, each a non-empty multiple of [`POISON_UNIT`] (sizes may have a K/M/G
/// suffix); whether they fit the region is checked once its size is known.
fn parse_poison(value: &str) -> Result<Vec<(u64, u64)>, PmemSpecError> {
    let bad = || PmemSpecError::BadValue {
        key: "poison".into(),
        value: value.into(),
        expected: "ranges OFFSET+LENGTH separated by ':', multiples of 512 (e.g. 21504+4K:1M+512)",
    };
    let ranges = value
        .split(':')
        .map(|r| {
            let (off, len) = r.split_once('+')?;
            let (off, len) = (parse_size(off).ok()?, parse_size(len).ok()?);
            let ok = len > 0 && off % POISON_UNIT == 0 && len % POISON_UNIT == 0;
            ok.then_some((off, len))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(bad)?;
    if ranges.len() > daxvmm_devices::nvdimm_ars::MAX_POISON {
        return Err(bad());
    }
    Ok(ranges)
}

fn on_off(key: &str, value: &str) -> Result<bool, PmemSpecError> {
    match value {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(PmemSpecError::BadValue { key: key.into(), value: value.into(), expected: "on or off" }),
    }
}

impl PmemSpec {
    /// Parses `SIZE[,file=PATH][,backing=...][,share=on|off][,prefault=on|off][,resize=on|off][,addr=GPA]
    /// [,type=nfit|e820|virtio][,label-size=N[,label-dsm=on|off]][,poison=OFFSET+LEN[:...]]`.
    pub fn parse(s: &str) -> Result<Self, PmemSpecError> {
        let mut parts = s.split(',');
        let size = parse_size(parts.next().unwrap_or_default())?;
        let mut spec = PmemSpec {
            size,
            file: None,
            backing: Backing::Auto,
            share: true,
            prefault: false,
            resize: false,
            addr: None,
            kind: PmemKind::Nfit,
            label_size: None,
            label_dsm: true,
            poison: Vec::new(),
        };
        // Given or not: it is refused without a label area.
        let mut label_dsm: Option<&str> = None;
        for opt in parts {
            let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
            match key {
                "file" if !value.is_empty() => spec.file = Some(PathBuf::from(value)),
                "backing" => {
                    spec.backing = match value {
                        "auto" => Backing::Auto,
                        "hugetlb-2m" | "hugetlb" => Backing::Hugetlb2M,
                        "hugetlb-1g" => Backing::Hugetlb1G,
                        "thp" => Backing::Thp,
                        "anon" => Backing::Anon,
                        _ => {
                            return Err(PmemSpecError::BadValue {
                                key: key.into(),
                                value: value.into(),
                                expected: "auto, hugetlb-2m, hugetlb-1g, thp or anon",
                            })
                        }
                    }
                }
                "share" => spec.share = on_off(key, value)?,
                "prefault" => spec.prefault = on_off(key, value)?,
                "resize" => spec.resize = on_off(key, value)?,
                "addr" => spec.addr = Some(parse_addr(value)?),
                "type" => {
                    spec.kind = match value {
                        "nfit" => PmemKind::Nfit,
                        "e820" => PmemKind::E820,
                        "virtio" => PmemKind::Virtio,
                        _ => return Err(PmemSpecError::BadValue {
                            key: key.into(),
                            value: value.into(),
                            expected: "nfit (an ACPI NFIT NVDIMM, the default), e820 (a legacy e820 pmem range) or virtio (virtio-pmem)",
                        }),
                    }
                }
                "label-size" => {
                    let n = parse_size(value).ok().filter(|n| (MIN_LABEL_SIZE..=MAX_LABEL_SIZE).contains(n));
                    let Some(n) = n else {
                        return Err(PmemSpecError::BadValue {
                            key: key.into(),
                            value: value.into(),
                            expected: "a size from 128K to 16M (leave it out for a label-less NVDIMM)",
                        });
                    };
                    spec.label_size = Some(n as u32);
                }
                "label-dsm" => {
                    spec.label_dsm = on_off(key, value)?;
                    label_dsm = Some(value);
                }
                "poison" => spec.poison = parse_poison(value)?,
                _ => return Err(PmemSpecError::UnknownOption(opt.to_string())),
            }
        }
        if spec.kind != PmemKind::Nfit && spec.label_size.is_some() {
            return Err(PmemSpecError::BadValue {
                key: "label-size".into(),
                value: spec.label_size.unwrap_or_default().to_string(),
                expected: "no label-size with type=e820 or type=virtio (only an NFIT NVDIMM has labels)",
            });
        }
        if let (Some(value), None) = (label_dsm, spec.label_size) {
            return Err(PmemSpecError::BadValue {
                key: "label-dsm".into(),
                value: value.into(),
                expected: "label-size=N too (128K to 16M), since label-dsm says how the label area is served",
            });
        }
        if spec.kind != PmemKind::Nfit && !spec.poison.is_empty() {
            return Err(PmemSpecError::BadValue {
                key: "poison".into(),
                value: format!("{} range(s)", spec.poison.len()),
                expected: "no poison with type=e820 or type=virtio (only the NFIT's scrub reports it)",
            });
        }
        if let Some(&(off, len)) =
            spec.poison.iter().find(|&&(o, l)| o.checked_add(l).is_none_or(|e| e > spec.size))
        {
            return Err(PmemSpecError::BadValue {
                key: "poison".into(),
                value: format!("{off}+{len}"),
                expected: "ranges inside the region",
            });
        }
        let align = if spec.backing == Backing::Hugetlb1G { GIB } else { 2 * MIB };
        if spec.size == 0 || !spec.size.is_multiple_of(align) {
            return Err(PmemSpecError::Alignment { size: format_size(spec.size), align: format_size(align) });
        }
        Ok(spec)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_spec() {
        let s = PmemSpec::parse("16G,file=/tmp/p.img,backing=hugetlb-1g,share=off,prefault=on").unwrap();
        assert_eq!(s.size, 16 * GIB);
        assert_eq!(s.file.as_deref(), Some(std::path::Path::new("/tmp/p.img")));
        assert_eq!(s.backing, Backing::Hugetlb1G);
        assert!(!s.share && s.prefault && !s.resize);
        assert_eq!(PmemSpec::parse("2M,addr=0x200000000").unwrap().addr, Some(8 * GIB));
        assert_eq!(PmemSpec::parse("2M,addr=8G").unwrap().addr, Some(8 * GIB));
        assert!(PmemSpec::parse("2M,addr=0xzz").is_err());
        let s = PmemSpec::parse("2M").unwrap();
        assert_eq!((s.size, s.backing, s.share, s.kind), (2 * MIB, Backing::Auto, true, PmemKind::Nfit));
        assert_eq!(PmemSpec::parse("2M,type=e820").unwrap().kind, PmemKind::E820);
        assert_eq!(PmemSpec::parse("2M,type=nfit").unwrap().kind, PmemKind::Nfit);
        assert_eq!(PmemSpec::parse("2M,type=virtio").unwrap().kind, PmemKind::Virtio);
        assert_eq!(PmemSpec::parse("2M").unwrap().kind, PmemKind::Nfit);
        assert_eq!(PmemSpec::parse("2M,label-size=128K").unwrap().label_size, Some(128 << 10));
        assert_eq!(PmemSpec::parse("2M,label-size=16M").unwrap().label_size, Some(16 << 20));
        assert_eq!(s.label_size, None);
    }

    #[test]
    fn rejects_bad_specs() {
        assert!(matches!(PmemSpec::parse("3M"), Err(PmemSpecError::Alignment { .. })));
        assert!(matches!(PmemSpec::parse("0"), Err(PmemSpecError::Alignment { .. })));
        assert!(matches!(PmemSpec::parse("512M,backing=hugetlb-1g"), Err(PmemSpecError::Alignment { .. })));
        assert!(matches!(PmemSpec::parse("1G,color=red"), Err(PmemSpecError::UnknownOption(_))));
        assert!(matches!(PmemSpec::parse("1G,backing=fast"), Err(PmemSpecError::BadValue { .. })));
        assert!(matches!(PmemSpec::parse("1G,share=maybe"), Err(PmemSpecError::BadValue { .. })));
        assert!(matches!(PmemSpec::parse("1G,type=pci"), Err(PmemSpecError::BadValue { .. })));
        assert!(PmemSpec::parse("2M,type=virtio,label-size=128K").is_err());
        assert!(PmemSpec::parse("2M,type=virtio,poison=0+512").is_err());
        assert!(matches!(PmemSpec::parse("1G,file="), Err(PmemSpecError::UnknownOption(_))));
        assert!(matches!(PmemSpec::parse("lots"), Err(PmemSpecError::Size(_))));
        for bad in ["2M,label-size=64K", "2M,label-size=17M", "2M,label-size=", "2M,label-size=x"] {
            assert!(matches!(PmemSpec::parse(bad), Err(PmemSpecError::BadValue { .. })), "{bad}");
        }
        let p = PmemSpec::parse("1G,poison=21504+4K:1M+512").unwrap();
        assert_eq!(p.poison, [(21504, 4096), (1 << 20, 512)]);
        assert!(PmemSpec::parse("2M").unwrap().poison.is_empty());
        for bad in [
            "2M,poison=",
            "2M,poison=1+512",
            "2M,poison=0+0",
            "2M,poison=0+100",
            "2M,poison=2M+512",
            "2M,poison=1M+2M",
            "2M,poison=0+512:",
            "2M,poison=x+512",
            "2M,type=e820,poison=0+512",
        ] {
            let e = PmemSpec::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("pmem option poison="), "{bad}: {e}");
        }
        let many = (0..129).map(|i| format!("{}+512", i * 1024)).collect::<Vec<_>>().join(":");
        assert!(PmemSpec::parse(&format!("1G,poison={many}")).is_err(), "over 128 ranges");
        let e = PmemSpec::parse("2M,type=e820,label-size=128K").unwrap_err().to_string();
        assert!(e.contains("type=e820"), "{e}");
    }

    #[test]
    fn label_dsm_says_whether_the_dsm_serves_the_labels_too() {
        assert!(PmemSpec::parse("2M,label-size=128K").unwrap().label_dsm, "on by default");
        assert!(PmemSpec::parse("2M").unwrap().label_dsm, "on by default, and unused, without labels");
        assert!(PmemSpec::parse("2M,label-size=128K,label-dsm=on").unwrap().label_dsm);
        let off = PmemSpec::parse("1G,label-dsm=off,label-size=128K").unwrap();
        assert_eq!((off.label_dsm, off.label_size), (false, Some(128 << 10)), "in either order");
        for value in ["on", "off"] {
            let e = PmemSpec::parse(&format!("2M,label-dsm={value}")).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "pmem option label-dsm={value}: expected label-size=N too (128K to 16M), since label-dsm says how the label area is served"
                )
            );
        }
        let e = PmemSpec::parse("2M,type=e820,label-dsm=off").unwrap_err().to_string();
        assert!(e.starts_with("pmem option label-dsm=off"), "{e}");
        for bad in [
            "2M,label-size=128K,label-dsm=",
            "2M,label-size=128K,label-dsm=maybe",
            "2M,label-size=128K,label-dsm",
        ] {
            let e = PmemSpec::parse(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("pmem option label-dsm=") && e.ends_with("expected on or off"),
                "{bad}: {e}"
            );
        }
        let e = PmemSpec::parse("2M,label_dsm=off").unwrap_err().to_string();
        assert!(e.contains("label-dsm="), "the known options list it: {e}");
    }
}
