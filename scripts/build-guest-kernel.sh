#!/usr/bin/env bash
# Builds the daxvmm guest kernel: the pinned Debian linux-source (guest-kernel/PIN), the patch series in
# guest-kernel/patches, and the config fragments in guest-kernel/config on top of tinyconfig. Every option
# a fragment asks for must survive olddefconfig, or the build stops and names the ones that did not.
# Results are cached in $DAXVMM_CACHE/kernels/<hash of pin + fragments + patches + this script>; a second
# run with nothing changed takes a second. Progress goes to stderr; the bzImage path to stdout.
#
# A variant (guest-kernel/variants/NAME/) adds to that: `config` (another fragment), `series` plus patches
# (applied after the main series), `make-flags` (e.g. LLVM=-19). `debug` is the bug-hunting kernel (clang,
# KASAN, lockdep). The deliberate bugs the suite must catch are the main series' last patch, each off
# unless selected at boot, so one build serves both kinds of test. A variant with its own `PIN` builds
# another kernel version: without guest-kernel/patches (they target the main pin) and with only the
# fragments its `fragments` file names; `linux-6.12` is the pre-series comparison kernel. A later
# fragment's value of an option wins over an earlier one's. A configuration with
# CONFIG_MODULES=y builds its modules too (`make bzImage modules`).
#
# usage: scripts/build-guest-kernel.sh [--variant default|NAME] [--force] [--print-key] [--config-only] [--tree]
#   --config-only  stop after the configuration is checked (prints the .config path; seconds, no cache)
#   --tree         print the build tree (kept beside the cache, with its modules) instead of the bzImage;
#                  rebuilds when the tree was removed
source "$(dirname "$0")/lib.sh"
source "$DAXVMM_ROOT/scripts/kernel-lib.sh"

variant=default
force=0
print_key=0
config_only=0
tree=0
while [ $# -gt 0 ]; do
	case $1 in
	--variant) variant=$2; shift 2 ;;
	--force) force=1; shift ;;
	--print-key) print_key=1; shift ;;
	--config-only) config_only=1; shift ;;
	--tree) tree=1; shift ;;
	-h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

