//! `daxvmm test` and `daxvmm repro` on KVM: their options handed to the race runner (the `daxvmm-race`
//! crate, which owns the scenarios, the oracle, the reports and the repro files), with [`KvmGuests`],
//! the runner's [`GuestVm`]: one guest boot with the fault injector reporting to the runner, the console
//! captured and pmem readable from the host.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use daxvmm_devices::fault::RunObserver;
use daxvmm_race::{BootOutput, BootSpec, GuestVm, PmemReader, Transport};

use crate::boot::cpuid::XsavePolicy;
use crate::capture::Capture;
use crate::cli::race::{ReproArgs, TestArgs};
use crate::cli::run::{check_file, BASE_CMDLINE};
use crate::pmem::spec::PmemSpec;
use crate::pmem::view::PmemView;
use crate::seccomp::SeccompMode;
use crate::units::format_size;
use crate::vm::{self, RaceHooks, VmConfig};

/// `daxvmm test`: its exit code (0, or 10 with violations).
pub fn test(args: &TestArgs) -> anyhow::Result<u8> {
    Ok(daxvmm_race::test(&KvmGuests { seccomp: args.boot.seccomp }, &args.options())?)
}

/// `daxvmm repro`: its exit code (0 when the violation came back, else 11).
pub fn repro(args: &ReproArgs) -> anyhow::Result<u8> {
    Ok(daxvmm_race::repro(&KvmGuests { seccomp: args.boot.seccomp }, &args.options())?)
}

/// The race runner's guests, booted with KVM.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvmGuests {
    /// `--seccomp`.
    pub seccomp: SeccompMode,
}

impl PmemReader for PmemView {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        PmemView::read(self, gpa, buf)
    }
}

impl GuestVm for KvmGuests {
    type Pmem = PmemView;

    fn kernel_cmdline(&self, kernel_args: &str, command: &str) -> String {
        if kernel_args.is_empty() {
            format!("{BASE_CMDLINE} -- {command}")
        } else {
            format!("{BASE_CMDLINE} {kernel_args} -- {command}")
        }
    }

    fn check_file(&self, what: &'static str, path: &Path) -> anyhow::Result<()> {
        Ok(check_file(what, path)?)
    }

    fn pmem(&self) -> Arc<PmemView> {
        Arc::new(PmemView::default())
    }

    fn boot(
        &self,
        spec: &BootSpec,
        pmem: Arc<PmemView>,
        observer: Arc<dyn RunObserver>,
    ) -> anyhow::Result<BootOutput> {
        let kind = match spec.transport {
            Transport::Nfit => "",
            Transport::Virtio => ",type=virtio",
        };
        let regions = vec![
            PmemSpec::parse(&format!("{}{kind}", format_size(spec.pmem_size)))
                .map_err(anyhow::Error::msg)
                .context("--pmem-size")?,
            PmemSpec::parse(&format_size(spec.raw_pmem_size)).map_err(anyhow::Error::msg)?,
        ];
        let capture = Capture::new(spec.echo);
        let cfg = VmConfig {
            kernel: spec.kernel.clone(),
            initrd: Some(spec.initrd.clone()),
            cmdline: spec.cmdline.clone(),
            mem: spec.mem,
            cpus: spec.cpus,
            timeout: Some(spec.timeout),
            timeout_after_init: None,
            xsave: XsavePolicy::for_this_host(),
            pmem: regions,
            disks: Vec::new(),
            fault_schedule: None,
            seccomp: self.seccomp,
            last_run: false,
            race: Some(RaceHooks { observer, pmem, bound: spec.bound }),
            console: Some(capture.clone()),
        };
        cfg.check()?;
        let end = vm::run(&cfg, Instant::now())?;
        Ok(BootOutput { end, console: capture.text() })
    }
}
