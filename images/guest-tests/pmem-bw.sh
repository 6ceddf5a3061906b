#!/bin/sh
# usage: /tests/pmem-bw.sh [MIB] [PASSES]
# Runs in a guest (under daxvmm or QEMU) with one NVDIMM: makes it fsdax + ext4 -o dax and measures memcpy
# bandwidth through a shared mapping of a MIB-sized file (default 1024), printing
# `pmem-bw: write_MBps=W read_MBps=R` for scripts/bench-pmem.sh.
set -e
mib=${1:-1024}
passes=${2:-3}
if [ "$(cat /sys/block/pmem0/queue/dax)" != 1 ]; then
	ndctl create-namespace -f -e "$(basename "$(readlink -f /sys/block/pmem0/device)")" -m fsdax >/dev/null
fi
mkfs.ext4 -q -F -b 4096 -E stride=512,stripe_width=512 /dev/pmem0
mkdir -p /mnt/pmem0
mount -t ext4 -o dax /dev/pmem0 /mnt/pmem0
echo "pmem-bw: $(daxvmm-dax-check bw /mnt/pmem0/bw "$mib" "$passes")"
umount /mnt/pmem0
