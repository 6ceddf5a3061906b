#!/bin/sh
# usage: /tests/labels.sh create|check
# Runs in a daxvmm guest whose first NVDIMM has a label area (--pmem SIZE,label-size=N,file=PATH).
# `create` checks that the nfit driver found the DIMM's label functions (through its _DSM), writes a fresh
# label index (ndctl init-labels), creates two 256 MiB namespaces in the one region (fsdax, which sysfs
# calls "memory", and raw), writes a marker into the first one with a block device and prints each
# namespace's uuid; `check`, in a later boot from the same files, prints the namespaces the kernel found
# in the labels and reads the marker back. Every line meant for the test starts with "labels:". Exit
# status 0 when every step worked.
set -e
mode=${1:?usage: labels.sh create|check}
marker=daxvmm-label-marker-91c2

# "labels: namespace NAME mode MODE size BYTES uuid UUID" for each namespace with a uuid, in name order.
list() {
	for ns in /sys/bus/nd/devices/namespace*; do
		[ -f "$ns/uuid" ] || continue
		uuid=$(cat "$ns/uuid")
		[ -n "$uuid" ] && [ "$uuid" != 00000000-0000-0000-0000-000000000000 ] || continue
		echo "labels: namespace $(basename "$ns") mode $(cat "$ns/mode") size $(cat "$ns/size") uuid $uuid"
	done
}

commands=$(cat /sys/bus/nd/devices/nmem0/commands)
echo "labels: nmem0 commands: $commands"
echo "labels: nmem0 dsm_mask: $(cat /sys/bus/nd/devices/nmem0/nfit/dsm_mask)"
for c in get_size get_data set_data; do
	case " $commands " in *" $c "*) ;; *) echo "labels: nmem0 lacks $c"; exit 1 ;; esac
done

case $mode in
create)
	ndctl disable-region region0 >/dev/null
	ndctl init-labels -f nmem0
	ndctl enable-region region0 >/dev/null
	ndctl create-namespace -r region0 -s 256M -m fsdax >/dev/null
	ndctl create-namespace -r region0 -s 256M -m raw >/dev/null
	list
	dev=$(ndctl list -N -r region0 | sed -n 's/.*"blockdev":"\(pmem[0-9.]*\)".*/\1/p' | head -n1)
	[ -n "$dev" ] || dev=$(basename "$(ls -d /sys/bus/nd/devices/pfn*/block/pmem* | head -n1)")
	echo "$marker" | dd of="/dev/$dev" bs=4096 conv=sync,fsync 2>/dev/null
	echo "labels: wrote the marker to /dev/$dev"
	;;
check)
	list
	for b in /sys/block/pmem*; do
		if head -c ${#marker} "/dev/$(basename "$b")" 2>/dev/null | grep -q "$marker"; then
			echo "labels: read the marker from /dev/$(basename "$b")"
		fi
	done
	;;
*) echo "labels: unknown mode $mode (create or check)"; exit 2 ;;
esac
