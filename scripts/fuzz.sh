#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a while each:
#   fault_mmio      guest access sequences against the fault injector's MMIO handler
#   fault_schedule  schedule text parsing, and its print-then-parse round trip
#   pio_devices     guest port I/O on the port bus (COM1, pvpanic, ACPI PM, i8042, debug port) vs a model
#   bus_route       bus dispatch with arbitrary device windows and accesses, against a model
#   vmm_cli         the command line: sizes, durations, --pmem specs and the rest, with round trips
#   race_repro      repro file parsing and replay, through `daxvmm repro` with a fake VMM
#   race_session    a `daxvmm test` boot with a fake guest (fault events, console), its repro files reloaded
#   console_capture the bounded guest console capture (first and last bytes kept, the rest counted)
# Needs the nightly toolchain and cargo-fuzz, which it installs when missing. Crashes are kept in
# fuzz/artifacts/TARGET/; replay one with `cargo +nightly fuzz run TARGET FILE` in fuzz/. Prints one
# line per target (executions, seconds, crashes) and a table at the end; exits 1 if any target crashed.
# scripts/test.sh runs every target for a few seconds; README's figures come from a --runs run.
# --no-sanitizer builds without AddressSanitizer (cargo fuzz -s none): panics, failed assertions and
# aborts still count as crashes, and the targets that parse with clap run about 8 times faster.
#
# usage: scripts/fuzz.sh [--seconds N | --runs N] [--no-sanitizer] [TARGET...]
#        (default: 60 seconds, every target, with AddressSanitizer)
source "$(dirname "$0")/lib.sh"

seconds=60 runs=0 targets=() sanitizer=()
while [ $# -gt 0 ]; do
	case $1 in
	--seconds) seconds=${2:-}; shift 2 ;;
	--runs) runs=${2:-}; shift 2 ;;
	--no-sanitizer) sanitizer=(-s none); shift ;;
	-h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) die "unknown option '$1' (see --help)" ;;
	*) targets+=("$1"); shift ;;
	esac
done
[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "--seconds wants a positive number, got '$seconds'"
[[ $runs =~ ^[0-9]+$ ]] || die "--runs wants a number of executions, got '$runs'"
rustup toolchain list | grep -q '^nightly' || { log "installing the nightly toolchain"; rustup toolchain install nightly --profile minimal >&2; }
command -v cargo-fuzz >/dev/null || { log "installing cargo-fuzz (a few minutes)"; cargo install cargo-fuzz --locked >&2; }
cd "$DAXVMM_ROOT/fuzz"
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
if [ "$runs" -gt 0 ]; then
	limit=(-runs="$runs") what="$runs executions"
else
	limit=(-max_total_time="$seconds") what="${seconds}s"
fi
log "building the fuzz targets (nightly${sanitizer:+, no sanitizer})"
cargo +nightly fuzz build "${sanitizer[@]}" >&2
table=() crashed=0
for t in "${targets[@]}"; do
	log "fuzzing $t for $what"
	out=$(mktemp)
	rc=0
	cargo +nightly fuzz run "${sanitizer[@]}" "$t" -- "${limit[@]}" -rss_limit_mb=2048 >"$out" 2>&1 || rc=$?
	# libFuzzer's last words: "Done N runs in S second(s)".
	done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$out" | tail -n1 || true)
	execs=$(sed -E 's/^Done ([0-9]+) runs in ([0-9]+) .*/\1/' <<<"$done_line")
	secs=$(sed -E 's/^Done ([0-9]+) runs in ([0-9]+) .*/\2/' <<<"$done_line")
	if [ $rc -ne 0 ] || [ -z "$done_line" ]; then
		grep -E '^(==|SUMMARY|artifact_prefix|Test unit|thread .* panicked)' "$out" >&2 || tail -n 20 "$out" >&2
		log "$t: CRASHED (exit $rc); the input is in fuzz/artifacts/$t/"
		table+=("$(printf '%-16s %12s %8s  %s' "$t" "${execs:-?}" "${secs:-?}" "1 (fuzz/artifacts/$t/)")")
		crashed=$((crashed + 1))
	else
		log "$t: $execs executions in ${secs}s, no crash"
		table+=("$(printf '%-16s %12s %8s  %s' "$t" "$execs" "$secs" 0)")
	fi
	rm -f "$out"
done
printf '%-16s %12s %8s  %s\n' target executions seconds crashes
printf '%s\n' "${table[@]}"
[ $crashed -eq 0 ] || die "$crashed fuzz target(s) crashed"
