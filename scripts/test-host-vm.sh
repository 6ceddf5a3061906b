#!/usr/bin/env bash
# Runs a batch of commands inside the "test host VM": QEMU TCG with AMD SVM + nested paging (-cpu max) and
# the pinned Debian 6.1 kernel (images/test-host.pin), in which the real kvm-amd runs, so that daxvmm (or
# QEMU) can boot KVM guests on a machine whose own /dev/kvm cannot (kvm-pvm; ../shared/notes/test-host-vm.md).
#
# usage: scripts/test-host-vm.sh --batch FILE [--mem 4G] [--cpus 2] [--timeout SECONDS] [--daxvmm PATH]
#          [--kernel PATH] [--initrd PATH] [--case-timeout SECONDS] [--with-qemu] [--add FILE]...
#   FILE: one case per line, NAME<TAB>SHELL COMMAND ('#' lines and blank lines are skipped). The commands run
#   in the test host VM, one after another, with stdin from /dev/null, and may use /guest/bzImage,
#   /guest/initrd.cpio.lz4 and /bin/daxvmm.
#   --daxvmm   the static daxvmm (default: $DAXVMM_BIN, else target/x86_64-unknown-linux-musl/release/daxvmm;
#              left out with a warning when that default does not exist)
#   --kernel   the guest bzImage (default: $DAXVMM_GUEST_KERNEL, else the cached scripts/build-guest-kernel.sh one)
#   --initrd   the guest initramfs (default: $DAXVMM_GUEST_INITRD, else scripts/build-initramfs.sh's)
#   --with-qemu  also pack qemu-system-x86_64 (its libraries and x86 firmware) to compare against
#   --add FILE   copy FILE (a static binary) into the VM's /bin; repeatable
#   --kvm-hold PATH  an experiment, off by default: the static daxvmm-kvm-hold (images/test-host-tools;
#              cargo build --release --target x86_64-unknown-linux-musl -p daxvmm-test-host-tools), which
#              the VM's /init then runs to keep one idle KVM VM open, so that no case's VM is the first or
#              the last one (also $DAXVMM_KVM_HOLD)
#   --timeout  limit on the whole QEMU run, in seconds (default 900)
#   --case-timeout  limit on each case inside the VM, in seconds (default 300); a case that outlives it is
#              killed (SIGKILL) and reported as rc=137
#   --stall    kill the VM when its console has been silent this long, in seconds (default: case timeout
#              + 60). Rarely the test host VM's own kernel stops running user space (both vCPUs stuck in
#              QEMU TCG's nested SVM, once both at one instruction in __schedule with interrupts off; seen
#              a few times in many dozens of batches), and then the in-VM timeouts cannot fire either; the
#              VM is killed, @@DAXVMM-L1-STALL@@ printed with each CPU's registers and local APIC and
#              each QEMU thread's state, and the exit status is 3. When its kernel still runs but is
#              wedged, its watchdogs would keep the console busy, so they panic it instead (loglevel=5
#              puts the backtrace on the console) and QEMU exits at once rather than at --timeout: a
#              soft lockup (softlockup_panic=1; seen once: daxvmm's process stuck on one CPU after its
#              guest powered off), a task blocked 120 s (hung_task_panic=1; seen once: khugepaged, with
#              daxvmm stuck past its own --timeout), an RCU stall (panic_on_rcu_stall).
# The console streams to stdout: each case between @@DAXVMM-CASE-BEGIN NAME@@ and
# @@DAXVMM-CASE-END NAME rc=N@@, then @@DAXVMM-BATCH-DONE@@ (@@DAXVMM-NO-KVM reason@@ if KVM could not be
# set up). Exit status: 0 when the batch completed (whatever the cases returned), 3 when the VM hung
# (--stall), 1 otherwise. A copy of
# the console is kept in $DAXVMM_CACHE/test-host/logs/ (the last 20 runs). $DAXVMM_L1_APPEND adds words to the
# test host kernel's command line (e.g. idle=poll, for experiments with the rare test host VM hang).
#
# Test host VMs take turns: one at a time per --cpus host CPUs (a lock slot in $DAXVMM_CACHE/test-host/).
#
# Measured on this 2-core machine (QEMU 7.2 TCG, pieces cached): a batch of one `true` case takes 6.2-7.3 s
# wall from start to exit; KVM is ready ~6-7 s after start (SeaBIOS + kernel load ~3.5 s, then 2.8-3.3 s of
# test host VM uptime for boot and the four insmods); --with-qemu adds ~1 s (50 MB more initramfs). Inside
# it, daxvmm boots the guest to /init in ~4-5 s and QEMU (-enable-kvm -cpu host, pc) in ~7-10 s.
source "$(dirname "$0")/lib.sh"
source "$DAXVMM_ROOT/images/pack.sh"

