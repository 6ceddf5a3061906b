#!/usr/bin/env bash
# The whole daxvmm test suite, as CI runs it (.ci/run) and as the README's quick start tells users to:
#   1. installs what is missing (scripts/setup-host.sh), checks formatting and clippy;
#   2. runs every crate's unit tests (no KVM needed);
#   3. builds the static daxvmm, the guest kernel and the guest initramfs (cached);
#   4. runs the integration tests, which boot real guests: directly on a host with hardware KVM, otherwise
#      inside the test host VM (QEMU TCG with nested SVM);
#   5. prints one summary: tests passed/failed/skipped and how many guest boots really ran, and where.
# Exit status 0 only when nothing failed.
#
# usage: scripts/test.sh [--no-lint] [--unit-only] [cargo test filter...]
source "$(dirname "$0")/lib.sh"

lint=1 unit_only=0 filters=()
while [ $# -gt 0 ]; do
	case $1 in
	--no-lint) lint=0; shift ;;
	--unit-only) unit_only=1; shift ;;
	-h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) filters+=("$1"); shift ;;
	esac
done

cd "$DAXVMM_ROOT"
"$DAXVMM_ROOT/scripts/setup-host.sh"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
failed=0

if [ $lint = 1 ]; then
	log "cargo fmt --check"
	cargo fmt --all --check || { echo "error: formatting differs; run cargo fmt" >&2; failed=1; }
	log "cargo clippy -D warnings"
	cargo clippy --quiet --workspace --all-targets -- -D warnings || failed=1
fi

log "unit tests"
cargo test --no-fail-fast --workspace --exclude daxvmm-tests "${filters[@]}" 2>&1 | tee -a "$results" || failed=1

boot_log=${DAXVMM_BOOT_LOG:-$DAXVMM_ROOT/target/daxvmm-guest-boots.log}
export DAXVMM_BOOT_LOG=$boot_log
mkdir -p "$(dirname "$boot_log")"
: >"$boot_log"
if [ $unit_only = 0 ]; then
	log "building the static daxvmm, guest kernel and initramfs"
	if artifacts=$("$DAXVMM_ROOT/scripts/build-all.sh"); then
		eval "$artifacts"
	else
		echo "error: building the guest artifacts failed; the guest-booting tests will skip" >&2
		failed=1
	fi
	# The deliberately broken kernel the suite must catch (tests/tests/refcount.rs).
	log "building the broken-break-layout kernel variant"
	if broken=$("$DAXVMM_ROOT/scripts/build-guest-kernel.sh" --variant broken-break-layout); then
		export DAXVMM_GUEST_KERNEL_BROKEN=$broken
	else
		echo "error: building the broken-break-layout kernel failed; the test that needs it will skip" >&2
		failed=1
	fi
	# The pre-series kernel the race suite compares with (tests/tests/race.rs): Linux 6.12, no patches.
	log "building the linux-6.12 comparison kernel"
	if old=$("$DAXVMM_ROOT/scripts/build-guest-kernel.sh" --variant linux-6.12); then
		export DAXVMM_GUEST_KERNEL_612=$old
	else
		echo "error: building the linux-6.12 kernel failed; the tests that need it will skip" >&2
		failed=1
	fi
	log "checking the guest kernel patches (checkpatch --strict)"
	"$DAXVMM_ROOT/scripts/check-patches.sh" || failed=1
	log "integration tests (they boot guests)"
	cargo test --no-fail-fast -p daxvmm-tests "${filters[@]}" -- --nocapture 2>&1 | tee -a "$results" || failed=1
fi

# Totals over every cargo test binary that ran.
read -r passed fails ignored < <(awk '/^test result:/ {
	for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) g += $(i-1) }
} END { print p+0, f+0, g+0 }' "$results")
ran=$(grep -cv '^SKIP' "$boot_log" || true)
skipped=$(grep -c '^SKIP' "$boot_log" || true)
where=$(awk '!/^SKIP/ {print $1}' "$boot_log" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')
echo
echo "guest boots: $ran ran${where:+ ($where)}, $skipped skipped$( [ "$skipped" -gt 0 ] && printf ' (reasons: %s)' "$(grep '^SKIP' "$boot_log" | cut -d' ' -f2- | sort -u | paste -sd ';' -)")"
[ "$fails" = 0 ] || failed=1
echo "summary: $passed passed, $fails failed, $ignored skipped"
exit $failed
