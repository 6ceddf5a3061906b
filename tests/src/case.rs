//! A [`Case`]: one VMM run with its arguments, the `{kernel}` and `{initrd}` placeholders that stand for
//! the guest artifacts wherever the case runs, and the line it becomes in a test host VM batch file.

use std::path::Path;

use thiserror::Error;

/// Why a case (or a batch of them) cannot go into a batch file.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CaseError {
    /// The name has characters a batch file's NAME field cannot carry.
    #[error("case name '{name}' may only use letters, digits and _.:-; rename the case")]
    BadName {
        /// The name.
        name: String,
    },
    /// An argument has a TAB or a line break, which would split the case's batch-file line.
    #[error(
        "case {case}: argument '{}' contains a TAB or newline, which a batch file cannot carry; \
         pass it without them",
        arg.escape_debug()
    )]
    BadArgument {
        /// The case.
        case: String,
        /// The argument.
        arg: String,
    },
    /// [`Case::needs`] names a case that does not come before it.
    #[error("case {case} needs {need}, which is not an earlier case of its batch; put {need} before it")]
    UnknownNeed {
        /// The case.
        case: String,
        /// The case it needs.
        need: String,
    },
}

/// Which program a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    /// daxvmm (DAXVMM_BIN; /bin/daxvmm in the test host VM).
    Daxvmm,
    /// qemu-system-x86_64, to validate the harness and guest images against a known-good VMM.
    Qemu,
}

/// One VMM run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Unique within a batch: letters, digits and `_.:-`.
    pub name: String,
    /// The program.
    pub vmm: Vmm,
    /// Its arguments; `{kernel}` and `{initrd}` are replaced by the guest kernel and initramfs paths.
    pub daxvmm_args: Vec<String>,
    /// A shell snippet run right before the VMM, where the VMM runs (the test host VM or this host);
    /// the case fails with its output if it fails. `{tmp}` works here as in the arguments.
    pub setup: Option<String>,
    /// Text typed on the VMM's stdin after a delay (for the guest console's input path).
    pub input: Option<(u64, String)>,
    /// Earlier cases of the batch whose files (under `{tmp}`) this one reads: when either side runs again
    /// in a new test host VM, the other does too ([`rerun_set`]).
    pub needs: Vec<String>,
    /// Whether the case boots a guest (and counts in the boot log); a check of files or of the
    /// command line does not.
    pub boots: bool,
    /// Inside the test host VM only: outputs that mark a fault of the emulation rather than of the code
    /// under test (a guest triple fault under QEMU TCG's nested SVM), besides
    /// [`ALWAYS_EMULATION_FAULTS`]; such a result is set aside and the case runs again in a new test
    /// host VM, as when that VM itself dies.
    pub nested_fault: Vec<String>,
}

