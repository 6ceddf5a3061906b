#!/usr/bin/env bash
# The whole daxvmm test suite, as CI runs it (.ci/run) and as the README's quick start tells users to:
#   1. installs what is missing (scripts/setup-host.sh), checks formatting and clippy;
#   2. runs every crate's unit tests (no KVM needed), then every fuzz target for a few seconds
#      (scripts/fuzz.sh; DAXVMM_FUZZ_SECONDS each, default 10; not with --unit-only or a filter);
#   3. builds the static daxvmm, the guest kernel and its variants, the guest initramfs and the suite
#      image with fstests (cached);
#   4. runs the integration tests, which boot real guests: directly on a host with hardware KVM, otherwise
#      inside the test host VM (QEMU TCG with nested SVM);
#   5. prints the summary (tests/src/bin/test-summary.rs): guest boots, test host VM faults and reruns,
#      and `summary: P passed, F failed, S skipped`. Exit status 0 only when nothing failed.
#
# usage: scripts/test.sh [--no-lint] [--unit-only] [cargo test filter...]
source "$(dirname "$0")/lib.sh"

lint=1 unit_only=0 filters=() failed=()
while [ $# -gt 0 ]; do
	case $1 in
	--no-lint) lint=0; shift ;;
	--unit-only) unit_only=1; shift ;;
	-h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) filters+=("$1"); shift ;;
	esac
done
fail() { echo "error: $*" >&2; failed=(--failed); }

cd "$DAXVMM_ROOT"
"$DAXVMM_ROOT/scripts/setup-host.sh"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
export DAXVMM_BOOT_LOG=${DAXVMM_BOOT_LOG:-$DAXVMM_ROOT/target/daxvmm-guest-boots.log}
mkdir -p "$(dirname "$DAXVMM_BOOT_LOG")"
: >"$DAXVMM_BOOT_LOG"
if [ $lint = 1 ]; then
	cargo fmt --all --check || fail "formatting differs; run cargo fmt"
	cargo clippy --quiet --workspace --all-targets -- -D warnings || fail "clippy found problems"
fi

log "unit tests"
cargo test --no-fail-fast --workspace --exclude daxvmm-tests "${filters[@]}" 2>&1 | tee -a "$results" || fail "unit tests"
if [ $unit_only = 0 ] && [ ${#filters[@]} -eq 0 ]; then
	"$DAXVMM_ROOT/scripts/fuzz.sh" --seconds "${DAXVMM_FUZZ_SECONDS:-10}" || fail "a fuzz target crashed (scripts/fuzz.sh)"
fi
if [ $unit_only = 0 ]; then
	log "building the static daxvmm, guest kernel and initramfs, and the kernel variants"
	artifacts=$("$DAXVMM_ROOT/scripts/build-all.sh") && eval "$artifacts" || fail "building the guest artifacts"
	# The kernel of deliberate bugs the suite must catch (tests/tests/mutants.rs), and the pre-series
	# Linux 6.12 the race suite compares with (tests/tests/race.rs); a test without its kernel skips.
	DAXVMM_GUEST_KERNEL_MUTANTS=$("$DAXVMM_ROOT/scripts/build-guest-kernel.sh" --variant mutants) ||
		fail "building the mutants kernel"
	DAXVMM_GUEST_KERNEL_612=$("$DAXVMM_ROOT/scripts/build-guest-kernel.sh" --variant linux-6.12) ||
		fail "building the linux-6.12 kernel"
	# Its build tree, with modules: the suites' --kernel TREE of another version (tests/tests/suites.rs).
	DAXVMM_GUEST_TREE_612=$("$DAXVMM_ROOT/scripts/build-guest-kernel.sh" --variant linux-6.12 --tree) ||
		fail "finding the linux-6.12 build tree"
	export DAXVMM_GUEST_KERNEL_MUTANTS DAXVMM_GUEST_KERNEL_612 DAXVMM_GUEST_TREE_612
	# The suite image fstests runs in (tests/tests/suites.rs).
	DAXVMM_ROOTFS=$("$DAXVMM_ROOT/scripts/build-guest-rootfs.sh") || fail "building the suite image"
	export DAXVMM_ROOTFS
	# The idle-VM holder some batches keep open in the test host VM (tests/src/shared.rs, holding_kvm).
	cargo build --quiet --release --target x86_64-unknown-linux-musl -p daxvmm-test-host-tools || fail "building daxvmm-kvm-hold"
	export DAXVMM_KVM_HOLD_BIN=${CARGO_TARGET_DIR:-$DAXVMM_ROOT/target}/x86_64-unknown-linux-musl/release/daxvmm-kvm-hold
	"$DAXVMM_ROOT/scripts/check-patches.sh" || fail "checkpatch found problems"
	log "integration tests (they boot guests)"
	cargo test --no-fail-fast -p daxvmm-tests "${filters[@]}" -- --nocapture 2>&1 | tee -a "$results" ||
		fail "integration tests"
fi
cargo run --quiet -p daxvmm-tests --bin test-summary -- --results "$results" "${failed[@]}"
