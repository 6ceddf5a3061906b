#!/bin/sh
# usage: /tests/devdax.sh create|ram
# Runs in a daxvmm guest with one label-less NVDIMM (namespace0.0) backed by a file.
# `create` turns the namespace into device-dax (ndctl create-namespace -m devdax, 2 MiB alignment), checks
# that /dev/dax0.0 exists with that alignment, maps 2 MiB of it, writes MARKER at its start and every other
# 4 KiB page with exactly one page fault (one PMD), and sees a 4 KiB mapping refused. The host then looks
# for MARKER in the backing file. `ram`, in a later boot from the same file, finds dax0.0 again (its info
# block is in the pmem), hands it to the kernel as memory (daxctl reconfigure-device --mode=system-ram),
# checks MemTotal grew by at least 3/4 of the device, then takes it back (offline-memory, --mode=devdax).
# Every line meant for the test starts with "devdax:"; exit status 0 when every step worked.
set -e
mode=${1:?usage: devdax.sh create|ram}
marker=${2:-daxvmm-devdax-marker-3b7e}
dev=dax0.0
fail() {
	echo "devdax: FAIL: $*"
	exit 1
}
# A value from daxctl's or ndctl's JSON (the image has no jq): json KEY < JSON.
json() {
	tr -d ' \n\t' | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}
mem_kib() {
	awk '/^MemTotal:/ { print $2 }' /proc/meminfo
}

case $mode in
create)
	out=$(ndctl create-namespace -f -e namespace0.0 -m devdax -a 2M) || fail "create-namespace: $out"
	[ "$(echo "$out" | json mode)" = devdax ] || fail "namespace mode: $out"
	[ -c /dev/$dev ] || fail "no /dev/$dev after create-namespace: $out"
	align=$(cat /sys/bus/dax/devices/$dev/align)
	echo "devdax: $dev align $align size $(cat /sys/bus/dax/devices/$dev/size)"
	[ "$align" = 2097152 ] || fail "alignment $align"
	probe=$(daxvmm-dax-check devdax /dev/$dev "$marker") || fail "$probe"
	echo "devdax: $probe"
	echo "devdax: created"
	;;
ram)
	[ -c /dev/$dev ] || fail "no /dev/$dev in the second boot: $(ndctl list -N)"
	size=$(cat /sys/bus/dax/devices/$dev/size)
	before=$(mem_kib)
	out=$(daxctl reconfigure-device --mode=system-ram $dev 2>&1) || fail "reconfigure to system-ram: $out"
	[ "$(echo "$out" | json mode)" = system-ram ] || fail "daxctl says: $out"
	after=$(mem_kib)
	echo "devdax: system-ram: MemTotal grew by $(((after - before) / 1024)) MiB of $((size >> 20)) MiB"
	[ $((after - before)) -ge $((size / 1024 * 3 / 4)) ] || fail "MemTotal $before -> $after kB"
	out=$(daxctl offline-memory $dev 2>&1) || fail "offline-memory: $out"
	out=$(daxctl reconfigure-device --mode=devdax $dev 2>&1) || fail "reconfigure to devdax: $out"
	[ "$(echo "$out" | json mode)" = devdax ] || fail "daxctl says: $out"
	echo "devdax: back to devdax, MemTotal $(($(mem_kib) / 1024)) MiB"
	[ "$(mem_kib)" -le "$before" ] || fail "MemTotal after offlining: $(mem_kib) kB, before $before kB"
	echo "devdax: ram steps passed"
	;;
*) fail "unknown mode $mode" ;;
esac
