#!/usr/bin/env bash
# pmem bandwidth benchmark: sequential memcpy write and read bandwidth through a shared mapping of a file
# on ext4 -o dax in a guest, under daxvmm (--pmem) and under QEMU (-device nvdimm), both backed by 2 MiB
# hugetlb memory, beside the host's own memcpy bandwidth on hugetlb memory measured by the same program
# (daxvmm-dax-check). All three run on one host in one run: directly on a hardware-KVM host, or inside
# ONE test host VM elsewhere (then the numbers are emulated; only the ratios carry over).
#
# usage: scripts/bench-pmem.sh [--mib 1024] [--passes 3] [--where auto|direct|nested]
#          [--daxvmm PATH] [--kernel PATH] [--initrd PATH]
# Goals (issue tracker): guest/host >= 0.9, daxvmm >= QEMU.
source "$(dirname "$0")/lib.sh"

mib=1024 passes=3 where=auto daxvmm='' kernel='' initrd=''
while [ $# -gt 0 ]; do
	case $1 in
	--mib) mib=$2; shift 2 ;;
	--passes) passes=$2; shift 2 ;;
	--where) where=$2; shift 2 ;;
	--daxvmm) daxvmm=$2; shift 2 ;;
	--kernel) kernel=$2; shift 2 ;;
	--initrd) initrd=$2; shift 2 ;;
	-h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
[[ $mib =~ ^[1-9][0-9]*$ ]] || die "--mib wants a positive number, got '$mib'"
[[ $passes =~ ^[1-9][0-9]*$ ]] || die "--passes wants a positive number, got '$passes'"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found; run scripts/setup-host.sh"
arts=$(resolve_artifacts "$daxvmm" "$kernel" "$initrd") || exit 1
{ read -r daxvmm; read -r kernel; read -r initrd; } <<<"$arts"
[ "$where" = auto ] && where=$(kvm_where)

musl=x86_64-unknown-linux-musl
log "building daxvmm-dax-check (release, $musl)"
(cd "$DAXVMM_ROOT" && cargo build --quiet --release --target $musl -p daxvmm-guest-tools --bin daxvmm-dax-check) >&2 ||
	die "cargo build of daxvmm-dax-check failed"
check=${CARGO_TARGET_DIR:-$DAXVMM_ROOT/target}/$musl/release/daxvmm-dax-check

# The region holds ext4 and a MIB-sized file: twice the file, rounded up to a GiB.
pmem_mib=$(( (mib * 2 + 1023) / 1024 * 1024 ))
pages=$(( pmem_mib / 2 + 64 ))
case $where in
direct) k=$kernel i=$initrd d=$daxvmm c=$check ;;
nested) k=/guest/bzImage i=/guest/initrd.cpio.lz4 d=/bin/daxvmm c=/bin/daxvmm-dax-check ;;
*) die "--where is auto, direct or nested, got '$where'" ;;
esac
grow="[ \$(cat /proc/sys/vm/nr_hugepages) -ge $pages ] || echo $pages > /proc/sys/vm/nr_hugepages"
guest_cmd="quiet -- /tests/pmem-bw.sh $mib $passes"
work=$(mktemp -d "${TMPDIR:-/tmp}/daxvmm-bench-pmem.XXXXXX")
trap 'rm -rf "$work"' EXIT
{
	printf 'host\t%s; %s bw --hugetlb %s %s\n' "$grow" "$c" "$mib" "$passes"
	printf 'daxvmm\t%s; %s --kernel %s --initrd %s --mem 512M --timeout 20m --pmem %sM,backing=hugetlb-2m --cmdline %q\n' \
		"$grow" "$d" "$k" "$i" "$pmem_mib" "$guest_cmd"
	printf 'qemu\t%s; qemu-system-x86_64 -machine pc,nvdimm=on -enable-kvm -cpu host -m 512M,slots=2,maxmem=%sM -object memory-backend-memfd,id=nv0,size=%sM,hugetlb=on,hugetlbsize=2M,share=on -device nvdimm,memdev=nv0,id=nvdimm0 -kernel %s -initrd %s -append %q -nographic -no-reboot\n' \
		"$grow" "$((pmem_mib + 1024))" "$pmem_mib" "$k" "$i" "console=ttyS0 noxsave reboot=k panic=1 $guest_cmd"
} >"$work/batch"

log "benchmark: memcpy bandwidth of a ${mib} MiB DAX file, $passes passes; host, daxvmm, qemu ($where)"
# Nested: room for the hugetlb pool (the region) beside the guests' RAM.
test_host_vm batch --where "$where" --split "$work/out" --batch "$work/batch" --with-qemu --add "$check" \
	--daxvmm "$daxvmm" --kernel "$kernel" --initrd "$initrd" --mem "$(( (pmem_mib + 3072 + 1023) / 1024 ))G" \
	--timeout 3600 --case-timeout 1500 || die "the test host VM did not finish the benchmark"

bw_of() { # case -> "write read"
	awk '/write_MBps=/ {
		w = $0; sub(/.*write_MBps=/, "", w); sub(/ .*/, "", w)
		r = $0; sub(/.*read_MBps=/, "", r); sub(/[^0-9.].*/, "", r)
		print w, r; exit
	}' "$work/out/$1" 2>/dev/null
}
read -r hw hr <<<"$(bw_of host)"
read -r dw dr <<<"$(bw_of daxvmm)"
read -r qw qr <<<"$(bw_of qemu)"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }

echo
echo "pmem bandwidth: memcpy through a shared mapping of a ${mib} MiB file, $passes passes each way (MB/s)"
echo "host: the same program on 2M hugetlb memory; guests: ext4 -o dax on a 2M-hugetlb-backed NVDIMM"
echo "all measured on the same host in the same run ($where$([ "$where" = nested ] && echo ': inside one test host VM' || true))"
printf '  %-8s write %9s  read %9s\n' host "${hw:-none}" "${hr:-none}"
printf '  %-8s write %9s  read %9s   guest/host: write %s, read %s\n' daxvmm "${dw:-none}" "${dr:-none}" "$(ratio "$dw" "$hw")" "$(ratio "$dr" "$hr")"
printf '  %-8s write %9s  read %9s   guest/host: write %s, read %s\n' qemu "${qw:-none}" "${qr:-none}" "$(ratio "$qw" "$hw")" "$(ratio "$qr" "$hr")"
echo "  daxvmm/qemu: write $(ratio "$dw" "$qw"), read $(ratio "$dr" "$qr")"
[ "$where" = nested ] && echo "  (inside the test host VM the numbers are emulated; the ratios are what carries over)"
[ -n "$hw" ] && [ -n "$dw" ] && [ -n "$qw" ] || { tail -n 20 "$work"/out/* >&2; die "a measurement is missing; see the output above"; }
