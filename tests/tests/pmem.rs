//! The emulated NFIT NVDIMM (`--pmem`), booted in real guests as one batch: DAX on ext4 and xfs with a
//! PMD fault (also on virtio-pmem, whose flushes reach the backing file), two NVDIMMs, data that survives a restart in a backing file (and the guest's flushes that
//! reach it through the NFIT flush hint), data fsynced before daxvmm is killed with SIGKILL, a 16G region
//! that costs no memory until touched, hugetlb backing proven by smaps, a namespace label area
//! (`label-size=`) whose namespaces survive a restart, served through the _DSM or through the ACPI label
//! methods, device-dax (2 MiB mappings, then system RAM through daxctl), `ndctl list` compared with
//! QEMU's, the guest's own ACPI tables through iasl, and error injection, scrub and clearing through the
//! root device's _DSM. Then bad `--pmem` input, checked on this host without a guest.

use daxvmm_tests::ndctl_json::{compare, flatten, table, Justification};
use daxvmm_tests::reject::{args, assert_rejected, some_kernel};
use daxvmm_tests::{Case, SharedBatch};

/// The NVDIMM of the label cases: file-backed, with a 128 KiB label area in `labels.img.labels`.
const LABEL_PMEM: &str = "1G,file={tmp}/labels.img,label-size=128K";

/// What devdax.sh writes through its mapping of /dev/dax0.0 (its default).
const DEVDAX_MARKER: &str = "daxvmm-devdax-marker-3b7e";

/// What persist.sh writes and reads back.
const MARKER: &str = "daxvmm-persist-marker-5f3a";

fn guest(name: &str, extra: &[&str], cmd: &str) -> Case {
    Case::guest(name, extra, &format!("quiet -- {cmd}"), "240s")
}

