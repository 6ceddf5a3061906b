#![allow(clippy::unwrap_used)]

use super::*;

/// A minimal x86-64 ELF object: the null section, .modinfo with `info`, and the section names.
pub(crate) fn fake_ko(info: &[&str]) -> Vec<u8> {
    let mut modinfo = Vec::new();
    for kv in info {
        modinfo.extend_from_slice(kv.as_bytes());
        modinfo.push(0);
    }
    let names = b"\0.modinfo\0.shstrtab\0";
    let (modinfo_at, names_at) = (64, 64 + modinfo.len());
    let shoff = names_at + names.len();
    let mut elf = vec![0u8; 64];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
    elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
    elf.extend_from_slice(&modinfo);
    elf.extend_from_slice(names);
    for (name, at, size) in [(0u32, 0, 0), (1, modinfo_at, modinfo.len()), (10, names_at, names.len())] {
        let mut sh = [0u8; 64];
        sh[..4].copy_from_slice(&name.to_le_bytes());
        sh[0x18..0x20].copy_from_slice(&(at as u64).to_le_bytes());
        sh[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
        elf.extend_from_slice(&sh);
    }
    elf
}

const MD_MAKEFILE: &str = "# device mapper\n\
    dm-mod-y += dm.o dm-table.o\n\
    obj-$(CONFIG_BLK_DEV_DM)\t+= dm-mod.o\n\
    obj-$(CONFIG_DM_LOG_WRITES)\t+= dm-log-writes.o \\\n\tdm-extra.o   # a continuation\n\
    obj-$(CONFIG_DM_FLAKEY) += dm-flakey.o\n";

/// A tree of release 6.12.117 whose modules.order lists the device-mapper modules and xfs.
pub(crate) fn tree(name: &str) -> PathBuf {
    let t = std::env::temp_dir().join(format!("daxvmm-modules-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&t);
    for d in ["include/config", "drivers/md", "fs/xfs"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    std::fs::write(t.join(".config"), "CONFIG_BLK_DEV_DM=m\n").unwrap();
    std::fs::write(t.join("include/config/kernel.release"), "6.12.117\n").unwrap();
    std::fs::write(
        t.join("modules.order"),
        "drivers/md/dm-mod.o\ndrivers/md/dm-log-writes.o\ndrivers/md/dm-flakey.o\nfs/xfs/xfs.o\n",
    )
    .unwrap();
    std::fs::write(t.join("drivers/md/Makefile"), MD_MAKEFILE).unwrap();
    std::fs::write(t.join("fs/xfs/Makefile"), "obj-$(CONFIG_XFS_FS) := xfs.o\n").unwrap();
    let v = "vermagic=6.12.117 SMP mod_unload ";
    let kos: [(&str, &[&str]); 4] = [
        ("drivers/md/dm-mod.ko", &[v, "depends=", "name=dm_mod"]),
        ("drivers/md/dm-log-writes.ko", &["depends=dm-mod", v]),
        ("drivers/md/dm-flakey.ko", &["depends=dm-mod", v]),
        ("fs/xfs/xfs.ko", &[v, "softdep=pre: crc32c dm-flakey post: nothing", "depends="]),
    ];
    // Modules are built after the .config.
    std::thread::sleep(std::time::Duration::from_millis(20));
    for (path, info) in kos {
        std::fs::write(t.join(path), fake_ko(info)).unwrap();
    }
    t
}

fn names(m: &TreeModules) -> Vec<&str> {
    m.modules.iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn kbuild_lines_name_the_objects_of_each_option() {
    let got = kbuild_objects(MD_MAKEFILE);
    let want = [
        ("BLK_DEV_DM", "dm-mod"),
        ("DM_LOG_WRITES", "dm-log-writes"),
        ("DM_LOG_WRITES", "dm-extra"),
        ("DM_FLAKEY", "dm-flakey"),
    ];
    assert_eq!(got, want.map(|(s, o)| (s.to_string(), o.to_string())));
    assert!(kbuild_objects("obj-y += a.o\nobj-$(CONFIG_X) += sub/\nobj-$(CONFIG_Y\n").is_empty());
}

#[test]
fn dependencies_load_first_and_only_what_the_options_need_is_taken() {
    let t = tree("order");
    let m = find(&t, &["DM_LOG_WRITES", "BLK_DEV_DM"]).unwrap();
    assert_eq!(m.release, "6.12.117");
    assert_eq!(names(&m), ["dm_mod", "dm_log_writes"]);
    assert_eq!(m.modules[1].install, "kernel/drivers/md/dm-log-writes.ko");
    assert_eq!(m.modules[1].file, t.join("drivers/md/dm-log-writes.ko"));
    // A soft "pre:" dependency the tree built loads first; crc32c, not in modules.order, is left out.
    let m = find(&t, &["XFS_FS"]).unwrap();
    assert_eq!(names(&m), ["dm_mod", "dm_flakey", "xfs"]);
    // modules.order of kernels before 6.3 names the .ko files.
    std::fs::write(t.join("modules.order"), "drivers/md/dm-mod.ko\ndrivers/md/dm-flakey.ko\n").unwrap();
    assert_eq!(names(&find(&t, &["DM_FLAKEY"]).unwrap()), ["dm_mod", "dm_flakey"]);
    std::fs::remove_dir_all(&t).unwrap();
}

#[test]
fn an_unbuilt_stale_foreign_or_unreadable_module_is_one_error_naming_the_fix() {
    let t = tree("errors");
    let e = find(&t, &["DM_SNAPSHOT"]).unwrap_err().to_string();
    assert!(e.contains("CONFIG_DM_SNAPSHOT=m, but modules.order lists no module built for it"), "{e}");
    assert!(e.contains("-j$(nproc) modules"), "{e}");

    std::fs::write(t.join("drivers/md/dm-mod.ko"), fake_ko(&["vermagic=6.1.0 SMP"])).unwrap();
    let e = find(&t, &["BLK_DEV_DM"]).unwrap_err().to_string();
    assert!(e.contains("drivers/md/dm-mod.ko was built for 6.1.0, the tree's kernel is 6.12.117"), "{e}");

    std::fs::write(t.join("drivers/md/dm-mod.ko"), b"#!/bin/sh\n").unwrap();
    let e = find(&t, &["BLK_DEV_DM"]).unwrap_err().to_string();
    assert!(e.contains("dm-mod.ko is not a kernel module daxvmm can read: not a 64-bit"), "{e}");

    std::fs::write(t.join("drivers/md/dm-flakey.ko"), fake_ko(&["depends=dm-bufio", "vermagic=6.12.117"]))
        .unwrap();
    let e = find(&t, &["DM_FLAKEY"]).unwrap_err().to_string();
    assert!(
        e.contains("module dm_flakey needs module dm_bufio, which the tree's modules.order does not list"),
        "{e}"
    );

    std::fs::remove_file(t.join("drivers/md/dm-log-writes.ko")).unwrap();
    let e = find(&t, &["DM_LOG_WRITES"]).unwrap_err().to_string();
    assert!(e.contains("drivers/md/dm-log-writes.ko is listed in modules.order but not built"), "{e}");

    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(t.join(".config"), "CONFIG_XFS_FS=m\n").unwrap();
    let e = find(&t, &["XFS_FS"]).unwrap_err().to_string();
    assert!(e.contains("fs/xfs/xfs.ko is older than .config"), "{e}");

    std::fs::remove_file(t.join("modules.order")).unwrap();
    let e = find(&t, &["XFS_FS"]).unwrap_err().to_string();
    assert!(e.starts_with(&format!("--kernel {}: cannot read modules.order: ", t.display())), "{e}");
    std::fs::remove_dir_all(&t).unwrap();
}

#[test]
fn modinfo_of_any_bytes_is_an_answer_not_a_panic() {
    let good = fake_ko(&["vermagic=6.12.117", "depends=a,b", "garbage-without-equals"]);
    let info = modinfo(&good).unwrap();
    assert_eq!(
        info,
        [("vermagic", "6.12.117"), ("depends", "a,b")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
    // Every truncation and every single-byte corruption of the headers.
    for n in 0..good.len() {
        let _ = modinfo(&good[..n]);
    }
    for at in (0..64).chain(good.len() - 192..good.len()) {
        for b in [0u8, 0x7f, 0xff] {
            let mut bad = good.clone();
            bad[at] = b;
            let _ = modinfo(&bad);
        }
    }
    assert_eq!(modinfo(&fake_ko(&[])[..70]), Err("its section headers are truncated"));
}

#[test]
fn the_archive_lists_the_release_and_load_order_first_and_is_padded_to_2_mib() {
    let t = tree("pack");
    let m = find(&t, &["DM_LOG_WRITES"]).unwrap();
    let path = t.join("guest-modules.cpio");
    std::fs::write(&path, vec![1u8; 5 << 20]).unwrap();
    let size = pack(&m, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!((size, bytes.len() as u64), (2 << 20, 2 << 20), "rewritten, not appended to");
    let list = "6.12.117\nkernel/drivers/md/dm-mod.ko\nkernel/drivers/md/dm-log-writes.ko\n";
    let first = format!("{LIST}\0");
    let at = bytes.windows(first.len()).position(|w| w == first.as_bytes()).unwrap();
    assert_eq!(at, 110, "the list is the first entry");
    let data_at = (110 + first.len()).div_ceil(4) * 4;
    assert_eq!(&bytes[data_at..data_at + list.len()], list.as_bytes());
    let ko = std::fs::read(t.join("drivers/md/dm-log-writes.ko")).unwrap();
    let name = b"6.12.117/kernel/drivers/md/dm-log-writes.ko\0";
    assert!(bytes.windows(name.len()).any(|w| w == name));
    assert!(bytes.windows(ko.len()).any(|w| w == ko.as_slice()));
    assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    assert!(bytes[bytes.len() - 4096..].iter().all(|b| *b == 0), "padding is zeros");
    std::fs::remove_dir_all(&t).unwrap();
}
