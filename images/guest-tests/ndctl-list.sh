#!/bin/sh
# usage: /tests/ndctl-list.sh
# Runs in a guest with two NVDIMMs that have label areas, under daxvmm or under QEMU, and prints what
# `ndctl list -RDNu -v` says of the platform, each listing as one line (indentation and newlines
# dropped) after "ndctl-list: booted " and "ndctl-list: namespace ". The first is the platform as booted;
# the second after fresh labels on both DIMMs and one 256 MiB fsdax namespace with a fixed uuid and name
# in region0. tests/tests/pmem.rs compares the two VMMs' lines field by field. Exit status 0 when every
# ndctl command worked.
set -e
listing() {
	ndctl list -RDNu -v | sed 's/^ *//' | tr -d '\n'
}
echo "ndctl-list: booted $(listing)"
ndctl disable-region all >/dev/null
ndctl init-labels -f all >/dev/null
ndctl enable-region all >/dev/null
ndctl create-namespace -r region0 -s 256M -m fsdax -a 2M --uuid=7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d \
	--name=compare >/dev/null
echo "ndctl-list: namespace $(listing)"
