#!/bin/sh
# usage: /tests/refcount.sh ext4|xfs [/dev/pmemN]
# Runs in a daxvmm guest whose kernel has the dax_refcount driver (guest-kernel/patches): makes the NVDIMM
# fsdax, makes the filesystem and mounts it with -o dax, then runs daxvmm-refcount-test on it, which checks
# the fs-dax refcount invariants through /dev/dax_refcount and prints TAP. Exit status: the test program's.
fs=${1:?usage: refcount.sh ext4|xfs [/dev/pmemN]}
dev=${2:-/dev/pmem0}
mnt=/mnt/${dev#/dev/}
. /tests/lib.sh
set -e
ensure_fsdax "$dev"
mkfs_dax "$fs" "$dev"
mkdir -p "$mnt"
mount -t "$fs" -o dax "$dev" "$mnt"
echo "# daxvmm-refcount-test on $fs -o dax ($dev)"
# The driver's line when it bound to daxvmm's fault injector (the hook events then reach the host).
dmesg | grep -m1 'dax_refcount: fault injector' | sed 's/^\[[^]]*\] //' || echo "# dax_refcount: no fault injector bound"
set +e
daxvmm-refcount-test "$mnt"
rc=$?
umount "$mnt" || echo "# umount $mnt failed"
exit $rc
