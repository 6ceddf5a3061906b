//! Argument parsing for `daxvmm-guest`: which port to write and which byte.

use std::fmt;

/// Debug port: boot marker (a byte write is a progress code).
pub const MARKER_PORT: u16 = 0x06F0;
/// Debug port: guest exit status.
pub const STATUS_PORT: u16 = 0x06F1;

/// Usage text printed for `--help` and after usage errors.
pub const USAGE: &str =
    "usage: daxvmm-guest marker CODE        write CODE (0..=255) to the boot-marker port 0x6F0
       daxvmm-guest status N          write N (0..=255) to the exit-status port 0x6F1
       daxvmm-guest flood PORT [BYTE] write BYTE (default 0x55) to PORT (0..=0xffff) until killed:
                                      a hostile guest, for testing that the VMM stays in control
numbers are decimal or 0x-prefixed hex; needs root (port I/O)";

/// A parsed `daxvmm-guest` invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `marker CODE`: a boot progress code for port 0x6F0.
    Marker(u8),
    /// `status N`: the guest's exit status for port 0x6F1.
    Status(u8),
    /// `flood PORT BYTE`: write BYTE to PORT forever.
    Flood(u16, u8),
    /// `-h` / `--help`.
    Help,
}

impl Command {
    /// The port and byte this command writes, or `None` for `Help`.
    pub fn port_write(self) -> Option<(u16, u8)> {
        match self {
            Command::Marker(v) => Some((MARKER_PORT, v)),
            Command::Status(v) => Some((STATUS_PORT, v)),
            Command::Flood(port, v) => Some((port, v)),
            Command::Help => None,
        }
    }
}

/// A command-line usage error, with a message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Parses the arguments after the program name.
pub fn parse_args<S: AsRef<str>>(args: &[S]) -> Result<Command, UsageError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    match args.as_slice() {
        [] => Err(UsageError("missing subcommand (marker or status)".into())),
        ["-h" | "--help" | "help"] => Ok(Command::Help),
        ["marker", code] => parse_byte("CODE", code).map(Command::Marker),
        ["status", n] => parse_byte("N", n).map(Command::Status),
        ["flood", port] => Ok(Command::Flood(parse_port(port)?, 0x55)),
        ["flood", port, byte] => Ok(Command::Flood(parse_port(port)?, parse_byte("BYTE", byte)?)),
        ["flood"] => Err(UsageError("'flood' needs a PORT".into())),
        ["flood", ..] => {
            Err(UsageError(format!("'flood' takes PORT [BYTE], got {} arguments", args.len() - 1)))
        }
        ["marker" | "status"] => Err(UsageError(format!("'{}' needs exactly one number", args[0]))),
        ["marker" | "status", ..] => {
            Err(UsageError(format!("'{}' takes one number, got {} arguments", args[0], args.len() - 1)))
        }
        [other, ..] => {
            Err(UsageError(format!("unknown subcommand '{other}' (expected marker, status or flood)")))
        }
    }
}

/// Parses a byte given in decimal or as `0x`-prefixed hex.
pub fn parse_byte(what: &str, text: &str) -> Result<u8, UsageError> {
    parse_number(what, text, 255).map(|v| v as u8)
}

/// Parses an I/O port number given in decimal or as `0x`-prefixed hex.
fn parse_port(text: &str) -> Result<u16, UsageError> {
    parse_number("PORT", text, 0xffff).map(|v| v as u16)
}

/// A number from 0 to `max`, decimal or `0x`-prefixed hex; `what` names it in the error.
fn parse_number(what: &str, text: &str, max: u32) -> Result<u32, UsageError> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    let bad =
        || UsageError(format!("{what} must be a number from 0 to {max} (decimal or 0x hex), got '{text}'"));
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad());
    }
    // Digits only, so the only possible error is overflow; any value above `max` is reported the same way.
    u32::from_str_radix(digits, radix).ok().filter(|&v| v <= max).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_and_status_parse() {
        assert_eq!(parse_args(&["marker", "1"]), Ok(Command::Marker(1)));
        assert_eq!(parse_args(&["status", "0"]), Ok(Command::Status(0)));
        assert_eq!(parse_args(&["status", "255"]), Ok(Command::Status(255)));
        assert_eq!(parse_args(&["marker", "0x7f"]), Ok(Command::Marker(0x7f)));
        assert_eq!(parse_args(&["marker", "0XFF"]), Ok(Command::Marker(0xff)));
        assert_eq!(parse_args(&["--help"]), Ok(Command::Help));
    }

    #[test]
    fn port_writes_go_to_the_contract_ports() {
        assert_eq!(Command::Marker(1).port_write(), Some((0x6F0, 1)));
        assert_eq!(Command::Status(7).port_write(), Some((0x6F1, 7)));
        assert_eq!(Command::Flood(0x3f8, 0x41).port_write(), Some((0x3F8, 0x41)));
        assert_eq!(Command::Help.port_write(), None);
    }

    #[test]
    fn bad_numbers_are_rejected() {
        for bad in ["256", "-1", "", "0x", "0x100", "1.5", "seven", " 1", "+1", "99999999999999999999"] {
            let err = parse_args(&["status", bad]).expect_err(bad);
            assert!(err.0.contains("0 to 255"), "{bad}: {err}");
            assert!(err.0.contains(&format!("'{bad}'")), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_shapes_are_rejected() {
        assert!(parse_args::<&str>(&[]).is_err());
        assert!(parse_args(&["marker"]).expect_err("no number").0.contains("exactly one"));
        assert!(parse_args(&["status", "1", "2"]).expect_err("two numbers").0.contains("2 arguments"));
        assert!(parse_args(&["poke", "1"]).expect_err("unknown").0.contains("unknown subcommand 'poke'"));
        assert!(parse_args(&["flood"]).expect_err("no port").0.contains("needs a PORT"));
        assert!(parse_args(&["flood", "0x10000"]).expect_err("port too big").0.contains("0 to 65535"));
        assert!(parse_args(&["flood", "1", "2", "3"]).expect_err("three").0.contains("3 arguments"));
    }

    #[test]
    fn flood_takes_a_port_and_an_optional_byte() {
        assert_eq!(parse_args(&["flood", "0x6f0"]), Ok(Command::Flood(0x6f0, 0x55)));
        assert_eq!(parse_args(&["flood", "1016", "0x41"]), Ok(Command::Flood(1016, 0x41)));
        assert_eq!(parse_args(&["flood", "65535", "255"]), Ok(Command::Flood(0xffff, 255)));
    }
}
