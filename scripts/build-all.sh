#!/usr/bin/env bash
# Builds everything a guest boot needs: the static daxvmm (musl), the guest kernel
# (scripts/build-guest-kernel.sh) and the guest initramfs (scripts/build-initramfs.sh). All three are
# cached, so a run with nothing changed takes seconds. Progress on stderr; on stdout, shell assignments
# for the paths: eval "$(scripts/build-all.sh)" sets DAXVMM_BIN, DAXVMM_GUEST_KERNEL, DAXVMM_GUEST_INITRD.
#
# usage: scripts/build-all.sh [--variant default|debug]
source "$(dirname "$0")/lib.sh"

variant=default
while [ $# -gt 0 ]; do
	case $1 in
	--variant) variant=$2; shift 2 ;;
	-h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

musl=x86_64-unknown-linux-musl
log "building daxvmm (release, static, $musl)"
(cd "$DAXVMM_ROOT" && cargo build --quiet --release --target $musl -p daxvmm) >&2 || die "cargo build of daxvmm failed"
bin=${CARGO_TARGET_DIR:-$DAXVMM_ROOT/target}/$musl/release/daxvmm
kernel=$("$DAXVMM_ROOT/scripts/build-guest-kernel.sh" --variant "$variant")
initrd=$("$DAXVMM_ROOT/scripts/build-initramfs.sh")
printf 'export DAXVMM_BIN=%q DAXVMM_GUEST_KERNEL=%q DAXVMM_GUEST_INITRD=%q\n' "$bin" "$kernel" "$initrd"
