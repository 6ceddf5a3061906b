#!/usr/bin/env bash
# DAX memcpy bandwidth, daxvmm and QEMU guests (NFIT and virtio-pmem) against the host: `bench pmem` (tests/src/bin/bench.rs; --help).
exec cargo run --quiet --manifest-path "$(dirname "$0")/../Cargo.toml" -p daxvmm-tests --bin bench -- pmem "$@"
