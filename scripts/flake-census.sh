#!/usr/bin/env bash
# Flake census (issue 16): runs the unit tests (every crate but the integration harness) N times while a
# CPU hog keeps every core busy, and prints per failing test its failures out of N and the failure
# messages grouped. A test that fails in any run is flaky (or broken): fix it at its cause. The nested
# suite's own fault and rerun counts come from scripts/test.sh's summary lines, run by hand K times.
#
# usage: scripts/flake-census.sh [--runs N] [--no-load]   (default: 50 runs, loaded)
source "$(dirname "$0")/lib.sh"

runs=50
load=1
while [ $# -gt 0 ]; do
	case $1 in
	--runs) runs=$2; shift 2 ;;
	--no-load) load=0; shift ;;
	-h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs $runs: give a positive number"

cd "$DAXVMM_ROOT"
log "building the unit tests once"
cargo test --workspace --exclude daxvmm-tests --no-run --quiet 2>/dev/null || die "the unit tests do not build"
work=$(mktemp -d "${TMPDIR:-/tmp}/daxvmm-census.XXXXXX")
hogs=()
cleanup() { [ ${#hogs[@]} -eq 0 ] || kill "${hogs[@]}" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
if [ $load = 1 ]; then
	for _ in $(seq "$(jobs_count)"); do
		(while :; do :; done) &
		hogs+=($!)
	done
	log "a CPU hog on each of $(jobs_count) cores"
fi
failed_runs=0
for i in $(seq "$runs"); do
	out=$work/run-$i.log
	if cargo test --workspace --exclude daxvmm-tests --quiet >"$out" 2>&1; then
		log "run $i of $runs: passed"
	else
		failed_runs=$((failed_runs + 1))
		log "run $i of $runs: FAILED"
	fi
done
# "test NAME ... FAILED" lines name the failures; each "---- NAME stdout ----" block has its message.
grep -h '^test .* \.\.\. FAILED$' "$work"/run-*.log | sed 's/^test \(.*\) \.\.\. FAILED$/\1/' | sort | uniq -c |
	sort -rn >"$work/failures" || true
echo "unit tests: $runs runs$([ $load = 1 ] && echo " under a CPU hog on every core"), $failed_runs with a failure"
if [ -s "$work/failures" ]; then
	while read -r count name; do
		echo "  $name: failed $count of $runs"
		grep -h -A3 "^---- $name stdout ----" "$work"/run-*.log | grep -v '^----\|^--$' | sed 's/^/      /' | sort | uniq -c | sort -rn | head -5
	done <"$work/failures"
else
	echo "  no test failed"
fi
[ $failed_runs = 0 ]
