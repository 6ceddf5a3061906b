#!/usr/bin/env bash
# Sets a fresh Debian 12 machine up for daxvmm and boots a guest: installs what is missing, builds the
# static daxvmm, the guest kernel (Linux 7.2, ~6 minutes the first time) and the guest initramfs, then
# boots the guest with 2 vCPUs and runs a command in it; then runs the truncate-vs-unpin race scenario on
# ext4 under all 6 of its schedules (`daxvmm test`, one more guest boot) and prints the result table.
# On a host with hardware KVM daxvmm runs directly; where /dev/kvm cannot boot an ordinary guest (kvm-pvm)
# or is missing, it runs inside the test host VM. Exits 0 when both worked (the guest ran the command and
# powered off; the race runs found no violation), else with the first non-zero daxvmm exit code. Inside
# the test host VM a guest that triple-faults or stops running is run once more, saying so: QEMU TCG's
# nested SVM does that to guests now and then, also with a good kernel (the test suite reruns them too).
#
# usage: scripts/quickstart.sh [daxvmm options...]   (default: --cpus 2 --mem 512M)
source "$(dirname "$0")/lib.sh"

"$DAXVMM_ROOT/scripts/setup-host.sh"
eval "$("$DAXVMM_ROOT/scripts/build-all.sh")"
guest_cmd='echo "hello from a daxvmm guest: $(uname -sr), CPUs online $(cat /sys/devices/system/cpu/online)"'
# The guest boots in seconds (under a minute in the test host VM); one that stopped running is seen at
# the timeout.
args=(--kernel "$DAXVMM_GUEST_KERNEL" --initrd "$DAXVMM_GUEST_INITRD" --cmdline "-- $guest_cmd" --timeout 2m)
[ $# -gt 0 ] && args+=("$@") || args+=(--cpus 2 --mem 512M)

# What daxvmm and the guest kernel print on the faults of QEMU TCG's nested SVM that the test suite
# also reruns (tests/src/case.rs: TRIPLE_FAULT, NO_VCPU_EXIT, ALWAYS_EMULATION_FAULTS).
emulation_faults="triple fault \(KVM_EXIT_SHUTDOWN\)|no vCPU exited to daxvmm in the last|still haven't responded to the NMI|did not leave the guest within"
run_daxvmm() {
	if [ "$(kvm_where)" = direct ]; then
		"$DAXVMM_BIN" "$@"
		return
	fi
	local out rc attempt
	out=$(mktemp)
	for attempt in 1 2; do
		"$DAXVMM_ROOT/scripts/daxvmm-nested.sh" "$@" 2>&1 | tee "$out"
		rc=${PIPESTATUS[0]}
		if [ $rc != 0 ] && [ $attempt = 1 ] && grep -qE "$emulation_faults" "$out"; then
			log "the guest hit an emulation fault inside the test host VM (a triple fault, or a vCPU that stopped running: QEMU TCG's nested SVM does that now and then, also with a good kernel): running it once more"
			continue
		fi
		break
	done
	rm -f "$out"
	return $rc
}
if [ "$(kvm_where)" = direct ]; then
	log "hardware KVM found: running daxvmm directly"
else
	log "this host's /dev/kvm cannot boot an ordinary Linux guest$([ -d /sys/module/kvm_pvm ] && echo ' (it is kvm-pvm)'): running daxvmm inside the test host VM"
fi
set +e
run_daxvmm "${args[@]}"
rc=$?
log "daxvmm exited with $rc"
[ $rc = 0 ] || exit $rc

log "race demo: truncate vs unpin on ext4 under every schedule (daxvmm test; docs/fault-injection.md)"
run_daxvmm test --kernel "$DAXVMM_GUEST_KERNEL" --initrd "$DAXVMM_GUEST_INITRD" --scenario truncate-unpin --fs ext4 \
	--out "${TMPDIR:-/tmp}/daxvmm-quickstart-race"
rc=$?
log "daxvmm test exited with $rc (0: every run clean)"
exit $rc
