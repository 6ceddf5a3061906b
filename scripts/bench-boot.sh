#!/usr/bin/env bash
# Boot-time benchmark: daxvmm against QEMU (-enable-kvm -cpu host), same guest kernel, initramfs, memory and
# vCPUs, each guest running `true` with `quiet` on its command line. Each boot is timed by daxvmm-boot-timer
# (images/guest-tools) from the VMM's process start to the console line `daxvmm-guest: init reached`.
# The runs alternate daxvmm/QEMU and all happen on one host in one run: directly on a hardware-KVM host, or
# inside ONE test host VM (tests/src/bin/test-host-vm.rs) elsewhere. Prints each run, the medians side by side
# and the ratio daxvmm/qemu. Times inside the test host VM are software-emulated: compare only the ratio.
#
# usage: scripts/bench-boot.sh [--runs N] [--mem 512M] [--cpus 1] [--qemu-machine pc|microvm]
#          [--where auto|direct|nested] [--daxvmm PATH] [--kernel PATH] [--initrd PATH]
#   defaults: 5 runs each; --daxvmm/--kernel/--initrd as in test-host-vm batch ($DAXVMM_BIN,
#   $DAXVMM_GUEST_KERNEL, $DAXVMM_GUEST_INITRD or the cached builds).
source "$(dirname "$0")/lib.sh"

runs=5 mem=512M cpus=1 machine=pc where=auto daxvmm='' kernel='' initrd=''
while [ $# -gt 0 ]; do
	case $1 in
	--runs) runs=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--cpus) cpus=$2; shift 2 ;;
	--qemu-machine) machine=$2; shift 2 ;;
	--where) where=$2; shift 2 ;;
	--daxvmm) daxvmm=$2; shift 2 ;;
	--kernel) kernel=$2; shift 2 ;;
	--initrd) initrd=$2; shift 2 ;;
	-h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive number, got '$runs'"
[[ $cpus =~ ^[1-8]$ ]] || die "--cpus wants 1 to 8, got '$cpus'"
[[ $mem =~ ^[0-9]+[MG]$ ]] || die "--mem wants a size like 512M or 1G, got '$mem'"
case $machine in pc | microvm) ;; *) die "--qemu-machine is pc or microvm, got '$machine'" ;; esac
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found; run scripts/setup-host.sh"

musl=x86_64-unknown-linux-musl
target_dir=${CARGO_TARGET_DIR:-$DAXVMM_ROOT/target}
log "building daxvmm-boot-timer (release, $musl)"
(cd "$DAXVMM_ROOT" && cargo build --quiet --release --target $musl -p daxvmm-guest-tools --bin daxvmm-boot-timer) >&2 ||
	die "cargo build of daxvmm-boot-timer failed"
timer=$target_dir/$musl/release/daxvmm-boot-timer

arts=$(resolve_artifacts "$daxvmm" "$kernel" "$initrd") || exit 1
{ read -r daxvmm; read -r kernel; read -r initrd; } <<<"$arts"
[ "$where" = auto ] && where=$(kvm_where)
case $where in
direct) k=$kernel i=$initrd d=$daxvmm t=$timer ;;
nested) k=/guest/bzImage i=/guest/initrd.cpio.lz4 d=/bin/daxvmm t=/bin/daxvmm-boot-timer ;;
*) die "--where is auto, direct or nested, got '$where'" ;;
esac

# One batch, daxvmm and QEMU alternating so that drift in the host's speed hits both alike. The QEMU
# guest gets `noxsave` (a 7.2 guest needs it under nested KVM); daxvmm turns XSAVE off itself when nested.
timing="$t --timeout 300 --grace 60 --"
work=$(mktemp -d "${TMPDIR:-/tmp}/daxvmm-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
for n in $(seq 1 "$runs"); do
	printf 'daxvmm_%d\t%s %s --kernel %s --initrd %s --cpus %s --mem %s --cmdline %q\n' \
		"$n" "$timing" "$d" "$k" "$i" "$cpus" "$mem" "quiet -- true"
	printf 'qemu_%d\t%s qemu-system-x86_64 -machine %s -enable-kvm -cpu host -smp %s -m %s -kernel %s -initrd %s -append %q -nographic -no-reboot\n' \
		"$n" "$timing" "$machine" "$cpus" "$mem" "$k" "$i" "console=ttyS0 quiet noxsave -- true"
done >"$work/batch"

log "benchmark: $runs boots each of daxvmm and qemu ($machine), $cpus vCPU(s), $mem, $where"
test_host_vm batch --where "$where" --split "$work/out" --batch "$work/batch" --with-qemu --add "$timer" \
	--daxvmm "$daxvmm" --kernel "$kernel" --initrd "$initrd" --timeout $((300 + runs * 2 * 120)) --case-timeout 300 ||
	die "the test host VM did not finish the benchmark"

# "case marker_ms exit" (marker_ms "none" when the marker never came), from each case's timer line.
results=$(for n in $(seq 1 "$runs"); do for v in daxvmm qemu; do
	grep -ah 'daxvmm-boot-timer: marker_ms=' "$work/out/${v}_$n" 2>/dev/null | tr -d '\r' | head -n1 |
		sed "s/.*marker_ms=\([^ ]*\).*exit=\(.*\)/${v}_$n \1 \2/"
done; done)
[ -n "$results" ] || die "no timer results in the console"

median() { # numbers on stdin -> their median
	sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "none"; else if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
runs_of() { echo "$results" | awk -v p="$1_" 'index($1, p) == 1 { printf "%s%s", sep, $2; sep = " " }'; }
ok_of() { echo "$results" | awk -v p="$1_" 'index($1, p) == 1 && $2 != "none" { print $2 }'; }
dm=$(ok_of daxvmm | median)
qm=$(ok_of qemu | median)
failed=$(echo "$results" | awk '$2 == "none" { printf "%s%s", sep, $1; sep = " " }')

echo
echo "Boot time, VMM process start -> guest console 'daxvmm-guest: init reached' (guest runs 'true', quiet)"
echo "both VMMs were measured on the same host, in the same run, alternating ($where$([ "$where" = nested ] && echo ': inside one test host VM, QEMU TCG + nested SVM' || true))"
echo "guest: $(basename "$kernel") + $(basename "$initrd"), $cpus vCPU(s), $mem; qemu -machine $machine"
printf '  %-8s median %9s ms   runs (ms): %s\n' daxvmm "$dm" "$(runs_of daxvmm)"
printf '  %-8s median %9s ms   runs (ms): %s\n' qemu "$qm" "$(runs_of qemu)"
if [ "$dm" != none ] && [ "$qm" != none ]; then
	echo "  ratio daxvmm/qemu: $(awk -v a="$dm" -v b="$qm" 'BEGIN { printf "%.2f", a / b }')"
fi
[ "$where" = nested ] && echo "  (times inside the test host VM are emulated and slow; the ratio is what carries over)"
if [ -n "$failed" ]; then
	echo "  runs that never printed the marker: $failed"
	grep -a -A3 'marker_ms=none' "$work"/out/* | head -n 20 >&2 || true
fi
[ "$dm" != none ] && [ "$qm" != none ] || die "a VMM never reached the guest's /init; see the output above"