/// Rounds of the SIGKILL test: boot, write and fsync a marker, SIGKILL daxvmm at a random moment up to a
/// second after the fsync returned, and check the host file. `DAXVMM_KILL9_ROUNDS` asks for more (a soak;
/// give the case time with `DAXVMM_TEST_CASE_TIMEOUT`, about 15 s a round nested).
fn kill_rounds() -> u32 {
    std::env::var("DAXVMM_KILL9_ROUNDS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(3)
}

/// The setup of a SIGKILL case (one shell line): `rounds` rounds on `--pmem 256M,file={tmp}/IMG.img` plus
/// `opts`, each with its own marker.
fn kill9_rounds(img: &str, opts: &str, rounds: u32) -> String {
    let round = "{daxvmm} --kernel {kernel} --initrd {initrd} --pmem 256M,file={tmp}/IMG.imgOPTS --timeout 120s \
         --cmdline \"quiet -- /tests/persist.sh write-and-wait /dev/pmem0 round$r\" >{tmp}/IMG-$r.log 2>&1 & p=$!; \
         n=0; until grep -q 'persist: wrote' {tmp}/IMG-$r.log || [ $n -ge 1200 ] || ! kill -0 $p 2>/dev/null; \
         do sleep 0.1; n=$((n+1)); done; \
         sleep $(awk -v r=$r 'BEGIN { srand(); printf \"%.2f\", rand() }'); kill -9 $p; wait $p; \
         if grep -q -a MARKER-round$r {tmp}/IMG.img; then echo kill9: round $r kept its fsynced marker; \
         else echo kill9: round $r lost its fsynced marker; cat {tmp}/IMG-$r.log; exit 1; fi";
    let numbers: Vec<String> = (1..=rounds).map(|r| r.to_string()).collect();
    format!(
        "rm -f {{tmp}}/{img}.img; for r in {}; do {}; done",
        numbers.join(" "),
        round.replace("MARKER", MARKER).replace("IMG", img).replace("OPTS", opts)
    )
}

/// QEMU with the platform of the `ndctl_list` case: `-device nvdimm` with a label area, twice.
fn qemu_nvdimms(cmd: &str) -> Vec<String> {
    let mut args: Vec<String> =
        "-machine pc,nvdimm=on -enable-kvm -cpu host -smp 1 -m 512M,slots=4,maxmem=4G"
            .split(' ')
            .map(str::to_string)
            .collect();
    for n in 0..2 {
        args.extend([
            "-object".to_string(),
            format!("memory-backend-ram,id=nv{n},size=512M"),
            "-device".to_string(),
            format!("nvdimm,memdev=nv{n},id=nvdimm{n},label-size=128K"),
        ]);
    }
    let append = format!("console=ttyS0 noxsave reboot=k panic=1 quiet -- {cmd}");
    for a in ["-kernel", "{kernel}", "-initrd", "{initrd}", "-append", &append] {
        args.push(a.to_string());
    }
    args.extend("-display none -serial stdio -monitor none -no-reboot".split(' ').map(str::to_string));
    args
}

/// Where `ndctl list -RDNu -v` may differ between daxvmm and QEMU, and why (docs/guest-interface.md
/// lists the same). Every one must be needed: a justification no difference uses fails the test.
const NDCTL_LIST_DIFFERENCES: [Justification; 6] = [
    Justification {
        field: "size",
        within: "regions",
        reason:
            "QEMU keeps the label area at the end of the DIMM's memory and rounds the rest down to 2 MiB; \
                 daxvmm keeps it beside the memory, so the region is the whole 512 MiB",
    },
    Justification { field: "length", within: "mappings", reason: "the region size, as above" },
    Justification { field: "available_size", within: "regions", reason: "the region size, as above" },
    Justification { field: "max_available_extent", within: "regions", reason: "the region size, as above" },
    Justification {
        field: "persistence_domain",
        within: "regions",
        reason: "daxvmm's NFIT has a platform capabilities structure (flushes reach the backing at the \
                 memory controller); QEMU's has none",
    },
    Justification {
        field: "uuid",
        within: "namespaces",
        reason: "the fsdax info block's own uuid, random at each create-namespace",
    },
];

/// The virtio-pmem devices of the virtio cases.
const VIRTIO_EXT4: &str = "1G,file={tmp}/virtio-ext4.img,type=virtio";
const VIRTIO_XFS: &str = "1G,file={tmp}/virtio-xfs.img,type=virtio";

fn cases() -> Vec<Case> {
    vec![
        guest("dax_ext4", &["--cpus", "2", "--pmem", "1G"], "/tests/pmem-dax.sh ext4"),
        guest("dax_xfs", &["--cpus", "2", "--pmem", "1G"], "/tests/pmem-dax.sh xfs"),
        // The same on virtio-pmem (type=virtio), file-backed so that the guest's flushes have a file to
        // write back.
        guest("virtio_ext4", &["--cpus", "2", "--pmem", VIRTIO_EXT4], "/tests/pmem-dax.sh ext4"),
        guest("virtio_xfs", &["--cpus", "2", "--pmem", VIRTIO_XFS], "/tests/pmem-dax.sh xfs"),
        guest(
            "two_dimms",
            &["--pmem", "256M", "--pmem", "512M"],
            "cat /sys/block/pmem0/size /sys/block/pmem1/size; \
             for n in /sys/bus/nd/devices/nmem*; do echo $(basename $n) commands: $(cat $n/commands); done; \
             echo health: $(ndctl list -DH | tr -d ' \\n')",
        ),
        // A label area: the label functions found through _DSM, two namespaces created in one region,
        // then found again from the labels in a second boot from the same files.
        guest("labels_create", &["--pmem", LABEL_PMEM], "/tests/labels.sh create")
            .with_setup("rm -f {tmp}/labels.img {tmp}/labels.img.labels"),
        guest("labels_check", &["--pmem", LABEL_PMEM], "/tests/labels.sh check")
            .with_setup("echo label file: $(stat -c %s {tmp}/labels.img.labels) bytes")
            .needing("labels_create"),
        // The same through the ACPI label methods: label-dsm=off withholds the _DSM label functions, and
        // nfit.override_dsm_mask=0x2 makes Linux take _LSI/_LSR/_LSW (it prefers the Intel _DSM otherwise).
        Case::guest(
            "labels_lsx",
            &["--pmem", "1G,label-size=128K,label-dsm=off"],
            "nfit.override_dsm_mask=0x2 quiet -- /tests/labels.sh create",
            "240s",
        ),
        // label-dsm=off without the override: Linux skips the label methods of an Intel-family DIMM.
        guest(
            "labels_dsm_off",
            &["--pmem", "256M,label-size=128K,label-dsm=off"],
            "echo labels: nmem0 dsm_mask: $(cat /sys/bus/nd/devices/nmem0/nfit/dsm_mask); \
             echo labels: nmem0 commands: $(cat /sys/bus/nd/devices/nmem0/commands); \
             echo labels: namespace0.0 $(cat /sys/bus/nd/devices/namespace0.0/mode) $(cat /sys/block/pmem0/size)",
        ),
        // The root device's scrub and error injection: ndctl inject-error, badblocks, EIO, clear by write.
        guest("poison", &["--pmem", "1G"], "/tests/poison.sh"),
        // Loads from poison the kernel does not know yet: machine checks in the kernel and in user space.
        guest("mce", &["--pmem", "1G"], "/tests/mce.sh"),
        // Poison from the host: the boot's scrub reports it before the disk appears.
        guest(
            "poison_host",
            &["--pmem", "1G,poison=21504+4K"],
            "echo badblocks: $(cat /sys/block/pmem0/badblocks); \
             dd if=/dev/pmem0 of=/dev/null bs=4096 skip=5 count=1 2>/dev/null || echo poison: read failed",
        ),
        // device-dax: a devdax namespace with 2 MiB mappings, its bytes in the host file; in a second boot
        // from the file the same dax0.0 is handed to the kernel as memory and taken back.
        guest("devdax_create", &["--pmem", "1G,file={tmp}/devdax.img"], "/tests/devdax.sh create")
            .with_setup("rm -f {tmp}/devdax.img"),
        guest("devdax_ram", &["--pmem", "1G,file={tmp}/devdax.img"], "/tests/devdax.sh ram")
            .with_setup(&format!(
                "echo devdax marker in the file: $(grep -c -a {DEVDAX_MARKER} {{tmp}}/devdax.img)"
            ))
            .needing("devdax_create"),
        // The same platform (two 512M NVDIMMs with 128K label areas) under daxvmm and under QEMU: what
        // `ndctl list -RDNu -v` says as booted and after a namespace is made.
        guest(
            "ndctl_list",
            &["--pmem", "512M,label-size=128K", "--pmem", "512M,label-size=128K"],
            "/tests/ndctl-list.sh",
        ),
        Case::qemu("ndctl_list_qemu", qemu_nvdimms("/tests/ndctl-list.sh")),
        // The ACPI tables as the guest kernel found them, base64 on the console for iasl on this host.
        guest(
            "acpi_tables",
            &["--pmem", "256M,label-size=128K", "--pmem", "256M"],
            "for t in DSDT FACP APIC SRAT NFIT; do echo acpi: $t $(base64 -w0 /sys/firmware/acpi/tables/$t); done",
        ),
        guest("persist_write", &["--pmem", "256M,file={tmp}/persist.img"], "/tests/persist.sh write")
            .with_setup("rm -f {tmp}/persist.img"),
        // The marker must be in the host file itself before the second boot reads it.
        guest("persist_read", &["--pmem", "256M,file={tmp}/persist.img"], "/tests/persist.sh read")
            .with_setup(&format!("grep -q -a {MARKER} {{tmp}}/persist.img"))
            .needing("persist_write"),
        // The last round's marker, read back by a guest from the file the killed daxvmm left.
        guest(
            "kill9",
            &["--pmem", "256M,file={tmp}/k9.img"],
            &format!("/tests/persist.sh read /dev/pmem0 round{}", kill_rounds()),
        )
        .with_setup(&kill9_rounds("k9", "", kill_rounds())),
        // The same on virtio-pmem, one round: there the fsync ends in a flush request.
        guest("kill9_virtio", &["--pmem", "256M,file={tmp}/k9v.img,type=virtio"], "/tests/persist.sh read /dev/pmem0 round1")
            .with_setup(&kill9_rounds("k9v", ",type=virtio", 1)),
        guest("big_lazy", &["--mem", "256M", "--pmem", "16G"], "cat /sys/block/pmem0/size"),
        // A legacy e820 range beside an NFIT DIMM: each on its own bus, and DAX with a PMD fault on
        // the e820 one (its raw namespace has struct pages: no conversion).
        guest(
            "e820",
            &["--cpus", "2", "--pmem", "256M", "--pmem", "1G,type=e820"],
            "for b in /sys/bus/nd/devices/ndbus*; do echo bus $(cat $b/provider); done; \
             for r in /sys/bus/nd/devices/region*; do echo region $(basename $r) $(cat $r/size); done; \
             /tests/pmem-dax.sh ext4 /dev/pmem1",
        ),
        guest(
            "hugetlb",
            &["--log-level", "debug", "--pmem", "512M,backing=hugetlb-2m"],
            "/tests/pmem-dax.sh ext4",
        )
        .with_setup("[ $(cat /proc/sys/vm/nr_hugepages) -ge 300 ] || echo 300 > /proc/sys/vm/nr_hugepages"),
    ]
}

static BATCH: SharedBatch = SharedBatch::new(cases);

fn assert_tap_passed(name: &str, checks: usize) {
    let Some(out) = BATCH.outcome(name) else { return };
    assert_eq!(out.exit_code, 0, "every guest check must pass: {out}");
    assert!(!out.contains("not ok"), "a guest check failed: {out}");
    assert!(out.has_line(&format!("1..{checks}")), "expected {checks} TAP results: {out}");
    assert!(out.contains("(1024 MiB)"), "/dev/pmem0 must be the 1G asked for: {out}");
    assert!(out.contains("- a PMD fault was served"), "the PMD check did not run: {out}");
}

#[test]
fn dax_ext4() {
    assert_tap_passed("dax_ext4", 10);
}

#[test]
fn dax_xfs() {
    assert_tap_passed("dax_xfs", 10);
}

/// virtio-pmem (`type=virtio`, found by the guest through the DSDT): its raw namespace does DAX as it is,
/// ext4 and xfs with `-o dax`, a PMD fault, MAP_SYNC refused (the device is asynchronous), and the guest's flushes (its
/// msync and umount) reaching daxvmm as flush requests, each an msync of the backing file, notified
/// through the ioeventfd.
#[test]
fn virtio_pmem_does_dax_and_flushes() {
    for name in ["virtio_ext4", "virtio_xfs"] {
        // One check fewer than on the NFIT: the raw namespace has struct pages, so nothing is converted.
        assert_tap_passed(name, 9);
        let Some(out) = BATCH.outcome(name) else { return };
        assert!(out.contains("is a virtio-pmem device") && out.contains("- MAP_SYNC refused"), "{out}");
        let flushes = out.console.lines().find_map(|l| {
            l.split_once("virtio-pmem0: the guest sent ")?.1.split(' ').next()?.parse::<u64>().ok()
        });
        assert!(flushes.is_some_and(|n| n > 0), "the guest's flushes must reach daxvmm: {flushes:?}: {out}");
        assert!(out.contains("(msync of its file), 0 failed"), "{out}");
        // The ioeventfd on QueueNotify takes every notification: none is a VM exit.
        assert!(out.contains("0 failed; 0 queue notifications were VM exits"), "{out}");
    }
}

#[test]
fn e820_range_is_on_the_e820_bus_and_does_dax() {
    let Some(out) = BATCH.outcome("e820") else { return };
    assert!(out.has_line("bus e820") && out.has_line("bus ACPI.NFIT"), "one bus each: {out}");
    // Region sizes in bytes: the NFIT DIMM's 256M, the e820 range's 1G.
    assert!(out.contains(" 268435456") && out.contains(" 1073741824"), "{out}");
    assert!(
        !out.contains("namespace of pmem1 converted"),
        "an e820 namespace needs no pfn conversion: {out}"
    );
    assert_eq!(out.exit_code, 0, "{out}");
    assert!(out.has_line("1..9") && !out.contains("not ok"), "{out}");
    assert!(out.contains("- a PMD fault was served"), "{out}");
}

#[test]
fn two_dimms() {
    let Some(out) = BATCH.outcome("two_dimms") else { return };
    assert_eq!(out.exit_code, 0, "{out}");
    // Sizes in 512-byte sectors: 256M and 512M (raw namespaces use the whole region).
    assert!(out.has_line("524288") && out.has_line("1048576"), "pmem0 256M and pmem1 512M expected: {out}");
    // Without label-size= a DIMM offers no label functions: one label-less namespace per region. Its
    // SMART health (the Intel family's function 1) is there, and ndctl reads it.
    let commands: Vec<&str> = out.console.lines().filter(|l| l.contains(" commands: ")).collect();
    assert_eq!(commands.len(), 2, "{out}");
    assert!(commands.iter().all(|l| !l.contains("get_size") && !l.contains("get_data")), "{out}");
    assert!(commands.iter().all(|l| l.contains(" smart")), "{out}");
    let health = out.console.lines().find(|l| l.starts_with("health: ")).unwrap_or_default();
    assert_eq!(health.matches("\"health_state\":\"ok\"").count(), 2, "both DIMMs healthy: {out}");
    for field in ["\"temperature_celsius\":23", "\"spares_percentage\":100", "\"shutdown_state\":\"clean\""] {
        assert!(health.contains(field), "{field}: {out}");
    }
}

/// The "labels: namespace ..." lines of a labels.sh run: (name, mode, size, uuid), sorted by uuid.
fn namespaces(out: &str) -> Vec<[String; 4]> {
    let mut v: Vec<[String; 4]> = out
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.trim().strip_prefix("labels: namespace ")?.split(' ').collect();
            match w[..] {
                [name, "mode", mode, "size", size, "uuid", uuid] => {
                    Some([name, mode, size, uuid].map(str::to_string))
                }
                _ => None,
            }
        })
        .collect();
    v.sort_by(|a, b| a[3].cmp(&b[3]));
    v
}

