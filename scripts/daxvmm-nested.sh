#!/usr/bin/env bash
# Runs one daxvmm command line inside the test host VM (tests/src/bin/test-host-vm.rs), for hosts whose
# /dev/kvm cannot boot an ordinary guest; exits with daxvmm's exit code.
# usage: scripts/daxvmm-nested.sh --kernel BZIMAGE [--initrd INITRD] [other daxvmm options]
exec cargo run --quiet --manifest-path "$(dirname "$0")/../Cargo.toml" -p daxvmm-tests --bin test-host-vm -- daxvmm "$@"
