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
# fuzz/artifacts/TARGET/; replay one with `cargo +nightly fuzz run TARGET FILE` in fuzz/.
#
# usage: scripts/fuzz.sh [--seconds N] [TARGET...]   (default: 60 seconds, every target)
source "$(dirname "$0")/lib.sh"

seconds=60 targets=()
while [ $# -gt 0 ]; do
	case $1 in
	--seconds) seconds=$2; shift 2 ;;
	-h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) die "unknown option '$1' (see --help)" ;;
	*) targets+=("$1"); shift ;;
	esac
done
[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "--seconds wants a positive number, got '$seconds'"
rustup toolchain list | grep -q '^nightly' || { log "installing the nightly toolchain"; rustup toolchain install nightly --profile minimal >&2; }
command -v cargo-fuzz >/dev/null || { log "installing cargo-fuzz (a few minutes)"; cargo install cargo-fuzz --locked >&2; }
cd "$DAXVMM_ROOT/fuzz"
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
for t in "${targets[@]}"; do
	log "fuzzing $t for ${seconds}s"
	# With pipefail the pipeline fails exactly when the fuzzer does (the filter never fails).
	cargo +nightly fuzz run "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 |
		{ grep -E '^(#[0-9]+ +DONE|Done|==|SUMMARY|artifact_prefix|Test unit)' || true; } ||
		die "fuzz target $t failed; the crashing input is in fuzz/artifacts/$t/"
	log "$t: no crash in ${seconds}s"
done
