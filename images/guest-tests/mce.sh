#!/bin/sh
# usage: /tests/mce.sh
# Runs in a daxvmm guest with one label-less NVDIMM (raw namespace0.0, /dev/pmem0): loads from poison
# that the kernel does not know about yet must raise machine checks, as on hardware.
# 1. In the kernel: page 5 (blocks 40-47) is poisoned without a notification, so badblocks stay empty
#    and the pmem driver reads it with its machine-check-safe copy. The read must fail with EIO (the
#    copy's fixup ran at the faulting instruction), the kernel must log the machine check, and the nfit
#    driver must have added the page to badblocks from the machine check alone. Writing the page clears
#    the poison and it reads again.
# 2. In user space: on xfs -o dax (reverse-mapping btree), a process maps a file's page, which is then
#    poisoned under it, and reads it again: it must die of SIGBUS BUS_MCEERR_AR at that address with its
#    signal context at the load instruction (not past it), memory failure must log the DAX page as
#    Recovered, xfs's notify_failure must have reported the lost data (a fanotify FAN_FS_ERROR event,
#    which the generic path does not send), and read() of the file must fail with EIO.
# Prints TAP; the exit status is the number of failed checks.
dev=/dev/pmem0 ns=namespace0.0 mnt=/mnt/pmem0
. /tests/lib.sh
. /tests/tap.sh

badblocks() {
	cat /sys/block/pmem0/badblocks
}

# Whether 4 KiB page N of the block device reads from the device (the page cache dropped first).
reads() {
	echo 3 >/proc/sys/vm/drop_caches
	dd if=$dev of=/dev/null bs=4096 skip="$1" count=1 2>/dev/null
}

unreadable() {
	! reads "$1"
}

echo "TAP version 13"
check "page 5 poisoned without notification" ndctl inject-error --block=40 --count=8 --no-notify $ns
check "badblocks empty before any scrub" test -z "$(badblocks)"
dmesg -c >/dev/null
check "reading page 5 fails (a machine check in the pmem driver's copy)" unreadable 5
dmesg | grep -i -e 'hardware error' -e 'machine check' | head -n 4 | sed 's/^/#   /'
check "the kernel logged the machine check" sh -c "dmesg | grep -q 'Hardware Error'"
check "the machine check alone put page 5 into badblocks" test "$(badblocks)" = "40 8"
check "page 4 beside it reads" reads 4
check "writing page 5 clears its poison" dd if=/dev/zero of=$dev bs=4096 seek=5 count=1 conv=fsync
check "badblocks empty after the write" test -z "$(badblocks)"
check "page 5 reads again" reads 5

check "namespace converted to fsdax" ensure_fsdax $dev
check "mkfs.xfs" mkfs_dax xfs $dev
mkdir -p $mnt
check "mount -t xfs -o dax" mount -t xfs -o dax $dev $mnt
check "a 4 KiB file written" sh -c "echo poison-me > $mnt/f && dd if=/dev/zero bs=4090 count=1 >>$mnt/f 2>/dev/null && sync"
dmesg -c >/dev/null
check "the process loading from its mapped page after the poison dies of SIGBUS BUS_MCEERR_AR at the load" \
	daxvmm-dax-check poison-load $mnt/f
cp /tmp/check.out /tmp/poison-load.out
sed -n 's/^/#   /p' /tmp/poison-load.out
pfn=$(sed -n 's/.*(pfn \(0x[0-9a-f]*\)).*/\1/p' /tmp/poison-load.out)
dmesg | grep -i -e 'hardware error' -e 'memory failure' | head -n 6 | sed 's/^/#   /'
check "memory failure recovered the DAX page $pfn" sh -c "dmesg | grep -q '$pfn: recovery action for dax page: Recovered'"
check "xfs's notify_failure handled it (the lost data came as a filesystem error event, EIO)" \
	grep -q -E 'the filesystem reported [0-9]+ error event\(s\), errno 5' /tmp/poison-load.out
check "badblocks name the page" test -n "$(badblocks)"
check "read() of the file fails with EIO" sh -c \
	"! cat $mnt/f >/dev/null 2>/tmp/cat.err; cat /tmp/cat.err; grep -q -i -e 'I/O error' -e 'input/output error' /tmp/cat.err"
check "umount" umount $mnt
echo "1..$n"
exit $failed
