#!/usr/bin/env bash
# virtio-blk O_DIRECT I/O, daxvmm against QEMU's virtio-blk-pci: `bench blk` (tests/src/bin/bench.rs; --help).
exec cargo run --quiet --manifest-path "$(dirname "$0")/../Cargo.toml" -p daxvmm-tests --bin bench -- blk "$@"
