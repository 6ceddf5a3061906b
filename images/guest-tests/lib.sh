# Sourced by the guest test scripts: an NVDIMM namespace in fsdax mode and a filesystem made for DAX.

# Converts the namespace behind /dev/pmemN to fsdax mode unless it already has DAX (label-less NFIT regions
# start raw, without DAX). A virtio-pmem disk (daxvmm type=virtio, QEMU virtio-pmem-pci) is raw too but
# already has DAX: its driver asks for struct pages (ND_REGION_PAGEMAP), so nothing is converted there.
ensure_fsdax() {
	_name=${1#/dev/}
	[ "$(cat "/sys/block/$_name/queue/dax")" = 1 ] && return 0
	ndctl create-namespace -f -e "$(basename "$(readlink -f "/sys/block/$_name/device")")" -m fsdax >/dev/null
}

# mkfs_dax ext4|xfs DEV. 2 MiB stripes make the allocators hand out 2 MiB-aligned extents, which PMD
# faults need. xfs gets the reverse-mapping btree: without it, memory failure on a DAX page cannot reach
# xfs's notify_failure (which finds the file from the block) and takes the generic path instead.
mkfs_dax() {
	case $1 in
	ext4) mkfs.ext4 -q -F -b 4096 -E stride=512,stripe_width=512 "$2" ;;
	xfs) mkfs.xfs -q -f -m reflink=0,rmapbt=1 -d su=2m,sw=1 "$2" ;;
	*) echo "unknown filesystem $1 (ext4 or xfs)" >&2; return 1 ;;
	esac
}