#[test]
fn labels_make_namespaces_that_persist_across_boots() {
    let (Some(c), Some(k)) = (BATCH.outcome("labels_create"), BATCH.outcome("labels_check")) else { return };
    assert_eq!(c.exit_code, 0, "first boot: {c}");
    assert!(c.contains("a 131072-byte namespace label area"), "{c}");
    // The label commands, as the nvdimm's sysfs `commands` names them (ND_CMD_GET_CONFIG_SIZE, ...).
    let commands = c.console.lines().find(|l| l.contains("labels: nmem0 commands:")).unwrap_or_default();
    for f in ["get_size", "get_data", "set_data"] {
        assert!(commands.contains(f), "the nfit driver must find {f} through the DIMM's _DSM: {c}");
    }
    // SMART health (1) and the label functions (4-6) through the _DSM.
    assert!(c.has_line("labels: nmem0 dsm_mask: 0x72"), "{c}");
    let made = namespaces(&c.console);
    let mut modes: Vec<&str> = made.iter().map(|n| n[1].as_str()).collect();
    modes.sort_unstable();
    // sysfs names an fsdax namespace's mode "memory".
    assert_eq!(modes, ["memory", "raw"], "two namespaces in one region, fsdax and raw: {c}");
    assert!(made.iter().all(|n| n[2] == "268435456"), "each 256M: {c}");
    assert!(c.contains("labels: wrote the marker to /dev/pmem"), "{c}");

    assert!(k.has_line("label file: 131072 bytes"), "the labels live in PATH.labels: {k}");
    assert_eq!(k.exit_code, 0, "second boot: {k}");
    assert_eq!(namespaces(&k.console), made, "the second boot finds the same namespaces in the labels: {k}");
    assert!(k.contains("labels: read the marker from /dev/pmem"), "{k}");
}

