#!/usr/bin/env bash
# Builds the daxvmm guest initramfs (LZ4-compressed newc cpio): busybox-static (one symlink per applet), images/init
# as /init, the static guest programs (built here with cargo for x86_64-unknown-linux-musl: daxvmm-guest,
# daxvmm-dax-check, daxvmm-refcount-test, daxvmm-race, daxvmm-fault-flood), the scripts in images/guest-tests as /tests, and e2fsprogs'
# mke2fs/mkfs.ext4, xfsprogs' mkfs.xfs, ndctl and daxctl with their shared libraries and the dynamic loader,
# and a modules.builtin index naming the device-dax drivers daxctl loads (built into the guest kernel).
# Cached in $DAXVMM_CACHE/images/<hash of every input file>/initrd.cpio.lz4; rebuilt only when an input
# changes. Progress goes to stderr; the initrd path to stdout.
#
# usage: scripts/build-initramfs.sh [--force]
source "$(dirname "$0")/lib.sh"
source "$DAXVMM_ROOT/images/pack.sh"

force=0
while [ $# -gt 0 ]; do
	case $1 in
	--force) force=1; shift ;;
	-h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

target_dir=${CARGO_TARGET_DIR:-$DAXVMM_ROOT/target}
musl=x86_64-unknown-linux-musl
rustup target list --installed 2>/dev/null | grep -qx $musl || die "the Rust target $musl is not installed; run scripts/setup-host.sh"
log "building the guest programs (release, $musl)"
(cd "$DAXVMM_ROOT" && cargo build --quiet --release --target $musl -p daxvmm-guest-tools -p daxvmm-refcount-test) >&2 ||
	die "cargo build of the guest programs failed"
guest_bins=()
for b in daxvmm-guest daxvmm-dax-check daxvmm-refcount-test daxvmm-race daxvmm-fault-flood; do
	guest_bins+=("$target_dir/$musl/release/$b")
done
guest_tests=("$DAXVMM_ROOT"/images/guest-tests/*)

sbin_tool() { # name -> absolute path of a host tool, also looking in the sbin directories
	PATH="$PATH:/usr/sbin:/sbin" command -v "$1" || die "$1 not found; run scripts/setup-host.sh (e2fsprogs, xfsprogs, ndctl, daxctl)"
}
mke2fs=$(readlink -f "$(sbin_tool mke2fs)")
mkfs_xfs=$(readlink -f "$(sbin_tool mkfs.xfs)")
ndctl=$(readlink -f "$(sbin_tool ndctl)")
daxctl=$(readlink -f "$(sbin_tool daxctl)")
# The read-only checks daxvmm-race runs after a filesystem's last run.
e2fsck=$(readlink -f "$(sbin_tool e2fsck)")
xfs_repair=$(readlink -f "$(sbin_tool xfs_repair)")
tools=("$mke2fs" "$mkfs_xfs" "$ndctl" "$daxctl" "$e2fsck" "$xfs_repair")
mapfile -t libs < <(shared_libs "${tools[@]}")
inputs=("$DAXVMM_ROOT/scripts/build-initramfs.sh" "$DAXVMM_ROOT/images/pack.sh" "$DAXVMM_ROOT/images/init" "$(busybox_static)" "${guest_bins[@]}" "${guest_tests[@]}" "${tools[@]}" "${libs[@]}")
[ -f /etc/mke2fs.conf ] && inputs+=(/etc/mke2fs.conf)

key=$(hash_files "${inputs[@]}")
out=$DAXVMM_CACHE/images/$key
if [ $force = 0 ] && [ -f "$out/initrd.cpio.lz4" ]; then
	log "guest initramfs $key is cached"
	echo "$out/initrd.cpio.lz4"
	exit 0
fi

log "packing the guest initramfs ($key)"
stage=$(mktemp -d "${TMPDIR:-/tmp}/daxvmm-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
stage_busybox "$stage"
install -m 0755 "$DAXVMM_ROOT/images/init" "$stage/init"
install -m 0755 "${guest_bins[@]}" "$stage/bin/"
# Guest-side test scripts, run as e.g. --cmdline '-- /tests/pmem-dax.sh ext4' (short: the kernel passes
# init at most 32 words).
mkdir -p "$stage/tests"
install -m 0755 "${guest_tests[@]}" "$stage/tests/"
stage_dynamic "$stage" "${tools[@]}"
# mkfs.ext4 is mke2fs under another name (it picks the ext4 defaults from mke2fs.conf).
ln -sf "$(basename "$mke2fs")" "$stage/$(dirname "$mke2fs")/mkfs.ext4"
rm -f "$stage/sbin/mkfs.ext4" "$stage/bin/mkfs.ext4"
[ -f /etc/mke2fs.conf ] && install -m 0644 /etc/mke2fs.conf "$stage/etc/mke2fs.conf"
# /init links /lib/modules/$(uname -r) to this directory.
mkdir -p "$stage/lib/modules/0.0.0"
printf 'kernel/drivers/dax/%s.ko\n' device_dax kmem >"$stage/lib/modules/0.0.0/modules.builtin"
touch "$stage/lib/modules/0.0.0/modules.order" "$stage/lib/modules/0.0.0/modules.builtin.modinfo"
depmod -b "$stage" 0.0.0 || die "depmod could not index the guest's modules.builtin (kmod)"
mkdir -p "$out"
# LZ4: the guest unpacks it several times faster than gzip (CONFIG_RD_LZ4).
pack_cpio "$stage" "$out/initrd.cpio.lz4" lz4
printf '%s\n' "${inputs[@]}" >"$out/inputs.txt"
log "guest initramfs: $out/initrd.cpio.lz4 ($(du -h "$out/initrd.cpio.lz4" | cut -f1))"
echo "$out/initrd.cpio.lz4"