/// What daxvmm prints for a guest triple fault. In the test host VM that has come from QEMU TCG's nested
/// SVM (also on the good kernel, on an idle vCPU, and at the same rate as the test host VM's own resets).
pub const TRIPLE_FAULT: &str = "triple fault (KVM_EXIT_SHUTDOWN)";
/// What daxvmm prints when a run timed out a minute or more after any vCPU last exited to it. In the
/// test host VM that has been a guest stopped in mid-boot with its clock frozen and no RCU stall warning
/// (its vCPUs no longer run), which no code in the guest or in daxvmm can cause without an exit.
pub const NO_VCPU_EXIT: &str = "no vCPU exited to daxvmm in the last";
/// What the guest kernel prints when a CPU has not taken the NMI it was sent within 10 s (its RCU stall
/// report asks every stalled CPU for a backtrace). Under KVM an NMI reaches a vCPU whatever its guest is
/// doing, as long as its host runs it; in the test host VM that has been a vCPU that the emulation no
/// longer ran, with no exit to daxvmm for over a minute, while the other vCPU still exited (twice in one
/// CI run, at the same point of the boot, right after another's first fault there).
pub const NMI_UNANSWERED: &str = "still haven't responded to the NMI";
/// What daxvmm prints when a vCPU thread, kicked every millisecond for 10 s at the end of a run, never
/// left KVM_RUN. Under KVM the signal ends KVM_RUN at the vCPU's next exit, and the host's own interrupts
/// force one; in the test host VM that has been the same fault as [`NMI_UNANSWERED`] (a pmem guest of
/// the same CI run). A daxvmm that kicked wrongly would show it in every run, reruns included.
pub const VCPU_NOT_KICKED: &str = "did not leave the guest within";
/// The outputs that mark an emulation fault in every nested case, beside those it names itself
/// ([`Case::rerun_nested_on`]): no test makes any of them on purpose, and a fault of the code under
/// test that makes one makes it again in every rerun, so the case still fails.
pub const ALWAYS_EMULATION_FAULTS: [&str; 3] = [TRIPLE_FAULT, NMI_UNANSWERED, VCPU_NOT_KICKED];
/// What daxvmm logs when it enters a guest's kernel, once per boot.
pub const KERNEL_ENTERED: &str = "entering the guest kernel";
/// What daxvmm logs when that guest's init has started (the init marker on its debug port).
pub const INIT_STARTED: &str = "guest userspace init started";

/// Whether the last guest in `console` went silent for a minute ([`NO_VCPU_EXIT`]) before its init
/// started. A guest kernel between daxvmm's entry and its init exits far more often than that, and no
/// test hangs a boot on purpose; in the test host VM it has been the guest no longer run, its clock
/// frozen, with no RCU stall warning (a mutants case's sequential run, whose mutant is not on the boot
/// path). A kernel that really hung while booting does so in every rerun, so the case still fails.
pub fn stalled_boot(console: &str) -> bool {
    let Some(silent) = console.rfind(NO_VCPU_EXIT) else { return false };
    let before = &console[..silent];
    before.rfind(KERNEL_ENTERED).is_some_and(|boot| !before[boot..].contains(INIT_STARTED))
}

/// What `daxvmm test` and `repro` print when the guest reset before its init started the race program.
/// In the test host VM that has been a guest kernel oops at boot, in code the tests do not touch (an
/// instruction fetched from the middle of a just-patched jump).
pub const RACE_NEVER_STARTED: &str = "daxvmm-race never started (the guest: reset)";

impl Case {
    fn new<S: Into<String>>(name: &str, vmm: Vmm, args: impl IntoIterator<Item = S>) -> Case {
        Case {
            name: name.to_string(),
            vmm,
            daxvmm_args: args.into_iter().map(Into::into).collect(),
            setup: None,
            input: None,
            needs: Vec::new(),
            boots: true,
            nested_fault: Vec::new(),
        }
    }

    /// A daxvmm run.
    pub fn daxvmm<S: Into<String>>(name: &str, args: impl IntoIterator<Item = S>) -> Case {
        Case::new(name, Vmm::Daxvmm, args)
    }