gk=$DAXVMM_ROOT/guest-kernel
vdir=$gk/variants/$variant
[ "$variant" = default ] || [ -d "$vdir" ] || die "no kernel variant '$variant' (have: default $(ls "$gk/variants" 2>/dev/null | tr '\n' ' '))"
patch_files=()
add_series() { # DIR: appends the patches DIR/series names (a missing file stops the build)
	local list
	list=$(series_patches "$1")
	[ -z "$list" ] || mapfile -t -O ${#patch_files[@]} patch_files <<<"$list"
}
if [ "$variant" != default ] && [ -f "$vdir/PIN" ]; then
	KERNEL_PIN=$vdir/PIN
	fragments=()
	while read -r f; do fragments+=("$gk/config/$f"); done < <(grep -v '^\s*#' "$vdir/fragments" | sed '/^\s*$/d')
else
	fragments=("$gk"/config/*.config)
	add_series "$gk/patches"
fi
pin=$KERNEL_PIN
make_flags=()
if [ "$variant" != default ]; then
	[ ! -f "$vdir/config" ] || fragments+=("$vdir/config")
	[ ! -f "$vdir/series" ] || add_series "$vdir"
	[ ! -f "$vdir/make-flags" ] || read -r -a make_flags <"$vdir/make-flags"
fi
key=$(hash_files "$pin" "${fragments[@]}" "$gk/patches/series" "${patch_files[@]}" "$0" "$DAXVMM_ROOT/scripts/kernel-lib.sh" \
	$([ "$variant" = default ] || find "$vdir" -maxdepth 1 -type f | sort) | cut -c1-12)
key="$(pin_get "$pin" KERNEL_VERSION)-$variant-$key"
out=$DAXVMM_CACHE/kernels/$key
if [ $print_key = 1 ]; then echo "$key"; exit 0; fi
# cached KEY: whether the result (and, for --tree, the kept build tree) is there; prints it.
cached() {
	[ $force = 0 ] && [ $config_only = 0 ] && [ -f "$out/bzImage" ] || return 1
	if [ $tree = 0 ]; then echo "$out/bzImage"; return 0; fi
	local t
	t=$(find "$DAXVMM_CACHE/build/$key" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | head -n1)
	[ -n "$t" ] && [ -f "$t/arch/x86/boot/bzImage" ] && ! [ "$t/.config" -nt "$t/arch/x86/boot/bzImage" ] || return 1
	echo "$t"
}
if cached; then
	log "guest kernel $key is cached"
	exit 0
fi
# One build per key at a time: a second caller waits and then finds the result cached.
mkdir -p "$DAXVMM_CACHE/kernels"
exec 9>"$DAXVMM_CACHE/kernels/.lock-$key"
if ! flock -n 9; then
	log "another build of $key is running; waiting for it"
	flock 9
fi
cached && exit 0

kernel_toolchain
# A configuration check must not wipe the tree a full build keeps for incremental work.
work=$DAXVMM_CACHE/build/$key$([ $config_only = 0 ] || echo -config)
rm -rf "$work"
mkdir -p "$work"
src=$(unpack_kernel_source "$work")
for p in "${patch_files[@]}"; do
	log "applying $(basename "$p")"
	patch -d "$src" -p1 --forward --quiet <"$p" || die "patch $(basename "$p") does not apply to $(pin_get "$pin" PKG) $(pin_get "$pin" PKG_VERSION)"
done

make_k() { make -C "$src" ARCH=x86_64 RUSTC="$KRUSTC" BINDGEN="$KBINDGEN" "${make_flags[@]}" "$@"; }
if cat "${fragments[@]}" | grep -qx 'CONFIG_RUST=y'; then
	log "checking the Rust toolchain (make rustavailable)"
	make_k rustavailable >"$work/rustavailable.log" 2>&1 || { cat "$work/rustavailable.log" >&2; die "the kernel cannot use this Rust toolchain; run scripts/setup-host.sh"; }
fi

log "configuring: tinyconfig + ${#fragments[@]} fragments"
make_k tinyconfig >"$work/config.log" 2>&1 || { tail -20 "$work/config.log" >&2; die "make tinyconfig failed"; }
"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "${fragments[@]}" >>"$work/config.log" 2>&1 ||
	{ tail -20 "$work/config.log" >&2; die "merging config fragments failed"; }
make_k olddefconfig >>"$work/config.log" 2>&1 || { tail -20 "$work/config.log" >&2; die "make olddefconfig failed"; }

# Every request in the fragments (the last one of each option) must be in the final config, or we would
# test a kernel we did not ask for.
declare -A request=()
while IFS= read -r line; do
	case $line in
	CONFIG_*=*) request[${line%%=*}]=$line ;;
	"# CONFIG_"*" is not set") opt=${line#\# }; request[${opt%% *}]=$line ;;
	esac
done < <(cat "${fragments[@]}")
missing=()
for opt in "${!request[@]}"; do
	line=${request[$opt]}
	case $line in
	CONFIG_*=*) grep -qxF "$line" "$src/.config" || missing+=("$line (got: $(grep -E "^(# )?$opt[= ]" "$src/.config" || echo unset))") ;;
	*) grep -q "^$opt=" "$src/.config" && missing+=("$line (got: $(grep "^$opt=" "$src/.config"))") ;;
	esac
done
if [ ${#missing[@]} -gt 0 ]; then
	printf 'error: these requested options did not survive olddefconfig (a dependency is missing):\n' >&2
	printf '  %s\n' "${missing[@]}" >&2
	exit 1
fi
if [ $config_only = 1 ]; then
	log "configuration checked: every requested option is set"
	echo "$src/.config"
	exit 0
fi

jobs=$(jobs_count)
targets=(bzImage)
grep -qx CONFIG_MODULES=y "$src/.config" && targets+=(modules)
log "building ${targets[*]} with $jobs jobs (a few minutes; log: $work/build.log)"
start=$(date +%s)
make_k -j"$jobs" "${targets[@]}" >"$work/build.log" 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null; do
	sleep 20
	kill -0 $pid 2>/dev/null && log "  ... $(( $(date +%s) - start ))s, $(grep -cE '^\s+(CC|RUSTC|AS|LD)' "$work/build.log") objects built"
done
wait $pid || { tail -40 "$work/build.log" >&2; die "kernel build failed (full log: $work/build.log)"; }
mkdir -p "$out.tmp"
cp "$src/arch/x86/boot/bzImage" "$src/.config" "$src/System.map" "$out.tmp/"
cp "$src/vmlinux" "$out.tmp/" 2>/dev/null || true
rm -rf "$out"
mv "$out.tmp" "$out"
log "guest kernel built in $(( $(date +%s) - start ))s: $out/bzImage"
# The tree is kept for the patch and driver work (incremental rebuilds) and as a `--kernel` build tree
# with its modules; remove it to save ~2 GiB (--tree then rebuilds it).
if [ $tree = 1 ]; then echo "$src"; else echo "$out/bzImage"; fi
