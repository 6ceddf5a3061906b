//! `ndctl list` output from two VMMs' guests, compared field by field: each listing is flattened into
//! `path = value` pairs, with array elements named by their `dev` (or `dimm`) field rather than their
//! position, since the kernel's enumeration order is not part of the platform. A difference is either
//! explained by one of the caller's [`Justification`]s or reported.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// A field that may differ between the VMMs, and why.
#[derive(Debug, Clone, Copy)]
pub struct Justification {
    /// The path's last component (`size`, `persistence_domain`, ...).
    pub field: &'static str,
    /// Restricts it to paths that contain this text (`""`: any path).
    pub within: &'static str,
    /// Why the values differ.
    pub reason: &'static str,
}

impl Justification {
    fn covers(&self, path: &str) -> bool {
        let last = path.rsplit('.').next().unwrap_or(path);
        last == self.field && path.contains(self.within)
    }
}

/// One field whose values differ (`None`: absent on that side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Where it is, e.g. `regions[region0].size`.
    pub path: String,
    /// The first VMM's value.
    pub left: Option<String>,
    /// The second VMM's value.
    pub right: Option<String>,
    /// The justification that explains it, if one does.
    pub reason: Option<&'static str>,
}

/// Why a listing could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The text is not JSON.
    #[error("not JSON ({source}): {text}")]
    Parse {
        /// What was given.
        text: String,
        /// serde_json's reason.
        source: serde_json::Error,
    },
}

/// `text` (one JSON listing) as `path -> value`, values in their JSON spelling.
pub fn flatten(text: &str) -> Result<BTreeMap<String, String>, JsonError> {
    let v: Value =
        serde_json::from_str(text).map_err(|source| JsonError::Parse { text: text.to_string(), source })?;
    let mut out = BTreeMap::new();
    walk(&v, String::new(), &mut out);
    Ok(out)
}

fn walk(v: &Value, path: String, out: &mut BTreeMap<String, String>) {
    let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                walk(child, join(k), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let name = ["dev", "dimm"]
                    .iter()
                    .find_map(|k| item.get(*k).and_then(Value::as_str))
                    .map_or_else(|| i.to_string(), str::to_string);
                walk(item, format!("{path}[{name}]"), out);
            }
        }
        leaf => {
            out.insert(path, leaf.to_string());
        }
    }
}

/// Every field that differs between `left` and `right`, with the justification that covers it.
pub fn compare(
    left: &BTreeMap<String, String>,
    right: &BTreeMap<String, String>,
    justified: &[Justification],
) -> Vec<Difference> {
    let mut paths: Vec<&String> = left.keys().chain(right.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| left.get(*p) != right.get(*p))
        .map(|p| Difference {
            path: p.clone(),
            left: left.get(p).cloned(),
            right: right.get(p).cloned(),
            reason: justified.iter().find(|j| j.covers(p)).map(|j| j.reason),
        })
        .collect()
}

/// The differences as a table: path, both values, and the reason (or UNEXPLAINED).
pub fn table(diffs: &[Difference], left_name: &str, right_name: &str) -> String {
    let mut s = String::new();
    for d in diffs {
        let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "(absent)".to_string());
        let _ = writeln!(
            s,
            "  {}: {left_name} {} | {right_name} {} | {}",
            d.path,
            v(&d.left),
            v(&d.right),
            d.reason.unwrap_or("UNEXPLAINED")
        );
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: &str = r#"{"dimms":[{"dev":"nmem1","handle":"0x2"},{"dev":"nmem0","handle":"0x1"}],
        "regions":[{"dev":"region0","size":536870912,"mappings":[{"dimm":"nmem0","length":"0x20000000"}],
        "persistence_domain":"memory_controller"}]}"#;
    const B: &str = r#"{"dimms":[{"dev":"nmem0","handle":"0x1"},{"dev":"nmem1","handle":"0x2"}],
        "regions":[{"dev":"region0","size":534773760,"mappings":[{"dimm":"nmem0","length":"0x1fe00000"}]}]}"#;

    #[test]
    fn arrays_are_keyed_by_dev_so_order_does_not_matter() {
        let a = flatten(A).unwrap();
        assert_eq!(a.get("dimms[nmem0].handle").map(String::as_str), Some("\"0x1\""));
        assert_eq!(
            a.get("regions[region0].mappings[nmem0].length").map(String::as_str),
            Some("\"0x20000000\"")
        );
        let b = flatten(B).unwrap();
        let d = compare(&a, &b, &[]);
        assert!(d.iter().all(|d| !d.path.starts_with("dimms")), "same DIMMs in another order: {d:?}");
    }

    #[test]
    fn differences_are_listed_with_their_reason_or_unexplained() {
        let why = [Justification { field: "size", within: "regions", reason: "label area" }];
        let d = compare(&flatten(A).unwrap(), &flatten(B).unwrap(), &why);
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "regions[region0].mappings[nmem0].length",
                "regions[region0].persistence_domain",
                "regions[region0].size"
            ]
        );
        assert_eq!(d[2].reason, Some("label area"));
        assert_eq!(d[0].reason, None, "length is not 'size'");
        assert_eq!(d[1].right, None, "absent on the right");
        let t = table(&d, "daxvmm", "qemu");
        assert!(
            t.contains("persistence_domain: daxvmm \"memory_controller\" | qemu (absent) | UNEXPLAINED"),
            "{t}"
        );
    }

    #[test]
    fn bad_json_is_an_error_that_quotes_it() {
        let e = flatten("{\"dimms\":[").unwrap_err();
        assert!(e.to_string().contains("{\"dimms\":["), "{e}");
    }
}