batch='' mem=4G cpus=2 timeout=900 case_timeout=300 stall='' daxvmm='' kernel='' initrd='' with_qemu=0 adds=() hold=''
while [ $# -gt 0 ]; do
	case $1 in
	--batch) batch=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--cpus) cpus=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--case-timeout) case_timeout=$2; shift 2 ;;
	--stall) stall=$2; shift 2 ;;
	--daxvmm) daxvmm=$2; shift 2 ;;
	--kernel) kernel=$2; shift 2 ;;
	--initrd) initrd=$2; shift 2 ;;
	--with-qemu) with_qemu=1; shift ;;
	--add) adds+=("$2"); shift 2 ;;
	--kvm-hold) hold=$2; shift 2 ;;
	-h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
[ -n "$batch" ] || die "--batch FILE is required (see --help)"
[ -f "$batch" ] || die "batch file $batch does not exist"
[[ $timeout =~ ^[0-9]+$ ]] && [ "$timeout" -gt 0 ] || die "--timeout wants a whole number of seconds, got '$timeout'"
[[ $case_timeout =~ ^[0-9]+$ ]] && [ "$case_timeout" -gt 0 ] || die "--case-timeout wants a whole number of seconds, got '$case_timeout'"
stall=${stall:-$((case_timeout + 60))}
[[ $stall =~ ^[0-9]+$ ]] && [ "$stall" -gt 0 ] || die "--stall wants a whole number of seconds, got '$stall'"
[[ $cpus =~ ^[0-9]+$ ]] && [ "$cpus" -gt 0 ] || die "--cpus wants a positive number, got '$cpus'"
[[ $mem =~ ^[0-9]+[MG]$ ]] || die "--mem wants a size like 4G or 3072M, got '$mem'"
while IFS= read -r line; do
	case $line in '' | '#'*) continue ;; esac
	[[ $line == *$'\t'* ]] || die "batch line without a TAB between NAME and COMMAND: $line"
	name=${line%%$'\t'*}
	[[ $name =~ ^[A-Za-z0-9_.:-]+$ ]] || die "case name '$name' may only use letters, digits and _.:-"
done <"$batch"
qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found; run scripts/setup-host.sh"
for f in "${adds[@]}"; do [ -f "$f" ] || die "--add $f: no such file"; done

# The guest artifacts.
if [ -z "$kernel" ]; then
	if [ -n "${DAXVMM_GUEST_KERNEL:-}" ]; then
		kernel=$DAXVMM_GUEST_KERNEL
	else
		kernel=$DAXVMM_CACHE/kernels/$(bash "$DAXVMM_ROOT/scripts/build-guest-kernel.sh" --print-key)/bzImage
		[ -f "$kernel" ] || die "the guest kernel is not built yet ($kernel); run scripts/build-guest-kernel.sh or pass --kernel"
	fi
fi
[ -f "$kernel" ] || die "guest kernel $kernel does not exist"
if [ -z "$initrd" ]; then
	initrd=${DAXVMM_GUEST_INITRD:-$(bash "$DAXVMM_ROOT/scripts/build-initramfs.sh")}
