#!/usr/bin/env bash
# Boot time, daxvmm against QEMU: `bench boot` (tests/src/bin/bench.rs; --help).
exec cargo run --quiet --manifest-path "$(dirname "$0")/../Cargo.toml" -p daxvmm-tests --bin bench -- boot "$@"
