#!/usr/bin/env bash
# The whole daxvmm test suite, as CI runs it (.ci/run) and as the README's quick start tells users to:
#   1. installs what is missing (scripts/setup-host.sh), checks formatting and clippy;
#   2. runs every crate's unit tests (no KVM needed);
#   3. builds the static daxvmm, the guest kernel, the guest initramfs and the suite image with fstests
#      (all cached by content);
#   4. runs the integration tests, which boot real guests: directly on a host with hardware KVM, otherwise
#      inside the test host VM (QEMU TCG with nested SVM). Every fuzz target runs for a few seconds at the
#      lowest CPU priority meanwhile (scripts/fuzz.sh; DAXVMM_FUZZ_SECONDS each, default 10; not with a
#      filter). With --linux-6.12 (or DAXVMM_TEST_LINUX_612=1) the pre-series Linux 6.12 builds in the
#      background from step 1 on, and the test files with 6.12 tests (race, suites_tree) run last with
#      it; without, those tests skip and say so (CI leaves it out: on 2 cores the build does not finish
#      in the time the nested runs leave idle, and the whole no longer fits CI's 90 minutes);
#   5. prints the summary (tests/src/bin/test-summary.rs): guest boots, test host VM faults and reruns,
#      and `summary: P passed, F failed, S skipped`. Exit status 0 only when nothing failed.
#
# usage: scripts/test.sh [--no-lint] [--unit-only] [--linux-6.12] [cargo test filter...]
source "$(dirname "$0")/lib.sh"

lint=1 unit_only=0 filters=() failed=() with_612=${DAXVMM_TEST_LINUX_612:-0}
while [ $# -gt 0 ]; do
	case $1 in
	--no-lint) lint=0; shift ;;
	--unit-only) unit_only=1; shift ;;
	--linux-6.12) with_612=1; shift ;;
	-h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) filters+=("$1"); shift ;;
	esac
done
fail() { echo "error: $*" >&2; failed=(--failed); }

cd "$DAXVMM_ROOT"
"$DAXVMM_ROOT/scripts/setup-host.sh"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
# With --linux-6.12: built at the lowest CPU priority from here on, the pre-series Linux 6.12
# (tests/tests/race.rs compares with it) and its build tree with modules (tests/tests/suites_tree.rs),
# which only those two test files need, so they run last. (The deliberate bugs of tests/tests/mutants.rs
# are in the default kernel, off unless selected at boot: one 7.2 build.)
late_tests=(race suites_tree)
target=${CARGO_TARGET_DIR:-$DAXVMM_ROOT/target}
mkdir -p "$target"
bg_env=$(mktemp) bg_done=$(mktemp -u)
bg_log=$target/background-build.log fuzz_log=$target/fuzz.log
bg=''
if [ $unit_only = 0 ] && [ "$with_612" = 1 ]; then
	log "building the linux-6.12 kernel in the background (log: $bg_log)"
	(
		if k=$(nice -n 19 "$DAXVMM_ROOT/scripts/build-guest-kernel.sh" --variant linux-6.12) &&
			t=$("$DAXVMM_ROOT/scripts/build-guest-kernel.sh" --variant linux-6.12 --tree); then
			printf 'export DAXVMM_GUEST_KERNEL_612=%q DAXVMM_GUEST_TREE_612=%q\n' "$k" "$t" >"$bg_env"
		fi
		touch "$bg_done"
	) >"$bg_log" 2>&1 &
	bg=$!
fi
fuzz=
# Ends process $1 and everything below it (make's jobs too).
kill_tree() {
	local c
	for c in $(pgrep -P "$1"); do kill_tree "$c"; done
	kill "$1" 2>/dev/null
}
trap '[ -n "$bg" ] && kill_tree $bg; [ -n "$fuzz" ] && kill_tree $fuzz; rm -f "$results" "$bg_env" "$bg_done"' EXIT
export DAXVMM_BOOT_LOG=${DAXVMM_BOOT_LOG:-$DAXVMM_ROOT/target/daxvmm-guest-boots.log}
mkdir -p "$(dirname "$DAXVMM_BOOT_LOG")"
: >"$DAXVMM_BOOT_LOG"
if [ $lint = 1 ]; then
	cargo fmt --all --check || fail "formatting differs; run cargo fmt"
	cargo clippy --quiet --workspace --all-targets -- -D warnings || fail "clippy found problems"
