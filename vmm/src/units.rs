//! Parsing of the sizes and durations users type on the command line ("512M", "16G", "90s").

use std::time::Duration;

use thiserror::Error;

/// A size or duration that could not be understood.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    /// Not a number followed by a known suffix.
    #[error("'{0}' is not a size; use a number with an optional K, M, G or T suffix (e.g. 512M, 16G)")]
    BadSize(String),
    /// The number does not fit in 64 bits once scaled.
    #[error("'{0}' is too large")]
    Overflow(String),
    /// Not a number followed by a known time unit.
    #[error("'{0}' is not a duration; use a number with an optional ms, s, m or h suffix (e.g. 90s, 2m)")]
    BadDuration(String),
    /// A zero duration where something must last.
    #[error("'{0}' is zero; a timeout must be longer than that (e.g. 90s, 2m)")]
    Zero(String),
}

/// KiB, MiB, GiB, TiB as multipliers.
pub const KIB: u64 = 1 << 10;
/// One MiB.
pub const MIB: u64 = 1 << 20;
/// One GiB.
pub const GIB: u64 = 1 << 30;
/// One TiB.
pub const TIB: u64 = 1 << 40;

/// Parses "4096", "64K", "512M", "16G", "1T" (binary multiples; an optional trailing "B"/"iB" is allowed).
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix("ib"))
        .or_else(|| t.strip_suffix(['B', 'b']).filter(|r| r.ends_with(|c: char| c.is_ascii_alphabetic())))
        .unwrap_or(t);
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let mult = match suffix.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => KIB,
        "M" => MIB,
        "G" => GIB,
        "T" => TIB,
        _ => return Err(UnitError::BadSize(s.to_string())),
    };
    let n: u64 = num.parse().map_err(|_| UnitError::BadSize(s.to_string()))?;
    n.checked_mul(mult).ok_or_else(|| UnitError::Overflow(s.to_string()))
}

/// [`parse_duration`] for a timeout or a bound, which must not be zero.
pub fn parse_timeout(s: &str) -> Result<Duration, UnitError> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(UnitError::Zero(s.to_string())),
        d => Ok(d),
    }
}

/// Parses "90", "90s", "1500ms", "2m", "1h" (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| UnitError::BadDuration(s.to_string()))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" | "min" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(UnitError::BadDuration(s.to_string())),
    };
    ms.map(Duration::from_millis).ok_or_else(|| UnitError::Overflow(s.to_string()))
}

/// Formats a byte count the way users wrote it where that is exact ("512M"), else in bytes.
pub fn format_size(bytes: u64) -> String {
    for (mult, suffix) in [(TIB, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")] {
        if bytes >= mult && bytes.is_multiple_of(mult) {
            return format!("{}{suffix}", bytes / mult);
        }
    }
    format!("{bytes}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("16G").unwrap(), 16 << 30);
        assert_eq!(parse_size("16GiB").unwrap(), 16 << 30);
        assert_eq!(parse_size("2GB").unwrap(), 2 << 30);
        assert_eq!(parse_size("100T").unwrap(), 100 << 40);
        for bad in ["", "G", "12Q", "1.5G", "-1G", "0x10", "1 G G", "B"] {
            assert!(matches!(parse_size(bad), Err(UnitError::BadSize(_))), "{bad}");
        }
        assert!(matches!(parse_size("99999999999T"), Err(UnitError::Overflow(_))));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_timeout("2s").unwrap(), Duration::from_secs(2));
        assert!(matches!(parse_timeout("0"), Err(UnitError::Zero(_))));
        assert!(matches!(parse_timeout("0ms"), Err(UnitError::Zero(_))));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "s", "10x", "-3s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(16 << 30), "16G");
        assert_eq!(format_size(1536 << 20), "1536M");
        assert_eq!(format_size(1000), "1000");
    }
}
