#!/usr/bin/env bash
# Sets a fresh Debian 12 machine up for daxvmm and boots a guest: installs what is missing, builds the
# static daxvmm, the guest kernel (Linux 7.2, ~6 minutes the first time) and the guest initramfs, then
# boots the guest with 2 vCPUs and runs a command in it. On a host with hardware KVM daxvmm runs directly;
# where /dev/kvm cannot boot an ordinary guest (kvm-pvm) or is missing, it runs inside the test host VM.
# Exits with daxvmm's exit code (0: the guest ran the command and powered off).
#
# usage: scripts/quickstart.sh [daxvmm options...]   (default: --cpus 2 --mem 512M)
source "$(dirname "$0")/lib.sh"

"$DAXVMM_ROOT/scripts/setup-host.sh"
eval "$("$DAXVMM_ROOT/scripts/build-all.sh")"
guest_cmd='echo "hello from a daxvmm guest: $(uname -sr), CPUs online $(cat /sys/devices/system/cpu/online)"'
args=(--kernel "$DAXVMM_GUEST_KERNEL" --initrd "$DAXVMM_GUEST_INITRD" --cmdline "-- $guest_cmd" --timeout 5m)
[ $# -gt 0 ] && args+=("$@") || args+=(--cpus 2 --mem 512M)

if [ "$(kvm_where)" = direct ]; then
	log "hardware KVM found: running daxvmm directly"
	set +e
	"$DAXVMM_BIN" "${args[@]}"
else
	log "this host's /dev/kvm cannot boot an ordinary Linux guest$([ -d /sys/module/kvm_pvm ] && echo ' (it is kvm-pvm)'): running daxvmm inside the test host VM"
	set +e
	"$DAXVMM_ROOT/scripts/daxvmm-nested.sh" "${args[@]}"
fi
rc=$?
log "daxvmm exited with $rc"
exit $rc