fi
[ -f "$initrd" ] || die "guest initramfs $initrd does not exist"
default_daxvmm=${DAXVMM_BIN:-${CARGO_TARGET_DIR:-$DAXVMM_ROOT/target}/x86_64-unknown-linux-musl/release/daxvmm}
if [ -z "$daxvmm" ]; then
	daxvmm=$default_daxvmm
	if [ ! -f "$daxvmm" ]; then
		log "warning: $daxvmm does not exist; the test host VM has no /bin/daxvmm (build it with cargo build --release --target x86_64-unknown-linux-musl -p daxvmm)"
		daxvmm=''
	fi
fi
if [ -n "$daxvmm" ]; then
	[ -f "$daxvmm" ] || die "daxvmm binary $daxvmm does not exist"
	if LC_ALL=C ldd "$daxvmm" 2>&1 | grep -q '=>'; then
		die "$daxvmm is dynamically linked; the test host VM needs a static build (--target x86_64-unknown-linux-musl)"
	fi
fi

hold=${hold:-${DAXVMM_KVM_HOLD:-none}}
[ "$hold" = none ] || [ -f "$hold" ] || die "--kvm-hold $hold: no such file"

# Piece 1, cached: the test host kernel, its KVM modules, busybox and /init.
pin=$DAXVMM_ROOT/images/test-host.pin
release=$(pin_get "$pin" KERNEL_RELEASE)
read -r -a modules <<<"$(pin_get "$pin" MODULES)"
base_key=$(hash_files "$pin" "$DAXVMM_ROOT/images/test-host-init" "$DAXVMM_ROOT/images/pack.sh" \
	"$DAXVMM_ROOT/scripts/test-host-vm.sh" "$(busybox_static)")
