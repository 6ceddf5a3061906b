#!/bin/sh
# usage: /tests/poison.sh
# Runs in a daxvmm guest with one label-less NVDIMM (raw namespace0.0, /dev/pmem0), against the root
# device's _DSM: scrub and error injection as ndctl's own inject-error.sh does them on nfit_test.
# Blocks 42-49 are poisoned without a notification: the injection list shows them and the block device's
# badblocks stay empty (no scrub yet); uninjecting empties the list. Poisoned again and scrubbed
# (ndctl start-scrub, wait-scrub), they are in /sys/block/pmem0/badblocks, reading their pages fails
# with EIO while a page beside them reads; writing those pages clears the poison (the pmem driver's
# clear-error call), after which badblocks, the injection list and the reads are clean. Every line meant
# for the test starts with "poison:"; exit status 0 when every step worked.
set -e
ns=namespace0.0 dev=pmem0 bus=ndbus0
fail() {
	echo "poison: FAIL: $*"
	exit 1
}

# The injection list of the namespace as "BLOCK COUNT" lines (ndctl prints JSON; the image has no jq).
injected() {
	ndctl inject-error --status $ns | tr -d ' \n\t' |
		sed -n 's/.*"badblocks":\[\(.*\)\].*/\1/p' | sed 's/},{/\n/g' |
		sed -n 's/.*"block":\([0-9]*\),"count":\([0-9]*\).*/\1 \2/p'
}

# Whether reading 4 KiB page N of the block device works (the page cache reads whole pages).
reads() {
	dd if=/dev/$dev of=/dev/null bs=4096 skip="$1" count=1 2>/dev/null
}

echo "poison: bus commands: $(cat /sys/bus/nd/devices/$bus/commands)"
echo "poison: bus dsm_mask: $(cat /sys/bus/nd/devices/$bus/nfit/dsm_mask)"

ndctl inject-error --block=42 --count=8 --no-notify $ns >/dev/null
[ "$(injected)" = "42 8" ] || fail "after inject --no-notify the list is '$(injected)'"
[ -z "$(cat /sys/block/$dev/badblocks)" ] || fail "badblocks before a scrub: $(cat /sys/block/$dev/badblocks)"
echo "poison: injected 42 8, badblocks empty before a scrub"

ndctl inject-error --block=42 --count=8 --uninject $ns >/dev/null
[ -z "$(injected)" ] || fail "after uninject the list is '$(injected)'"
echo "poison: uninjected"

ndctl inject-error --block=42 --count=8 --no-notify $ns >/dev/null
ndctl start-scrub $bus >/dev/null
ndctl wait-scrub $bus >/dev/null
bad=$(cat /sys/block/$dev/badblocks)
echo "poison: badblocks after the scrub: $bad"
[ "$bad" = "42 8" ] || fail "badblocks after the scrub"
# Blocks 42-49 are in pages 5 (sectors 40-47) and 6 (48-55); page 8 is clean.
if reads 5; then fail "page 5 read despite its poison"; fi
reads 8 || fail "page 8 (no poison) did not read"
echo "poison: a read of the poisoned page fails, its neighbour reads"

dd if=/dev/zero of=/dev/$dev bs=4096 seek=5 count=2 conv=fsync 2>/dev/null || fail "writing pages 5-6"
[ -z "$(cat /sys/block/$dev/badblocks)" ] || fail "badblocks after the write: $(cat /sys/block/$dev/badblocks)"
[ -z "$(injected)" ] || fail "the list after the write: '$(injected)'"
echo 3 >/proc/sys/vm/drop_caches
reads 5 || fail "page 5 does not read after the write"
echo "poison: the write cleared it"
echo "poison: all steps passed"