    /// daxvmm booting the guest kernel and initramfs (`{kernel}`, `{initrd}`) with the `extra` arguments,
    /// the kernel command line `cmdline` and daxvmm's own `--timeout`.
    pub fn guest(name: &str, extra: &[&str], cmdline: &str, timeout: &str) -> Case {
        let mut args = vec!["--kernel", "{kernel}", "--initrd", "{initrd}"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--cmdline", cmdline, "--timeout", timeout]);
        Case::daxvmm(name, args)
    }

    /// A qemu-system-x86_64 run.
    pub fn qemu<S: Into<String>>(name: &str, args: impl IntoIterator<Item = S>) -> Case {
        Case::new(name, Vmm::Qemu, args)
    }

    /// Checks what a batch file can carry: a plain name, and no TAB or newline in any argument.
    pub fn validate(&self) -> Result<(), CaseError> {
        if self.name.is_empty()
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
        {
            return Err(CaseError::BadName { name: self.name.clone() });
        }
        if let Some(a) = self.daxvmm_args.iter().find(|a| a.contains(['\t', '\n', '\r'])) {
            return Err(CaseError::BadArgument { case: self.name.clone(), arg: a.clone() });
        }
        Ok(())
    }

    /// Runs `sh` first (see [`Case::setup`]).
    pub fn with_setup(mut self, sh: &str) -> Case {
        self.setup = Some(sh.to_string());
        self
    }

    /// Reads what the earlier case `name` left under `{tmp}` (see [`Case::needs`]).
    pub fn needing(mut self, name: &str) -> Case {
        self.needs.push(name.to_string());
        self
    }

    /// Marks a case that boots no guest (see [`Case::boots`]).
    pub fn without_boot(mut self) -> Case {
        self.boots = false;
        self
    }

    /// Runs the case again when, nested, its output contains `text` (see [`Case::nested_fault`]); each
    /// call adds one such text.
    pub fn rerun_nested_on(mut self, text: &str) -> Case {
        self.nested_fault.push(text.to_string());
        self
    }

    /// Runs the case again, nested, also when the guest kernel crashed or reset before its init ran
    /// the race program ([`RACE_NEVER_STARTED`]), which QEMU TCG's nested SVM causes and the race code
    /// cannot, besides [`ALWAYS_EMULATION_FAULTS`]. On hardware KVM all stay failures.
    pub fn rerun_nested_on_emulation_faults(self) -> Case {
        self.rerun_nested_on(RACE_NEVER_STARTED)
    }

    /// Types `text` on the VMM's stdin `delay_secs` after it starts.
    pub fn with_input(mut self, delay_secs: u64, text: &str) -> Case {
        self.input = Some((delay_secs, text.to_string()));
        self
    }

    /// The arguments with the placeholders replaced.
    pub fn args_with(&self, kernel: &Path, initrd: &Path, tmp: &Path) -> Vec<String> {
        self.daxvmm_args.iter().map(|a| substitute_tmp(&substitute(a, kernel, initrd), tmp)).collect()
    }

    /// The setup snippet with `{tmp}`, `{kernel}`, `{initrd}` and `{daxvmm}` (the daxvmm binary, for a
    /// setup that runs daxvmm itself) filled in.
    pub fn setup_with(&self, tmp: &Path, kernel: &Path, initrd: &Path, daxvmm: &Path) -> Option<String> {
        self.setup.as_deref().map(|s| {
            substitute_tmp(&substitute(s, kernel, initrd), tmp).replace("{daxvmm}", &daxvmm.to_string_lossy())
        })
    }

    /// The batch-file line (`NAME<TAB>COMMAND`) that runs this case inside the test host VM.
    pub fn batch_line(&self) -> String {
        let program = match self.vmm {
            Vmm::Daxvmm => NESTED_DAXVMM,
            Vmm::Qemu => "qemu-system-x86_64",
        };
        let tmp = Path::new(NESTED_TMP);
        let args = self.args_with(Path::new(NESTED_KERNEL), Path::new(NESTED_INITRD), tmp);
        let setup = self.setup_with(
            tmp,
            Path::new(NESTED_KERNEL),
            Path::new(NESTED_INITRD),
            Path::new(NESTED_DAXVMM),
        );
        let mut cmd = match setup {
            Some(setup) => format!("( {setup} ) && "),
            None => String::new(),
        };
        if let Some((delay, text)) = &self.input {
            // A printf format keeps the batch file one line per case: newlines travel as \n.
            let format = text.replace('\\', "\\\\").replace('%', "%%").replace('\n', "\\n");
            cmd.push_str(&format!("( sleep {delay}; printf {} ) | ", shell_quote(&format)));
        }
        cmd.push_str(program);
        for a in &args {
            cmd.push(' ');
            cmd.push_str(&shell_quote(a));
        }
        format!("{}\t{cmd}", self.name)
    }
}

/// Checks that every case's [`Case::needs`] names a case before it in `cases`.
pub fn check_needs(cases: &[Case]) -> Result<(), CaseError> {
    for (i, c) in cases.iter().enumerate() {
        if let Some(n) = c.needs.iter().find(|n| !cases[..i].iter().any(|e| &e.name == *n)) {
            return Err(CaseError::UnknownNeed { case: c.name.clone(), need: n.clone() });
        }
    }
    Ok(())
}

/// The cases to run again when the ones `again` selects had no (usable) result: those, every case that
/// read their files (its result came from the discarded run), and every case all of these need
/// (transitively), in batch order.
pub fn rerun_set(cases: &[Case], again: impl Fn(&Case) -> bool) -> Vec<Case> {
    let mut keep: Vec<bool> = cases.iter().map(again).collect();
    // Needs point backwards (check_needs): one pass from the start reaches every transitive dependent,
    // one from the end every transitive need.
    for i in 0..cases.len() {
        if !keep[i] {
            keep[i] = cases[..i].iter().zip(&keep).any(|(e, k)| *k && cases[i].needs.contains(&e.name));
        }
    }
    for i in (0..cases.len()).rev() {
        if keep[i] {
            for (j, e) in cases[..i].iter().enumerate() {
                if cases[i].needs.contains(&e.name) {
                    keep[j] = true;
                }
            }
        }
    }
    cases.iter().zip(keep).filter(|(_, k)| *k).map(|(c, _)| c.clone()).collect()
}

/// Where the test host VM (tests/src/test_host.rs) has the guest kernel inside the test host VM.
pub const NESTED_KERNEL: &str = "/guest/bzImage";
/// Where the test host VM (tests/src/test_host.rs) has the guest initramfs inside the test host VM.
pub const NESTED_INITRD: &str = "/guest/initrd.cpio.lz4";
/// Where the test host VM has the daxvmm binary.
pub const NESTED_DAXVMM: &str = "/bin/daxvmm";
/// Scratch directory for `{tmp}` inside the test host VM (its tmpfs root).
pub const NESTED_TMP: &str = "/tmp";

/// Replaces `{tmp}` with the scratch directory where the case runs.
pub fn substitute_tmp(arg: &str, tmp: &Path) -> String {
    arg.replace("{tmp}", &tmp.to_string_lossy())
}

/// Replaces `{kernel}` and `{initrd}` in one argument.
pub fn substitute(arg: &str, kernel: &Path, initrd: &Path) -> String {
    arg.replace("{kernel}", &kernel.to_string_lossy()).replace("{initrd}", &initrd.to_string_lossy())
}

/// Quotes a word for a POSIX shell: plain words stay as they are, others go in single quotes.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | ',' | '+'));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts the harness reruns on are daxvmm's own words, copied from its sources: reworded there,
    /// a rerun rule would silently never match again.
    #[test]
    fn fault_texts_are_what_daxvmm_prints() {
        let sources = [
            include_str!("../../vmm/src/exit.rs"),
            include_str!("../../vmm/src/vcpu.rs"),
            include_str!("../../vmm/src/vcpu_end.rs"),
            include_str!("../../vmm/src/main_loop.rs"),
        ]
        .concat();
        for text in [TRIPLE_FAULT, NO_VCPU_EXIT, VCPU_NOT_KICKED, KERNEL_ENTERED, INIT_STARTED] {
            assert!(sources.contains(text), "daxvmm no longer prints {text:?}");
        }
    }

