#!/usr/bin/env bash
# fstests -g dax (ext4 and xfs) and ndctl's dax-ext4.sh, dax-xfs.sh and mmap.sh under daxvmm and under
# QEMU, side by side: the same guest kernel, suite image and runner, one after the other in one host run
# (one test host VM where /dev/kvm cannot boot the guest). Builds what is missing first (daxvmm, the guest
# kernel, the suite image; cached), then runs `bench suites` (tests/src/bin/bench.rs); its options
# (see --help there): -g GROUP, --fs ext4,xfs, --ndctl TESTS ('' for none), --kernel, --rootfs.
# Prints a row per test with both verdicts and times, and each suite's wall time with the ratio.
# Exit status 0 only when every verdict agrees.
#
# usage: scripts/compare-qemu.sh [bench suites options]
source "$(dirname "$0")/lib.sh"
case ${1:-} in -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
"$DAXVMM_ROOT/scripts/setup-host.sh"
artifacts=$("$DAXVMM_ROOT/scripts/build-all.sh") || die "building daxvmm and the guest kernel failed"
eval "$artifacts"
DAXVMM_ROOTFS=${DAXVMM_ROOTFS:-$("$DAXVMM_ROOT/scripts/build-guest-rootfs.sh")} || die "building the suite image failed"
export DAXVMM_BIN DAXVMM_GUEST_KERNEL DAXVMM_GUEST_INITRD DAXVMM_ROOTFS
exec cargo run --quiet --manifest-path "$DAXVMM_ROOT/Cargo.toml" -p daxvmm-tests --bin bench -- suites "$@"
