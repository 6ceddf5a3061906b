#!/usr/bin/env bash
# Runs one daxvmm command inside the test host VM, for hosts whose /dev/kvm cannot boot an ordinary Linux
# guest (kvm-pvm) or that have no KVM at all. Takes daxvmm's own arguments; --kernel and --initrd name host
# files, which are copied into the test host VM. The guest console streams to stdout (no stdin: the guest
# cannot be used interactively this way) and the script exits with daxvmm's exit code.
#
# usage: scripts/daxvmm-nested.sh --kernel BZIMAGE [--initrd INITRD] [other daxvmm options]
source "$(dirname "$0")/lib.sh"

args=() kernel='' initrd=''
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) kernel=$2; args+=(--kernel /guest/bzImage); shift 2 ;;
	--initrd) initrd=$2; args+=(--initrd /guest/initrd.cpio.lz4); shift 2 ;;
	-h | --help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) args+=("$1"); shift ;;
	esac
done
[ -n "$kernel" ] || die "--kernel is required"
vmargs=(--kernel "$kernel")
[ -z "$initrd" ] || vmargs+=(--initrd "$initrd")

batch=$(mktemp)
trap 'rm -f "$batch" "$batch.out"' EXIT
printf 'daxvmm\tdaxvmm %s\n' "$(printf '%q ' "${args[@]}")" >"$batch"
log "running daxvmm inside the test host VM (QEMU TCG with nested SVM; this host's KVM cannot boot the guest)"
# The test host VM itself rarely wedges or resets under QEMU TCG's nested SVM (README, "Tests and
# benchmarks"); then the run goes once more in a new one.
for attempt in 1 2; do
	"$DAXVMM_ROOT/scripts/test-host-vm.sh" --batch "$batch" "${vmargs[@]}" 2>&1 | tee "$batch.out" |
		grep -v -e '^@@DAXVMM-' -e '^daxvmm-l1:' || true
	rc=$(sed -n 's/^@@DAXVMM-CASE-END daxvmm rc=\([0-9]*\)@@.*/\1/p' "$batch.out")
	[ -z "$rc" ] || exit "$rc"
	# Not when it never booted (bad input) or could not set KVM up: those would fail the same way again.
	grep -aq 'booting the test host VM' "$batch.out" || break
	grep -aq '@@DAXVMM-NO-KVM' "$batch.out" && break
	[ $attempt = 2 ] || log "the test host VM stopped before daxvmm finished (a fault of the emulation, not of daxvmm); running it once more"
done
die "the test host VM did not finish the run (see the output above)"
