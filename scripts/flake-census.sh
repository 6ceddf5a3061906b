#!/usr/bin/env bash
# Flake census (issue 16): runs the unit tests (every crate's library and binaries, the test harness's
# own included; not the integration tests under tests/tests, which boot guests) N times while a
# CPU hog keeps every core busy, and prints per failing test its failures out of N and the failure
# messages grouped. A test that fails in any run is flaky (or broken): fix it at its cause.
# With --nested K it then runs the integration suite (scripts/test.sh --no-lint) K times, unloaded, and
# prints per run and in all: nested guest boots, test host VM faults by kind (the deliberate ones of
# harness_retry left out) per 100 nested boots, reruns, and failed tests with the QEMU that ran the test
# host VM (the one on PATH). --runs 0 skips the unit tests. --qemu-root DIR runs the test host VM on
# another QEMU beside the installed one: Debian packages unpacked into DIR with `dpkg-deb -x` (for the
# bookworm 7.2 row of README: qemu-system-x86, qemu-system-common, qemu-system-data, seabios and
# ipxe-qemu of bookworm); that QEMU finds its firmware and modules relative to DIR/usr/bin.
#
# usage: scripts/flake-census.sh [--runs N] [--no-load] [--nested K] [--qemu-root DIR]
#        (default: 50 runs, loaded, K=0, the QEMU on PATH)
source "$(dirname "$0")/lib.sh"

runs=50
load=1
nested=0
while [ $# -gt 0 ]; do
	case $1 in
	--runs) runs=$2; shift 2 ;;
	--no-load) load=0; shift ;;
	--nested) nested=$2; shift 2 ;;
	--qemu-root) qemu_root=$2; shift 2 ;;
	-h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
[[ $runs =~ ^[0-9]+$ ]] || die "--runs $runs: give a number"
[[ $nested =~ ^[0-9]+$ ]] || die "--nested $nested: give a number"
if [ -n "${qemu_root:-}" ]; then
	[ -x "$qemu_root/usr/bin/qemu-system-x86_64" ] ||
		die "--qemu-root $qemu_root: no usr/bin/qemu-system-x86_64 there (unpack the QEMU packages with dpkg-deb -x)"
	export PATH="$qemu_root/usr/bin:$PATH" QEMU_MODULE_DIR="$qemu_root/usr/lib/x86_64-linux-gnu/qemu"
fi

cd "$DAXVMM_ROOT"
log "building the unit tests once"
unit=(cargo test --workspace --lib --bins --quiet)
"${unit[@]}" --no-run 2>/dev/null || die "the unit tests do not build"
work=$(mktemp -d "${TMPDIR:-/tmp}/daxvmm-census.XXXXXX")
hogs=()
cleanup() { [ ${#hogs[@]} -eq 0 ] || kill "${hogs[@]}" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
if [ $load = 1 ] && [ "$runs" -gt 0 ]; then
	for _ in $(seq "$(jobs_count)"); do
		(while :; do :; done) &
		hogs+=($!)
	done
	log "a CPU hog on each of $(jobs_count) cores"
fi
failed_runs=0
for i in $(seq 1 "$runs"); do
	out=$work/run-$i.log
	if "${unit[@]}" >"$out" 2>&1; then
		log "run $i of $runs: passed"
	else
		failed_runs=$((failed_runs + 1))
		log "run $i of $runs: FAILED"
	fi
done
# "test NAME ... FAILED" lines name the failures; each "---- NAME stdout ----" block has its message.
[ "$runs" -eq 0 ] || grep -h '^test .* \.\.\. FAILED$' "$work"/run-*.log | sed 's/^test \(.*\) \.\.\. FAILED$/\1/' | sort | uniq -c |
	sort -rn >"$work/failures" || true
[ "$runs" -eq 0 ] || echo "unit tests: $runs runs$([ $load = 1 ] && echo " under a CPU hog on every core"), $failed_runs with a failure"
if [ "$runs" -eq 0 ]; then
	:
elif [ -s "$work/failures" ]; then
	while read -r count name; do
		echo "  $name: failed $count of $runs"
		grep -h -A3 "^---- $name stdout ----" "$work"/run-*.log | grep -v '^----\|^--$' | sed 's/^/      /' | sort | uniq -c | sort -rn | head -5
	done <"$work/failures"
else
	echo "  no test failed"
fi
unit_failed=$failed_runs
[ ${#hogs[@]} -eq 0 ] || kill "${hogs[@]}" 2>/dev/null
hogs=()

# The nested suite: each run's boot log (tests/src/record.rs lines) and summary, kept per run.
nested_failed=0
qemu=$(qemu-system-x86_64 --version 2>/dev/null | head -n1)
for i in $(seq 1 "$nested"); do
	log "nested suite run $i of $nested ($qemu)"
	DAXVMM_BOOT_LOG=$work/boots-$i.log "$DAXVMM_ROOT/scripts/test.sh" --no-lint >"$work/nested-$i.log" 2>&1 ||
		nested_failed=$((nested_failed + 1))
	tail -n 3 "$work/nested-$i.log" | sed "s/^/  run $i: /"
done
if [ "$nested" -gt 0 ]; then
	# Boots ran nested; faults without harness_retry's deliberate crashes (a sysrq-triggered panic).
	boots=$(cat "$work"/boots-*.log | grep -c '^nested ' || true)
	faults=$(cat "$work"/boots-*.log | grep '^FAULT ' | grep -v 'sysrq triggered crash' || true)
	nfaults=$(grep -c . <<<"$faults" || true)
	echo "nested suite: $nested runs on $qemu, $nested_failed with a failure"
	# No boot at all is no measurement: the test host VM did not start (its console logs say why).
	[ "$boots" -gt 0 ] || echo "  no nested guest booted: the test host VM never ran a case, so these are no fault figures (see $DAXVMM_CACHE/test-host/logs/)"
	echo "  nested guest boots: $boots; test host VM faults (deliberate ones left out): $nfaults$(
		[ "$boots" -gt 0 ] && awk -v f="$nfaults" -v b="$boots" 'BEGIN { printf " = %.1f per 100 nested boots", 100 * f / b }')"
	[ -z "$faults" ] || awk '{ print $2 }' <<<"$faults" | sort | uniq -c | sed 's/^ */    /; s/$/ (kind)/'
	echo "  reruns: $(cat "$work"/boots-*.log | grep -c '^RERUN ' || true)"
	grep -h '^test .* \.\.\. FAILED$' "$work"/nested-*.log | sort | uniq -c | sed 's/^/  failed: /' || true
fi
[ "$unit_failed" = 0 ] && [ "$nested_failed" = 0 ]
