#!/usr/bin/env bash
# Mutant kills, forced schedules vs sleeps vs the sequential checks: `bench race` (tests/src/bin/bench.rs;
# --help) on the guest kernel, whose last patch carries the mutants; this builds it first (cached by content). The static daxvmm
# and the initramfs come from scripts/build-all.sh unless --daxvmm/--initrd say otherwise.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kernel=$("$root/scripts/build-guest-kernel.sh")
exec cargo run --quiet --manifest-path "$root/Cargo.toml" -p daxvmm-tests --bin bench -- race --kernel "$kernel" "$@"