    #[test]
    fn placeholders_are_replaced_anywhere_in_an_argument() {
        let k = Path::new("/k/bzImage");
        let i = Path::new("/i/initrd.cpio.lz4");
        assert_eq!(substitute("{kernel}", k, i), "/k/bzImage");
        assert_eq!(substitute("--initrd={initrd}", k, i), "--initrd=/i/initrd.cpio.lz4");
        assert_eq!(
            substitute("{kernel},{initrd},{kernel}", k, i),
            "/k/bzImage,/i/initrd.cpio.lz4,/k/bzImage"
        );
        assert_eq!(substitute("{cpus} stays", k, i), "{cpus} stays");
    }

    #[test]
    fn batch_lines_run_setup_and_typed_input() {
        let c = Case::daxvmm("io", ["--kernel", "{kernel}"])
            .with_setup("touch {tmp}/x")
            .with_input(5, "echo 5% hi\n");
        assert_eq!(
            c.batch_line(),
            "io\t( touch /tmp/x ) && ( sleep 5; printf 'echo 5%% hi\\n' ) | /bin/daxvmm --kernel /guest/bzImage"
        );
    }

    #[test]
    fn batch_lines_quote_for_the_shell() {
        let c = Case::daxvmm(
            "one_vcpu",
            ["--kernel", "{kernel}", "--cmdline", "-- echo 'hi' > /dev/null", "--timeout", "120s"],
        );
        assert_eq!(
            c.batch_line(),
            "one_vcpu\t/bin/daxvmm --kernel /guest/bzImage --cmdline '-- echo '\\''hi'\\'' > /dev/null' --timeout 120s"
        );
        let q = Case::qemu("q", ["-append", "", "-m", "512M"]);
        assert_eq!(q.batch_line(), "q\tqemu-system-x86_64 -append '' -m 512M");
    }

