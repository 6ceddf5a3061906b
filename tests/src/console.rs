//! Parsing the test host VM's console into per-case results, by the markers of [`crate::markers`].
//! Lines are fed with the time they arrived, so each case's wall time is measured on this host.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::markers::{self, Marker};

/// One finished case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseLog {
    /// The command's exit status inside the test host VM.
    pub exit_code: i32,
    /// The lines between its markers, `\n`-separated, without `\r`.
    pub console: String,
    /// Host time between its two markers.
    pub wall: Duration,
}

/// The state of a console read so far.
#[derive(Debug, Default)]
pub struct ConsoleParser {
    current: Option<(String, Duration, String)>,
    /// Finished cases by name.
    pub finished: BTreeMap<String, CaseLog>,
    /// The case that began but has not ended (if the run stopped, the one that hung), with its output.
    pub unfinished: Option<(String, String)>,
    /// `@@DAXVMM-BATCH-DONE@@` was seen.
    pub done: bool,
    /// The reason of `@@DAXVMM-NO-KVM reason@@`, if seen.
    pub no_kvm: Option<String>,
    /// `@@DAXVMM-L1-STALL@@` was seen (the host side killed the silent VM).
    pub stalled: bool,
    /// Lines seen outside any case (boot messages), the last 40.
    pub outside: Vec<String>,
}

impl ConsoleParser {
    /// A parser with nothing read.
    pub fn new() -> ConsoleParser {
        ConsoleParser::default()
    }

    /// Feeds one console line that arrived `at` after the run started; returns the name of the case that
    /// this line finished, if any.
    pub fn feed(&mut self, line: &str, at: Duration) -> Option<String> {
        let line = line.trim_end_matches(['\r', '\n']).replace('\r', "");
        let Some(pos) = line.find(markers::PREFIX) else {
            self.text(&line);
            return None;
        };
        // A marker can follow output that lacked a newline; that output belongs before it.
        if pos > 0 {
            self.text(&line[..pos]);
        }
        let marker = &line[pos..];
        match markers::parse(marker) {
            Some(Marker::Begin(name)) => {
                self.current = Some((name.to_string(), at, String::new()));
                self.unfinished = Some((name.to_string(), String::new()));
                return None;
            }
            Some(Marker::End(name, rc)) if matches!(&self.current, Some((cur, _, _)) if cur == name) => {
                let (cur, start, console) = self.current.take()?;
                self.unfinished = None;
                let wall = at.saturating_sub(start);
                self.finished.insert(cur.clone(), CaseLog { exit_code: rc, console, wall });
                return Some(cur);
            }
            Some(Marker::Done) => {
                self.done = true;
                return None;
            }
            Some(Marker::NoKvm(reason)) => {
                self.no_kvm = Some(reason.to_string());
                return None;
            }
            Some(Marker::Stall) => {
                self.stalled = true;
                return None;
            }
            Some(Marker::End(..)) | None => {}
        }
        // Not a well-formed marker: keep it as output.
        self.text(marker);
        None
    }

    fn text(&mut self, text: &str) {
        match (&mut self.current, &mut self.unfinished) {
            (Some((_, _, console)), Some((_, copy))) => {
                console.push_str(text);
                console.push('\n');
                copy.push_str(text);
                copy.push('\n');
            }
            _ => {
                self.outside.push(text.to_string());
                if self.outside.len() > 40 {
                    self.outside.remove(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(lines: &[&str]) -> ConsoleParser {
        feed_all_ended(lines).0
    }

    /// Also returns the names `feed` reported as finished, in order.
    fn feed_all_ended(lines: &[&str]) -> (ConsoleParser, Vec<String>) {
        let mut p = ConsoleParser::new();
        let mut ended = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            ended.extend(p.feed(l, Duration::from_secs(i as u64)));
        }
        (p, ended)
    }

    #[test]
    fn cases_are_split_by_their_markers() {
        let (p, ended) = feed_all_ended(&[
            "SeaBIOS ...",
            "daxvmm-l1: KVM ready after 3.6s",
            "@@DAXVMM-CASE-BEGIN one_vcpu@@\r",
            "daxvmm-guest: init reached\r",
            "0\r",
            "@@DAXVMM-CASE-END one_vcpu rc=0@@\r",
            "@@DAXVMM-CASE-BEGIN panic@@",
            "Kernel panic - not syncing: sysrq triggered crash",
            "",
            "",
            "@@DAXVMM-CASE-END panic rc=3@@",
            "@@DAXVMM-BATCH-DONE@@",
        ]);
        assert!(p.done);
        assert_eq!(ended, ["one_vcpu", "panic"]);
        assert_eq!(p.no_kvm, None);
        assert_eq!(p.unfinished, None);
        let one = &p.finished["one_vcpu"];
        assert_eq!(one.exit_code, 0);
        assert_eq!(one.console, "daxvmm-guest: init reached\n0\n");
        assert_eq!(one.wall, Duration::from_secs(3));
        let panic = &p.finished["panic"];
        assert_eq!(panic.exit_code, 3);
        assert!(panic.console.starts_with("Kernel panic"));
        assert_eq!(p.outside, ["SeaBIOS ...", "daxvmm-l1: KVM ready after 3.6s"]);
    }

    #[test]
    fn a_marker_after_unterminated_output_still_counts() {
        let p = feed_all(&[
            "@@DAXVMM-CASE-BEGIN a@@",
            "no newline here@@DAXVMM-CASE-END a rc=6@@",
            "[    3.7] reboot: Power down@@DAXVMM-BATCH-DONE@@",
        ]);
        assert_eq!(p.finished["a"].exit_code, 6);
        assert_eq!(p.finished["a"].console, "no newline here\n");
        assert!(p.done);
    }

    #[test]
    fn a_run_that_stops_mid_case_leaves_it_unfinished() {
        let p = feed_all(&[
            "@@DAXVMM-CASE-BEGIN ok@@",
            "@@DAXVMM-CASE-END ok rc=0@@",
            "@@DAXVMM-CASE-BEGIN hang@@",
            "booting",
        ]);
        assert!(!p.done);
        assert_eq!(p.finished.len(), 1);
        assert_eq!(p.unfinished, Some(("hang".to_string(), "booting\n".to_string())));
    }

    #[test]
    fn no_kvm_reason_is_captured() {
        let p = feed_all(&["@@DAXVMM-NO-KVM insmod kvm-amd.ko failed@@"]);
        assert_eq!(p.no_kvm.as_deref(), Some("insmod kvm-amd.ko failed"));
        assert!(!p.done);
    }

    #[test]
    fn malformed_or_mismatched_markers_are_output() {
        let (p, ended) = feed_all_ended(&[
            "@@DAXVMM-CASE-BEGIN a@@",
            "@@DAXVMM-CASE-END b rc=0@@",
            "@@DAXVMM-CASE-END a rc=x@@",
            "@@DAXVMM-CASE-END a rc=-1@@",
        ]);
        assert_eq!(ended, ["a"]);
        assert_eq!(p.finished["a"].exit_code, -1);
        assert_eq!(p.finished["a"].console, "@@DAXVMM-CASE-END b rc=0@@\n@@DAXVMM-CASE-END a rc=x@@\n");
    }
}
