//! The marker protocol of the test host VM's console, defined once. The VM's /init
//! (images/test-host-init, a shell script) prints the case and batch markers; a unit test below checks
//! that it uses exactly these strings. Everything that reads a console ([`crate::console`], the
//! `test-host-vm` and `bench` binaries, [`crate::batch_file`] running a batch here) goes through this
//! module.
//!
//! ```text
//! @@DAXVMM-CASE-BEGIN NAME@@
//! ...the case's output...
//! @@DAXVMM-CASE-END NAME rc=N@@
//! @@DAXVMM-BATCH-DONE@@            (or @@DAXVMM-NO-KVM reason@@ when KVM could not be set up)
//! @@DAXVMM-L1-STALL@@              (added by the host side when it killed a silent VM)
//! ```

/// What every marker starts with.
pub const PREFIX: &str = "@@DAXVMM-";
/// What every marker ends with.
pub const CLOSE: &str = "@@";
/// Opens a case: `CASE_BEGIN NAME CLOSE`.
pub const CASE_BEGIN: &str = "@@DAXVMM-CASE-BEGIN ";
/// Closes a case: `CASE_END NAME rc=N CLOSE`.
pub const CASE_END: &str = "@@DAXVMM-CASE-END ";
/// Between the case name and its exit status in [`CASE_END`].
pub const RC: &str = " rc=";
/// Every case of the batch ran.
pub const BATCH_DONE: &str = "@@DAXVMM-BATCH-DONE@@";
/// KVM could not be set up: `NO_KVM reason CLOSE`.
pub const NO_KVM: &str = "@@DAXVMM-NO-KVM ";
/// Printed on the host side when the stall watchdog killed the VM.
pub const L1_STALL: &str = "@@DAXVMM-L1-STALL@@";
/// The prefix of the VM's /init's own messages (timings, stuck-case dumps).
pub const L1_LOG: &str = "daxvmm-l1:";
/// The prefix of the host side's diagnostics (CPU registers at a stall or reset, QEMU thread states).
pub const L1_HOST_LOG: &str = "daxvmm-l1-host:";

/// The line that opens case `name`.
pub fn begin(name: &str) -> String {
    format!("{CASE_BEGIN}{name}{CLOSE}")
}

/// The line that closes case `name` with exit status `rc`.
pub fn end(name: &str, rc: i32) -> String {
    format!("{CASE_END}{name}{RC}{rc}{CLOSE}")
}

/// One parsed marker (the text after it on its line is not part of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker<'a> {
    /// A case began.
    Begin(&'a str),
    /// A case ended with this exit status.
    End(&'a str, i32),
    /// The batch is done.
    Done,
    /// KVM could not be set up, for this reason.
    NoKvm(&'a str),
    /// The host side killed a silent VM.
    Stall,
}

/// Parses a marker that makes up all of `s` (a line from [`PREFIX`] on, without its line end); `None`
/// for anything else, which is then ordinary output.
pub fn parse(s: &str) -> Option<Marker<'_>> {
    if let Some(rest) = s.strip_prefix(CASE_BEGIN) {
        let name = rest.strip_suffix(CLOSE)?;
        return (!name.is_empty() && !name.contains(' ')).then_some(Marker::Begin(name));
    }
    if let Some(rest) = s.strip_prefix(CASE_END) {
        let (name, rc) = rest.strip_suffix(CLOSE)?.rsplit_once(RC)?;
        return Some(Marker::End(name, rc.parse().ok()?));
    }
    if s.starts_with(BATCH_DONE) {
        return Some(Marker::Done);
    }
    if s.starts_with(L1_STALL) {
        return Some(Marker::Stall);
    }
    let reason = s.strip_prefix(NO_KVM.trim_end()).map(|r| r.trim_end_matches('@').trim())?;
    Some(Marker::NoKvm(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        assert_eq!(parse(&begin("one_vcpu")), Some(Marker::Begin("one_vcpu")));
        assert_eq!(parse(&end("a", 137)), Some(Marker::End("a", 137)));
        assert_eq!(parse(&end("a", -1)), Some(Marker::End("a", -1)));
        assert_eq!(parse(BATCH_DONE), Some(Marker::Done));
        assert_eq!(parse(L1_STALL), Some(Marker::Stall));
        assert_eq!(
            parse("@@DAXVMM-NO-KVM insmod kvm-amd.ko failed@@"),
            Some(Marker::NoKvm("insmod kvm-amd.ko failed"))
        );
        assert_eq!(parse("@@DAXVMM-CASE-END x rc=1"), None);
        assert_eq!(parse("@@DAXVMM-CASE-END x rc=@@"), None);
        assert_eq!(parse("@@DAXVMM-CASE-BEGIN two words@@"), None);
        assert_eq!(parse("@@DAXVMM-SOMETHING@@"), None);
    }

    /// The VM's /init is a shell script: it must print exactly these markers, and no others.
    #[test]
    fn the_test_host_init_prints_exactly_these_markers() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../images/test-host-init");
        let init = std::fs::read_to_string(path).expect("images/test-host-init is readable");
        let code: Vec<&str> = init.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
        let code = code.join("\n");
        // The shell forms of begin(), end(), BATCH_DONE and NO_KVM: each used once.
        let expected = [
            format!("echo \"{CASE_BEGIN}$name{CLOSE}\""),
            format!("printf '\\n{CASE_END}%s{RC}%d{CLOSE}\\n' \"$name\" \"$rc\""),
            format!("echo \"{BATCH_DONE}\""),
            format!("echo \"{NO_KVM}$*{CLOSE}\""),
        ];
        for e in &expected {
            assert_eq!(code.matches(e.as_str()).count(), 1, "images/test-host-init must contain `{e}` once");
        }
        assert_eq!(
            code.matches(PREFIX).count(),
            expected.len(),
            "images/test-host-init prints other markers"
        );
        assert!(code.contains(&format!("\"{L1_LOG} ")), "its own messages start with {L1_LOG}");
    }
}