base=$DAXVMM_CACHE/test-host/base-$base_key
if [ ! -f "$base/l1-base.cpio.gz" ] || [ ! -f "$base/vmlinuz" ]; then
	deb=$(apt_download "$(pin_get "$pin" SUITE)" "$(pin_get "$pin" PKG)" "$(pin_get "$pin" PKG_VERSION)" "$(pin_get "$pin" PKG_SHA256)")
	log "packing the test host VM's base image ($base_key)"
	work=$(mktemp -d "${TMPDIR:-/tmp}/daxvmm-l1.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	dpkg-deb -x "$deb" "$work/deb"
	stage_busybox "$work/root"
	install -m 0755 "$DAXVMM_ROOT/images/test-host-init" "$work/root/init"
	mkdir -p "$work/root/modules"
	for m in "${modules[@]}"; do
		src=$work/deb/lib/modules/$release/$m
		name=$(basename "$m")
		# Newer Debian kernels compress modules; busybox insmod takes them uncompressed.
		if [ -f "$src" ]; then cp "$src" "$work/root/modules/$name"
		elif [ -f "$src.xz" ]; then xz -dc "$src.xz" >"$work/root/modules/$name"
		elif [ -f "$src.zst" ]; then zstd -qdc "$src.zst" >"$work/root/modules/$name"
		elif [ -f "$src.gz" ]; then gzip -dc "$src.gz" >"$work/root/modules/$name"
		else die "module $m is not in $(pin_get "$pin" PKG) (looked for .ko, .ko.xz, .ko.zst, .ko.gz); fix MODULES in $pin"
		fi
		echo "$name" >>"$work/root/modules/order"
	done
	mkdir -p "$base.tmp.$$"
	cp "$work/deb/boot/vmlinuz-$release" "$base.tmp.$$/vmlinuz" || die "no boot/vmlinuz-$release in the package; fix KERNEL_RELEASE in $pin"
	pack_cpio "$work/root" "$base.tmp.$$/l1-base.cpio.gz" gzip
	rm -rf "$work"
	# Another run may have packed the same piece meanwhile; then keep theirs.
	mv -T "$base.tmp.$$" "$base" 2>/dev/null || rm -rf "$base.tmp.$$"
	trap - EXIT
fi

# Piece 2, cached, optional: QEMU with its libraries and the x86 firmware it loads.
pieces=("$base/l1-base.cpio.gz")
if [ $with_qemu = 1 ]; then
	qemu_real=$(readlink -f "$qemu")
	firmware=()
	for f in /usr/share/qemu/{kvmvapic.bin,linuxboot.bin,linuxboot_dma.bin,multiboot.bin,multiboot_dma.bin,pvh.bin,sgabios.bin} \
		/usr/share/seabios/* /usr/lib/ipxe/qemu/efi-e1000.rom; do
		[ -f "$f" ] && firmware+=("$(readlink -f "$f")")
	done
	mapfile -t qlibs < <(shared_libs "$qemu_real")
	qemu_key=$(hash_files "$qemu_real" "${qlibs[@]}" "${firmware[@]}" "$DAXVMM_ROOT/images/pack.sh")
	qpiece=$DAXVMM_CACHE/test-host/qemu-$qemu_key.cpio
	if [ ! -f "$qpiece" ]; then
		log "packing QEMU for the test host VM ($qemu_key)"
		work=$(mktemp -d "${TMPDIR:-/tmp}/daxvmm-l1q.XXXXXX")
		trap 'rm -rf "$work"' EXIT
		stage_dynamic "$work" "$qemu_real"
		[ "$qemu_real" = /usr/bin/qemu-system-x86_64 ] || ln -sf "$qemu_real" "$work/usr/bin/qemu-system-x86_64"
		for f in /usr/share/qemu/{kvmvapic.bin,linuxboot.bin,linuxboot_dma.bin,multiboot.bin,multiboot_dma.bin,pvh.bin,sgabios.bin} \
			/usr/share/seabios/* /usr/lib/ipxe/qemu/efi-e1000.rom; do
			[ -e "$f" ] || continue
			mkdir -p "$work/$(dirname "$f")"
			cp -L "$f" "$work/$f"
		done
		# Uncompressed: gunzip of 50 MB under TCG costs more than copying it.
		mkdir -p "$(dirname "$qpiece")"
		pack_cpio "$work" "$qpiece" none
		rm -rf "$work"
		trap - EXIT
	fi
	pieces+=("$qpiece")
fi

# Pieces of older inputs go after a day unused (each QEMU piece is ~50 MB).
touch "${pieces[@]}" "$base"
find "$DAXVMM_CACHE/test-host" -maxdepth 1 \( -name 'qemu-*.cpio' -o -name 'base-*' \) -mmin +1440 -exec rm -rf {} + 2>/dev/null || true

# Piece 3, per run, uncompressed: daxvmm, the guest kernel and initramfs, extra binaries, the batch.
run=$(mktemp -d "${TMPDIR:-/tmp}/daxvmm-l1run.XXXXXX")
trap 'rm -rf "$run"' EXIT
mkdir -p "$run/root/guest" "$run/root/bin"
cp "$kernel" "$run/root/guest/bzImage"
cp "$initrd" "$run/root/guest/initrd.cpio.lz4"
[ -z "$daxvmm" ] || install -m 0755 "$daxvmm" "$run/root/bin/daxvmm"
for f in "${adds[@]}"; do install -m 0755 "$f" "$run/root/bin/$(basename "$f")"; done
[ "$hold" = none ] || install -m 0755 "$hold" "$run/root/bin/daxvmm-kvm-hold"
cp "$batch" "$run/root/batch"
echo "$case_timeout" >"$run/root/case-timeout"
pack_cpio "$run/root" "$run/run.cpio" none
pieces+=("$run/run.cpio")
# The kernel unpacks concatenated archives; zero padding between them is skipped, and an uncompressed
# archive must start 4-byte aligned, so pad every piece to 512 bytes.
for p in "${pieces[@]}"; do
	cat "$p"
	pad=$(( (512 - $(stat -c %s "$p") % 512) % 512 ))
	head -c "$pad" /dev/zero
done >"$run/l1.cpio"

# Test host VMs take turns: each of their vCPUs is a busy host thread, and with more vCPUs than host
# CPUs QEMU TCG's nested SVM misbehaves (seen: a test host VM reset itself, and a guest triple-faulted,
# while three of them shared this 2-core host). A slot per $cpus host CPUs, held (fd 9) until QEMU exits.
slots=$(( $(nproc) / cpus )); [ "$slots" -ge 1 ] || slots=1
mkdir -p "$DAXVMM_CACHE/test-host"
waited=0
while :; do
	for ((slot = 0; slot < slots; slot++)); do
		exec 9>"$DAXVMM_CACHE/test-host/vm-slot.$slot.lock"
		flock -n 9 && break 2
		exec 9>&-
	done
	[ $waited = 1 ] || log "waiting for a test host VM slot ($slots on this host: one per $cpus CPUs)"
	waited=1
	sleep 1
done
log "booting the test host VM ($cpus vCPUs, $mem, timeout ${timeout}s, $(grep -cvE '^(#|$)' "$batch") cases)"
logs=$DAXVMM_CACHE/test-host/logs
mkdir -p "$logs"
console=$logs/console-$(date +%Y%m%d-%H%M%S)-$$.log
# Keep the newest 20 console logs.
find "$logs" -name "console-*.log" -printf "%T@ %p\n" | sort -rn | tail -n +20 | cut -d" " -f2- | xargs -r rm -f
# Asks QEMU's monitor for every CPU's registers and local APIC state (is a timer armed, an interrupt pending?).
l1_registers() {
	python3 - "$1" "$2" <<'PY' 2>/dev/null || true
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(2)
cmds = [b"info registers -a"]
for cpu in range(int(sys.argv[2])):
    cmds += [b"cpu %d" % cpu, b"info lapic"]
s.sendall(b"\n".join(cmds) + b"\n")
out, end = b"", time.time() + 3
while time.time() < end:
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        break
    if not chunk:
        break
    out += chunk
sys.stdout.write(out.decode(errors="replace"))
PY
}
# Each QEMU thread's name, state, kernel wait channel and CPU ticks used during one second (the fields
# after the name in /proc/*/stat: a thread name like "CPU 0/TCG" has spaces).
qemu_threads() {
	local pid=$1 t
	[ -n "$pid" ] || return 0
	declare -A before
	stat_field() { sed 's/.*) //' "$1/stat" 2>/dev/null | awk -v f="$2" '{ print (f == "cpu") ? $12 + $13 : $1 }'; }
	for t in /proc/"$pid"/task/*; do before[$t]=$(stat_field "$t" cpu); done
	sleep 1
	for t in /proc/"$pid"/task/*; do
		printf 'daxvmm-l1-host: qemu thread %s (%s) state %s wchan %s, %s ticks of CPU in 1 s\n' "${t##*/}" \
			"$(cat "$t/comm" 2>/dev/null)" "$(stat_field "$t" state)" "$(cat "$t/wchan" 2>/dev/null)" \
			"$(( $(stat_field "$t" cpu || echo 0) - ${before[$t]:-0} ))"
	done
}
start=$(date +%s.%N)
set +e
{
	timeout --kill-after=10 "$timeout" "$qemu" -accel tcg,thread=multi -cpu max -smp "$cpus" -m "$mem" \
		-kernel "$base/vmlinuz" -initrd "$run/l1.cpio" -append "console=ttyS0 panic=-1 quiet loglevel=5 softlockup_panic=1 hung_task_panic=1 sysctl.kernel.panic_on_rcu_stall=1 nokaslr ${DAXVMM_L1_APPEND:-}" \
		-d cpu_reset -D "$run/qemu-debug.log" -name daxvmm-l1,debug-threads=on -nographic -serial stdio -monitor "unix:$run/monitor.sock,server=on,wait=off" -parallel none \
		-no-reboot </dev/null 2>&1 &
	echo $! >"$run/qemu.pid"
	wait $!
	echo $? >"$run/qemu.rc"
} | tee "$console" 9>&- &
pipeline=$!
# The stall watchdog: the console's size must keep changing. (Its sleeps must not hold the VM slot.)
(
	exec 9>&-
	last=-1 quiet_since=$(date +%s)
	while sleep 10; do
		size=$(stat -c %s "$console" 2>/dev/null || echo 0)
		if [ "$size" != "$last" ]; then
			last=$size quiet_since=$(date +%s)
		elif [ $(( $(date +%s) - quiet_since )) -ge "$stall" ]; then
			touch "$run/stalled"
			printf '\n@@DAXVMM-L1-STALL@@\n'
			# Where the VM's CPUs are (no KASLR: resolve RIPs with the System.map of the matching linux-image-*-dbg
			# package; the one in images/test-host.pin's package is a stub).
			l1_registers "$run/monitor.sock" "$cpus" |
				grep -E 'RIP=|CPU#|local APIC state|^LVTT|^Timer|^ISR|^IRR|^PPR' | sed 's/^/daxvmm-l1-host: /' >"$run/stall.txt"
			# And QEMU's own threads: vCPU threads burning CPU mean the test host is spinning (or TCG is),
			# sleeping ones a wait inside QEMU.
			qemu_threads "$(cat "/proc/$(cat "$run/qemu.pid")/task/$(cat "$run/qemu.pid")/children" 2>/dev/null | cut -d' ' -f1)" >>"$run/stall.txt"
			kill "$(cat "$run/qemu.pid")" 2>/dev/null
			exit
		fi
	done
) &
watchdog=$!
wait $pipeline
kill $watchdog 2>/dev/null
wait $watchdog 2>/dev/null
rc=$(cat "$run/qemu.rc" 2>/dev/null || echo 1)
set -e
if [ -f "$run/stalled" ]; then
	printf '\n@@DAXVMM-L1-STALL@@\n' >>"$console"
	cat "$run/stall.txt" >>"$console" 2>/dev/null
	# On stderr too: callers that parse stdout still show it.
	cat "$run/stall.txt" >&2 2>/dev/null
	log "the test host VM's console was silent for ${stall}s: it hung (console: $console); killed it"
	exit 3