    #[test]
    fn shell_quoting_round_trips_through_sh() {
        for word in ["plain", "two words", "it's", "$HOME", "a\"b", "", "-- cat /x", "*", "a\\b"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(word)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word, "quoted as {}", shell_quote(word));
        }
    }

    #[test]
    fn needs_must_point_to_earlier_cases() {
        let a = Case::daxvmm("a", ["x"]);
        let b = Case::daxvmm("b", ["x"]).needing("a");
        assert!(check_needs(&[a.clone(), b.clone()]).is_ok());
        let err = check_needs(&[b.clone(), a.clone()]).expect_err("b comes before a");
        assert_eq!(err, CaseError::UnknownNeed { case: "b".into(), need: "a".into() });
        assert!(err.to_string().starts_with("case b needs a, which is not an earlier case"), "{err}");
        assert!(check_needs(&[Case::daxvmm("c", ["x"]).needing("c")]).is_err());
    }

    #[test]
    fn a_rerun_takes_the_needed_cases_along_in_batch_order() {
        let cases = [
            Case::daxvmm("a", ["x"]),
            Case::daxvmm("b", ["x"]).needing("a"),
            Case::daxvmm("c", ["x"]),
            Case::daxvmm("d", ["x"]).needing("b"),
            Case::daxvmm("e", ["x"]),
        ];
        let names = |v: Vec<Case>| v.into_iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(names(rerun_set(&cases, |c| c.name == "d" || c.name == "e")), ["a", "b", "d", "e"]);
        assert_eq!(names(rerun_set(&cases, |c| c.name == "c")), ["c"]);
        // A case whose files others read: they run again too, since their results came from it.
        assert_eq!(names(rerun_set(&cases, |c| c.name == "a")), ["a", "b", "d"]);
        assert!(rerun_set(&cases, |_| false).is_empty());
    }

    #[test]
    fn validation_rejects_what_a_batch_file_cannot_carry() {
        assert!(Case::daxvmm("ok_name-1.2", ["a b"]).validate().is_ok());
        assert!(Case::daxvmm("bad name", ["x"]).validate().is_err());
        assert!(Case::daxvmm("", ["x"]).validate().is_err());
        assert!(Case::daxvmm("n", ["a\tb"]).validate().is_err());
        assert!(Case::daxvmm("n", ["a\nb"]).validate().is_err());
        let err = Case::daxvmm("n", ["a\tb"]).validate().expect_err("a TAB");
        assert!(err.to_string().starts_with("case n: argument 'a\\tb' contains a TAB"), "{err}");
    }
}
