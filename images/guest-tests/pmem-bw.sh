#!/bin/sh
# usage: /tests/pmem-bw.sh [MIB] [PASSES]
# Runs in a guest (under daxvmm or QEMU) with one NVDIMM or virtio-pmem device (/dev/pmem0 either way):
# makes it DAX-capable (ensure_fsdax) + ext4 -o dax and measures memcpy
# bandwidth through a shared mapping of a MIB-sized file (default 1024), printing
# `pmem-bw: write_MBps=W read_MBps=R` for scripts/bench-pmem.sh.
set -e
mib=${1:-1024}
passes=${2:-3}
. /tests/lib.sh
ensure_fsdax /dev/pmem0
mkfs_dax ext4 /dev/pmem0
mkdir -p /mnt/pmem0
mount -t ext4 -o dax /dev/pmem0 /mnt/pmem0
echo "pmem-bw: $(daxvmm-dax-check bw /mnt/pmem0/bw "$mib" "$passes")"
umount /mnt/pmem0