fi
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
	log "the test host VM ran into --timeout ${timeout}s and was killed"
fi
# A guest's panic is followed by daxvmm's own lines ("daxvmm: guest kernel panicked"); the test host
# kernel's is not.
l1_panic=$(awk '/Kernel panic - not syncing/ { p = $0; sub(/.*Kernel panic/, "Kernel panic", p) } /^daxvmm|@@DAXVMM-CASE-END/ { p = "" }
	END { print p }' "$console" | tr -d '\r')
if [ -n "$l1_panic" ] && ! grep -aq '@@DAXVMM-BATCH-DONE@@' "$console"; then
	log "the test host VM's kernel panicked: $l1_panic"
elif [ "$rc" = 0 ] && ! grep -aq 'reboot: Power down' "$console"; then
	# QEMU exits 0 on a guest reset (-no-reboot); -d cpu_reset logged each CPU's state at the reset. The
	# power-on resets at start log the same way, with RIP=fff0.
	resets=$(grep -ac 'CPU Reset' "$run/qemu-debug.log" 2>/dev/null || echo 0)
	log "the test host VM reset itself with no panic message (a triple fault?); QEMU's CPU state at that reset:"
	grep -aE 'CPU Reset|Triple fault|^[RE]IP=|^CR0=|^EFER=' "$run/qemu-debug.log" 2>/dev/null |
		tail -n $(( 4 * cpus + 1 )) | sed 's/^/daxvmm-l1-host: /' | tee -a "$console" >&2
	[ "$resets" -gt 0 ] || log "(no QEMU CPU reset log)"
fi
if grep -aq '@@DAXVMM-NO-KVM' "$console"; then
	die "KVM could not be set up in the test host VM: $(grep -ao '@@DAXVMM-NO-KVM[^@]*' "$console" | head -n1 | cut -c17-) (console: $console)"
fi
grep -aq '@@DAXVMM-BATCH-DONE@@' "$console" ||
	die "the batch did not complete (qemu exit status $rc after ${elapsed}s; console: $console)"
log "batch done in ${elapsed}s: $(grep -ac '@@DAXVMM-CASE-END' "$console") cases ran, $(grep -a '@@DAXVMM-CASE-END' "$console" | grep -vc ' rc=0@@' || true) returned non-zero (console: $console)"