#[test]
fn the_acpi_label_methods_serve_the_labels_when_the_dsm_does_not() {
    let Some(out) = BATCH.outcome("labels_lsx") else { return };
    assert_eq!(out.exit_code, 0, "{out}");
    // Only SMART health through the _DSM: every label byte went through _LSI, _LSR and _LSW.
    assert!(out.has_line("labels: nmem0 dsm_mask: 0x2"), "{out}");
    let commands = out.console.lines().find(|l| l.contains("labels: nmem0 commands:")).unwrap_or_default();
    for f in ["get_size", "get_data", "set_data"] {
        assert!(commands.contains(f), "Linux must offer {f} through the label methods: {out}");
    }
    let mut modes: Vec<String> = namespaces(&out.console).into_iter().map(|n| n[1].clone()).collect();
    modes.sort_unstable();
    assert_eq!(modes, ["memory", "raw"], "two namespaces made from labels written through _LSW: {out}");
    assert!(out.contains("labels: wrote the marker to /dev/pmem"), "{out}");

    // Without the override Linux never looks at the label methods: no label access, one raw namespace.
    let Some(off) = BATCH.outcome("labels_dsm_off") else { return };
    assert_eq!(off.exit_code, 0, "{off}");
    assert!(off.has_line("labels: nmem0 dsm_mask: 0x2"), "{off}");
    assert!(off.has_line("labels: nmem0 commands: smart cmd_call"), "{off}");
    assert!(off.has_line("labels: namespace0.0 raw 524288"), "label-less, the whole 256M: {off}");
}

