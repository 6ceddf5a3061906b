#!/usr/bin/env bash
# Race interleavings per minute, forced schedules vs sleeps: `bench race` (tests/src/bin/bench.rs; --help).
exec cargo run --quiet --manifest-path "$(dirname "$0")/../Cargo.toml" -p daxvmm-tests --bin bench -- race "$@"
