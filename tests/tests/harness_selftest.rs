//! Validates the harness itself with a known-good VMM: the same guest kernel and initramfs booted by
//! `qemu-system-x86_64 -enable-kvm` (inside the test host VM when nested), through the same batch, marker
//! parsing and outcome plumbing the daxvmm tests use. Ignored by default (an extra test host VM boot, and
//! QEMU packed into it); run with `cargo test -p daxvmm-tests --test harness_selftest -- --ignored`.
//!
//! QEMU's pc machine has no port 0x6F1 exit-status device, so QEMU exits 0 whatever the guest command
//! returned; the guest's own `command exited rc=N` line is checked instead. `noxsave`: a 7.2 guest under
//! QEMU in the test host VM needs it (docs/test-host-vm.md).

use daxvmm_tests::{Case, SharedBatch};

fn qemu(name: &str, smp: &str, command: &str) -> Case {
    let append = format!("console=ttyS0 noxsave -- {command}");
    Case::qemu(
        name,
        [
            "-enable-kvm",
            "-cpu",
            "host",
            "-m",
            "512M",
            "-smp",
            smp,
            "-kernel",
            "{kernel}",
            "-initrd",
            "{initrd}",
            "-append",
            &append,
            "-nographic",
            "-no-reboot",
        ],
    )
}

fn cases() -> Vec<Case> {
    vec![
        qemu("qemu_one_vcpu", "1", "cat /sys/devices/system/cpu/online"),
        qemu("qemu_two_vcpus", "2", "cat /sys/devices/system/cpu/online"),
        qemu("qemu_guest_status", "1", "echo 'quoted  words'; exit 7"),
    ]
}

static BATCH: SharedBatch = SharedBatch::new(cases);

#[test]
#[ignore = "boots a test host VM with QEMU inside; run with --ignored to validate the harness"]
fn qemu_one_vcpu() {
    let Some(out) = BATCH.outcome("qemu_one_vcpu") else { return };
    assert_eq!(out.exit_code, 0, "{out}");
    assert!(out.contains("daxvmm-guest: init reached"), "{out}");
    assert!(out.has_line("0"), "{out}");
    assert!(!out.has_line("0-1"), "{out}");
}

#[test]
#[ignore = "boots a test host VM with QEMU inside; run with --ignored to validate the harness"]
fn qemu_two_vcpus() {
    let Some(out) = BATCH.outcome("qemu_two_vcpus") else { return };
    assert_eq!(out.exit_code, 0, "{out}");
    assert!(out.has_line("0-1"), "{out}");
}

#[test]
#[ignore = "boots a test host VM with QEMU inside; run with --ignored to validate the harness"]
fn qemu_guest_status() {
    let Some(out) = BATCH.outcome("qemu_guest_status") else { return };
    // The command came through the kernel command line with its quoting intact.
    assert!(out.has_line("quoted  words"), "{out}");
    assert!(out.contains("daxvmm-guest: command exited rc=7"), "{out}");
    assert_eq!(out.exit_code, 0, "QEMU exits 0 on power-off: {out}");
}