/// `text` (base64) decoded by the host's coreutils.
fn base64_decode(text: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run base64 (coreutils): {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).unwrap_or_else(|e| panic!("base64 -d: {e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("base64 -d: {e}"));
    assert!(out.status.success(), "base64 -d refused: {text}");
    out.stdout
}

#[test]
fn the_guests_acpi_tables_disassemble_without_errors() {
    let Some(out) = BATCH.outcome("acpi_tables") else { return };
    assert_eq!(out.exit_code, 0, "{out}");
    let dir = scratch("acpi-tables");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for sig in ["DSDT", "FACP", "APIC", "SRAT", "NFIT"] {
        let prefix = format!("acpi: {sig} ");
        let text = out.console.lines().find_map(|l| l.trim().strip_prefix(prefix.as_str()));
        let bytes = base64_decode(text.unwrap_or_else(|| panic!("the guest printed no {sig}: {out}")));
        assert!(bytes.len() >= 36 && bytes[..4] == *sig.as_bytes(), "{sig}: not the table: {bytes:?}");
        let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        assert_eq!(len, bytes.len(), "{sig}: its length field against the bytes the guest had");
        let file = dir.join(format!("{}.dat", sig.to_lowercase()));
        std::fs::write(&file, &bytes).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let run = std::process::Command::new("iasl").arg("-d").arg(&file).current_dir(&dir).output();
        let run = run
            .unwrap_or_else(|e| panic!("cannot run iasl ({e}): scripts/setup-host.sh installs acpica-tools"));
        let said =
            format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
        assert!(
            run.status.success() && !said.contains("Error") && !said.contains("Warning"),
            "iasl -d {sig}: {said}"
        );
        if sig == "DSDT" {
            let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap_or_default();
            for want in ["ACPI0012", "Method (_LSI", "Method (_LSR", "Method (_LSW", "Device (NV01)"] {
                assert!(dsl.contains(want), "the guest's DSDT lacks {want}: {dsl}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn devdax_maps_2m_pages_and_becomes_system_ram() {
    let (Some(c), Some(r)) = (BATCH.outcome("devdax_create"), BATCH.outcome("devdax_ram")) else { return };
    assert_eq!(c.exit_code, 0, "first boot: {c}");
    assert!(c.contains("devdax: dax0.0 align 2097152 size "), "{c}");
    // One fault for 512 pages: the kernel mapped the 2 MiB with one PMD; a shorter mapping is refused.
    assert!(
        c.has_line("devdax: /dev/dax0.0: 2 MiB written with 1 fault(s); a 4 KiB mapping was refused"),
        "{c}"
    );
    // What the guest stored through the mapping is in the host's backing file.
    assert!(r.has_line("devdax marker in the file: 1"), "{r}");
    assert!(r.contains("devdax: system-ram: MemTotal grew by "), "{r}");
    assert!(r.has_line("devdax: ram steps passed"), "{r}");
    assert_eq!(r.exit_code, 0, "second boot: {r}");
}

// The table of differences goes to stderr as the run's record of the comparison.
#[allow(clippy::print_stderr)]
#[test]
fn ndctl_list_matches_qemu_but_for_the_documented_differences() {
    let (Some(d), Some(q)) = (BATCH.outcome("ndctl_list"), BATCH.outcome("ndctl_list_qemu")) else { return };
    assert_eq!(d.exit_code, 0, "daxvmm: {d}");
    let listing = |console: &str, phase: &str| {
        let prefix = format!("ndctl-list: {phase} ");
        console.lines().find_map(|l| l.trim().strip_prefix(prefix.as_str()).map(str::to_string))
    };
    let mut used = [false; NDCTL_LIST_DIFFERENCES.len()];
    let mut report = String::new();
    for phase in ["booted", "namespace"] {
        let dl =
            listing(&d.console, phase).unwrap_or_else(|| panic!("daxvmm printed no '{phase}' listing: {d}"));
        let ql =
            listing(&q.console, phase).unwrap_or_else(|| panic!("QEMU printed no '{phase}' listing: {q}"));
        let (df, qf) =
            (flatten(&dl).unwrap_or_else(|e| panic!("{e}")), flatten(&ql).unwrap_or_else(|e| panic!("{e}")));
        // Two DIMMs and two regions with their mappings on both sides, so there is something to compare.
        assert!(df.len() >= 30 && df.keys().any(|k| k.starts_with("dimms[nmem1]")), "daxvmm {phase}: {dl}");
        let diffs = compare(&df, &qf, &NDCTL_LIST_DIFFERENCES);
        for (i, j) in NDCTL_LIST_DIFFERENCES.iter().enumerate() {
            used[i] |= diffs.iter().any(|x| x.reason == Some(j.reason));
        }
        report.push_str(&format!(
            "{phase}: {} fields, {} differ\n{}",
            df.len(),
            diffs.len(),
            table(&diffs, "daxvmm", "qemu")
        ));
        let unexplained: Vec<_> = diffs.iter().filter(|x| x.reason.is_none()).collect();
        assert!(unexplained.is_empty(), "differences nobody explained:\n{report}");
    }
    eprintln!("ndctl list -RDNu -v, daxvmm vs QEMU:\n{report}");
    for (j, u) in NDCTL_LIST_DIFFERENCES.iter().zip(used) {
        assert!(
            u,
            "no difference needs '{}' any more: drop it here and in docs/guest-interface.md\n{report}",
            j.field
        );
    }
}

#[test]
fn injected_errors_are_scrubbed_into_badblocks_fail_reads_and_clear_on_write() {
    let Some(out) = BATCH.outcome("poison") else { return };
    // The bus commands the nfit driver found through the root device's _DSM function 0, and the
    // extra functions it allows through ND_CMD_CALL (bits 1-4 and 7-9: no translate-SPA).
    let commands = out.console.lines().find(|l| l.contains("poison: bus commands:")).unwrap_or_default();
    for c in ["ars_cap", "ars_start", "ars_status", "clear_error"] {
        assert!(commands.contains(c), "{c} must be a bus command: {out}");
    }
    assert!(out.contains("poison: bus dsm_mask: 0x39e"), "{out}");
    for step in [
        "poison: injected 42 8, badblocks empty before a scrub",
        "poison: uninjected",
        "poison: badblocks after the scrub: 42 8",
        "poison: a read of the poisoned page fails, its neighbour reads",
        "poison: the write cleared it",
        "poison: all steps passed",
    ] {
        assert!(out.has_line(step), "missing '{step}': {out}");
    }
    assert_eq!(out.exit_code, 0, "{out}");
}

/// A load from poison is a machine check (AMD's recoverable DRAM ECC error, delivered through KVM with the
/// vCPU back at the load): in the pmem driver's machine-check-safe copy it ends in EIO and badblocks, in a
/// process that maps the page (xfs -o dax) in SIGBUS BUS_MCEERR_AR, memory failure's "Recovered" and
/// xfs's notify_failure (its FAN_FS_ERROR event).
#[test]
fn loads_from_poison_are_machine_checks() {
    let Some(out) = BATCH.outcome("mce") else { return };
    assert!(!out.contains("not ok"), "a guest check failed: {out}");
    assert!(out.has_line("1..19"), "expected 19 TAP results: {out}");
    assert_eq!(out.exit_code, 0, "{out}");
    let delivered =
        out.console.lines().filter(|l| l.contains("machine check for a load from poisoned pmem")).count();
    assert_eq!(delivered, 2, "one machine check in the kernel's copy, one in the process: {out}");
}

#[test]
fn poison_from_the_host_is_in_badblocks_at_boot() {
    let Some(out) = BATCH.outcome("poison_host") else { return };
    assert!(out.contains("NVDIMM poison from the start: 1 range(s)"), "{out}");
    // 21504 bytes in: sector 42; 4 KiB: 8 sectors.
    assert!(out.has_line("badblocks: 42 8"), "{out}");
    assert!(out.has_line("poison: read failed"), "{out}");
    assert_eq!(out.exit_code, 0, "{out}");
}

#[test]
fn persist_across_boots() {
    let (Some(w), Some(r)) = (BATCH.outcome("persist_write"), BATCH.outcome("persist_read")) else { return };
    assert_eq!(w.exit_code, 0, "first boot: {w}");
    assert!(w.contains(&format!("persist: wrote {MARKER}")), "{w}");
    assert!(w.contains("flushed to"), "daxvmm must msync the file at power-off: {w}");
    // sync and the unmount flush the guest's pmem disk: its driver writes the NFIT flush hint.
    let flushes = w.console.lines().find_map(|l| {
        l.trim()
            .strip_prefix("daxvmm: pmem0: the guest flushed it ")?
            .split_once(" times")?
            .0
            .parse::<u64>()
            .ok()
    });
    assert!(flushes.is_some_and(|n| n > 0), "the guest's flushes must reach daxvmm: {flushes:?}: {w}");
    assert_eq!(r.exit_code, 0, "second boot (its setup also checks the host file holds the marker): {r}");
    assert!(r.contains(&format!("persist: read {MARKER}")), "{r}");
}

#[test]
fn fsynced_data_survives_sigkill() {
    let Some(out) = BATCH.outcome("kill9") else { return };
    let rounds = kill_rounds();
    for r in 1..=rounds {
        assert!(out.contains(&format!("kill9: round {r} kept its fsynced marker")), "round {r}: {out}");
    }
    assert_eq!(out.exit_code, 0, "{out}");
    assert!(out.contains(&format!("persist: read {MARKER}-round{rounds}")), "{out}");
}

#[test]
fn fsynced_data_on_virtio_pmem_survives_sigkill() {
    let Some(out) = BATCH.outcome("kill9_virtio") else { return };
    assert!(out.contains("kill9: round 1 kept its fsynced marker"), "{out}");
    assert_eq!(out.exit_code, 0, "{out}");
    assert!(out.contains(&format!("persist: read {MARKER}-round1")), "{out}");
}

/// The value in a daxvmm log line like "daxvmm RSS 52 MiB".
fn mib_after(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn big_region_costs_nothing_until_touched() {
    let Some(out) = BATCH.outcome("big_lazy") else { return };
    assert_eq!(out.exit_code, 0, "{out}");
    assert!(out.has_line("33554432"), "/dev/pmem0 must be 16G (33554432 sectors): {out}");
    let rss = mib_after(&out.console, "daxvmm RSS ").unwrap_or_else(|| panic!("no RSS line: {out}"));
    // The guest's kernel and initramfs touch tens of MiB of its 256M RAM (65 MiB at 908e9b4's successor,
    // the initramfs a little bigger); a touched 16G region would be gigabytes.
    assert!(rss < 128, "daxvmm RSS {rss} MiB at guest init, expected < 128 MiB with 256M of RAM: {out}");
    let pmem_rss = mib_after(&out.console, "pmem0: smaps KernelPageSize ")
        .and_then(|_| mib_after(&out.console[out.console.find("pmem0: smaps")?..], ", Rss "));
    assert_eq!(pmem_rss, Some(0), "the untouched 16G region must have no resident pages: {out}");
}

#[test]
fn hugetlb_backing_in_smaps() {
    let Some(out) = BATCH.outcome("hugetlb") else { return };
    assert_eq!(out.exit_code, 0, "{out}");
    assert!(out.contains("pmem0: 512M backed by hugetlb memfd (2M pages)"), "{out}");
    assert!(out.contains("pmem0: smaps KernelPageSize 2048 KiB"), "smaps must show 2 MiB pages: {out}");
    assert!(!out.contains("not ok"), "DAX checks on hugetlb-backed pmem: {out}");
}

// ---- Bad --pmem input: an error naming it, exit 1 or 2, no panic, and the user's file untouched. ----

fn bad_pmem(test: &str, pmem: &[&str], mention: &[&str]) {
    let k = some_kernel();
    let k = k.to_string_lossy();
    let mut a = vec!["--kernel", &*k, "--timeout", "10s"];
    for p in pmem {
        a.extend_from_slice(&["--pmem", p]);
    }
    assert_rejected(test, &args(&a), mention);
}

fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("daxvmm-pmem-test-{}-{name}", std::process::id()))
}

#[test]
fn bad_pmem_size_not_2m_multiple() {
    bad_pmem("bad_pmem_size_not_2m_multiple", &["3M"], &["multiple of 2m"]);
}

#[test]
fn bad_pmem_larger_than_hugetlb_pool() {
    // Far more 1 GiB pages than any test machine has reserved.
    bad_pmem("bad_pmem_larger_than_hugetlb_pool", &["4T,backing=hugetlb-1g"], &["hugetlb"]);
}

#[test]
fn bad_pmem_file_of_wrong_size_is_left_alone() {
    let f = scratch("wrong-size.img");
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(&f, &data).expect("write the test file");
    let spec = format!("8M,file={}", f.display());
    bad_pmem("bad_pmem_file_of_wrong_size_is_left_alone", &[&spec], &["resize=on"]);
    let after = std::fs::read(&f).expect("the file must still be there");
    assert!(after == data, "the backing file was changed by a failed start");
    let _ = std::fs::remove_file(&f);
}

#[test]
fn bad_pmem_label_file_of_wrong_size_is_left_alone() {
    // The data file is new, the label file beside it is not the size asked for: the start fails, the
    // label file is untouched and the data file this start created is gone again.
    let f = scratch("labelled.img");
    let labels = scratch("labelled.img.labels");
    let _ = std::fs::remove_file(&f);
    std::fs::write(&labels, [0x5au8; 100]).expect("write the label file");
    let spec = format!("8M,file={},label-size=128K", f.display());
    bad_pmem(
        "bad_pmem_label_file_of_wrong_size_is_left_alone",
        &[&spec],
        &["labelled.img.labels", "is 100 bytes"],
    );
    assert_eq!(std::fs::read(&labels).expect("the label file must still be there"), [0x5au8; 100]);
    assert!(!f.exists(), "a failed start left {} behind", f.display());
    let _ = std::fs::remove_file(&labels);
}

#[test]
fn bad_pmem_label_size_out_of_range() {
    bad_pmem("bad_pmem_label_size_out_of_range", &["8M,label-size=4K"], &["label-size", "128k to 16m"]);
    bad_pmem("bad_pmem_label_size_out_of_range", &["8M,type=e820,label-size=128K"], &["type=e820"]);
}

#[test]
fn bad_pmem_poison_outside_the_region_or_unaligned() {
    let test = "bad_pmem_poison_outside_the_region_or_unaligned";
    bad_pmem(test, &["8M,poison=8M+512"], &["poison=", "inside the region"]);
    bad_pmem(test, &["8M,poison=100+512"], &["poison=", "multiples of 512"]);
    bad_pmem(test, &["8M,type=e820,poison=0+512"], &["poison", "type=e820"]);
}

#[test]
fn bad_pmem_directory_as_file() {
    let d = std::env::temp_dir();
    let spec = format!("8M,file={}", d.display());
    bad_pmem("bad_pmem_directory_as_file", &[&spec], &["directory"]);
}

#[test]
fn bad_pmem_too_many_dimms() {
    bad_pmem("bad_pmem_too_many_dimms", &["2M"; 9], &["at most 8"]);
}

#[test]
fn bad_pmem_overlaps_ram() {
    bad_pmem("bad_pmem_overlaps_ram", &["2M,addr=0x200000"], &["overlaps guest ram"]);
}

#[test]
fn bad_pmem_unknown_option() {
    bad_pmem("bad_pmem_unknown_option", &["2M,colour=blue"], &["colour"]);
}

#[test]
fn bad_pmem_never_leaves_a_new_file_behind() {
    // The spec is fine, but another one is not: a failed start must not create the first one's file.
    let f = scratch("not-created.img");
    let _ = std::fs::remove_file(&f);
    let spec = format!("4M,file={}", f.display());
    bad_pmem("bad_pmem_never_leaves_a_new_file_behind", &[&spec, "4T,backing=hugetlb-1g"], &["hugetlb"]);
    assert!(!f.exists(), "a failed start left {} behind", f.display());
}