fi

log "unit tests"
cargo test --no-fail-fast --workspace --exclude daxvmm-tests "${filters[@]}" 2>&1 | tee -a "$results" || fail "unit tests"
# The daxvmm binary's own tests again on the target it ships for: its allocator test can fail only
# there (vmm/src/allocator.rs).
cargo test --no-fail-fast --target x86_64-unknown-linux-musl -p daxvmm --bin daxvmm "${filters[@]}" 2>&1 |
	tee -a "$results" || fail "unit tests of the static daxvmm"
if [ $unit_only = 0 ]; then
	log "building the static daxvmm, the guest kernel and initramfs, and the suite image"
	artifacts=$("$DAXVMM_ROOT/scripts/build-all.sh") && eval "$artifacts" || fail "building the guest artifacts"
	# The suite image fstests runs in (tests/tests/suites.rs).
	DAXVMM_ROOTFS=$("$DAXVMM_ROOT/scripts/build-guest-rootfs.sh") || fail "building the suite image"
	export DAXVMM_ROOTFS
	# The idle-VM holder some batches keep open in the test host VM (tests/src/shared.rs, holding_kvm).
	cargo build --quiet --release --target x86_64-unknown-linux-musl -p daxvmm-test-host-tools || fail "building daxvmm-kvm-hold"
	export DAXVMM_KVM_HOLD_BIN=${CARGO_TARGET_DIR:-$DAXVMM_ROOT/target}/x86_64-unknown-linux-musl/release/daxvmm-kvm-hold
	"$DAXVMM_ROOT/scripts/check-patches.sh" || fail "checkpatch found problems"
	early_tests=()
	for f in "$DAXVMM_ROOT"/tests/tests/*.rs; do
		n=$(basename "$f" .rs)
		[[ " ${late_tests[*]} " == *" $n "* ]] || early_tests+=(--test "$n")
	done
	if [ ${#filters[@]} -eq 0 ]; then
		log "fuzzing in the background (log: $fuzz_log)"
		nice -n 19 "$DAXVMM_ROOT/scripts/fuzz.sh" --seconds "${DAXVMM_FUZZ_SECONDS:-10}" >"$fuzz_log" 2>&1 &
		fuzz=$!
	fi
	log "integration tests (they boot guests)"
	cargo test --no-fail-fast -p daxvmm-tests --lib --bins "${early_tests[@]}" "${filters[@]}" -- --nocapture 2>&1 |
		tee -a "$results" || fail "integration tests"
	if [ -n "$bg" ]; then
		log "waiting for the background build of the linux-6.12 kernel"
		while [ ! -e "$bg_done" ] && kill -0 $bg 2>/dev/null; do sleep 5; done
		if [ -s "$bg_env" ]; then
			source "$bg_env"
			log "linux-6.12 kernel: $DAXVMM_GUEST_KERNEL_612"
		else
			tail -30 "$bg_log" >&2
			fail "building the linux-6.12 kernel (log: $bg_log); the tests that need it skip"
		fi
	else
		log "SKIP: no linux-6.12 kernel without --linux-6.12 (about 25 more CPU-minutes): the 6.12 tests in ${late_tests[*]} skip"
	fi
	log "integration tests with linux-6.12 tests: ${late_tests[*]}"
	cargo test --no-fail-fast -p daxvmm-tests $(printf -- '--test %s ' "${late_tests[@]}") "${filters[@]}" -- --nocapture 2>&1 |
		tee -a "$results" || fail "integration tests"
	cargo test --quiet -p daxvmm-tests --doc "${filters[@]}" 2>&1 | tee -a "$results" || fail "doc tests"
	if [ -n "$fuzz" ]; then
		log "waiting for the fuzz targets"
		if wait $fuzz; then
			grep -E '^(target|[a-z_]+ +[0-9]+ )' "$fuzz_log" | tail -n 20
		else
			tail -30 "$fuzz_log" >&2
			fail "a fuzz target crashed or could not be built (log: $fuzz_log)"
		fi
		fuzz=''
	fi
fi
cargo run --quiet -p daxvmm-tests --bin test-summary -- --results "$results" "${failed[@]}"
