#!/bin/sh
# usage: /tests/persist.sh write|write-and-wait|read [/dev/pmemN [TAG]]
# Runs in a daxvmm guest with a file-backed --pmem. `write` makes the namespace fsdax, makes ext4, mounts it
# with -o dax and writes a marker file (the marker ends in -TAG when one is given), then syncs;
# `write-and-wait` does the same, syncs the file with fsync (dd conv=fsync), says so and then waits to be
# killed (for a test that kills daxvmm with SIGKILL after the fsync returned); `read`, in a later boot
# from the same backing file, mounts it again (the fsdax info block and the filesystem must have
# survived) and prints the marker. Exit status 0 when every step worked.
set -e
mode=${1:?usage: persist.sh write|read [/dev/pmemN]}
dev=${2:-/dev/pmem0}
name=${dev#/dev/}
mnt=/mnt/$name
marker=daxvmm-persist-marker-5f3a${3:+-$3}
. /tests/lib.sh
mkdir -p "$mnt"
case $mode in
write)
	ensure_fsdax "$dev"
	mkfs.ext4 -q -F -b 4096 "$dev"
	mount -t ext4 -o dax "$dev" "$mnt"
	echo "$marker" >"$mnt/marker"
	sync
	umount "$mnt"
	echo "persist: wrote $marker"
	;;
write-and-wait)
	ensure_fsdax "$dev"
	mkfs.ext4 -q -F -b 4096 "$dev"
	mount -t ext4 -o dax "$dev" "$mnt"
	echo "$marker" | dd of="$mnt/marker" conv=fsync 2>/dev/null
	sync
	echo "persist: wrote $marker"
	while :; do sleep 1; done
	;;
read)
	test "$(cat /sys/block/$name/queue/dax)" = 1 || { echo "persist: $name is not fsdax after reboot"; exit 1; }
	mount -t ext4 -o dax "$dev" "$mnt"
	echo "persist: read $(cat "$mnt/marker")"
	umount "$mnt"
	;;
*) echo "usage: persist.sh write|write-and-wait|read" >&2; exit 2 ;;
esac
