#!/bin/sh
# usage: /tests/pmem-dax.sh ext4|xfs [/dev/pmemN]
# Runs in a daxvmm guest. Turns the NVDIMM namespace behind the device into fsdax mode if it is not,
# makes the filesystem, mounts it with -o dax and checks that DAX is really on: the block queue, the mount
# options, STATX_ATTR_DAX, a MAP_SYNC mapping, and a 2 MiB (PMD) fault seen by the fs_dax tracepoint.
# On virtio-pmem MAP_SYNC must be refused instead: its writes become durable only through a flush
# request, so Linux marks it asynchronous.
# Prints TAP; the exit status is the number of failed checks.
fs=${1:?usage: pmem-dax.sh ext4|xfs [/dev/pmemN]}
dev=${2:-/dev/pmem0}
name=${dev#/dev/}
mnt=/mnt/$name
trace=/sys/kernel/tracing
. /tests/lib.sh
. /tests/tap.sh

echo "TAP version 13"
echo "# $fs on $dev ($(($(cat /sys/block/$name/size) / 2048)) MiB)"
if [ "$(cat /sys/block/$name/queue/dax)" != 1 ]; then
	check "namespace of $name converted to fsdax" ensure_fsdax "$dev"
fi
check "$name supports DAX (queue/dax = 1)" test "$(cat /sys/block/$name/queue/dax)" = 1
case $fs in
ext4 | xfs) check "mkfs.$fs" mkfs_dax "$fs" "$dev" ;;
*) echo "Bail out! unknown filesystem $fs"; exit 1 ;;
esac
mkdir -p "$mnt"
check "mount -t $fs -o dax" mount -t "$fs" -o dax "$dev" "$mnt"
check "/proc/mounts shows dax=always" grep -q "^$dev $mnt $fs .*dax=always" /proc/mounts
check "a new file has STATX_ATTR_DAX" sh -c "echo data > $mnt/small && daxvmm-dax-check statx $mnt/small"
if [ -d $trace/events/fs_dax ]; then
	echo 1 >$trace/events/fs_dax/dax_pmd_fault_done/enable
	echo >$trace/trace
fi
case $(readlink -f "/sys/block/$name") in
*/virtio*)
	echo "# $name is a virtio-pmem device"
	check "MAP_SYNC refused (virtio-pmem is asynchronous)" \
		sh -c "! daxvmm-dax-check touch $mnt/sync 4 --sync 2>$mnt/sync.err && grep 'MAP_SYNC is refused' $mnt/sync.err"
	;;
*) check "MAP_SYNC mapping of a 4 MiB file, every page written" daxvmm-dax-check touch "$mnt/sync" 4 --sync ;;
esac
echo >$trace/trace
check "shared mapping of a 4 MiB file, every page written" daxvmm-dax-check touch "$mnt/pmd" 4
check "a PMD fault was served (dax_pmd_fault_done ... NOPAGE, not FALLBACK)" \
	sh -c "grep -q 'dax_pmd_fault_done.*NOPAGE' $trace/trace && ! grep -q 'dax_pmd_fault_done.*FALLBACK' $trace/trace"
grep dax_pmd_fault_done $trace/trace 2>/dev/null | head -n 2 | sed 's/^ */#   /'
check "umount" umount "$mnt"
echo "1..$n"
exit $failed
