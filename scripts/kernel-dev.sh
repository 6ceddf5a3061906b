#!/usr/bin/env bash
# A git tree of the pinned guest kernel for working on guest-kernel/patches:
#   init DIR       unpacks the pinned source into DIR, commits it as `baseline`, applies the series with
#                  `git am` (so every patch must be a real format-patch file) and configures it exactly as
#                  the guest kernel is configured (copies the cached build's .config; build it first)
#   make DIR [T]   builds target T (default bzImage) with the pinned Rust toolchain, all cores
#   export DIR     writes `git format-patch baseline..` into guest-kernel/patches and rewrites its series
# Boot the result with e.g. scripts/daxvmm-nested.sh --kernel DIR/arch/x86/boot/bzImage --initrd ...
# (scripts/build-all.sh prints the initramfs path), then export and run scripts/check-patches.sh.
#
# usage: scripts/kernel-dev.sh init|make|export DIR [TARGET]
source "$(dirname "$0")/lib.sh"
source "$DAXVMM_ROOT/scripts/kernel-lib.sh"

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
[ $# -ge 2 ] || usage 2
cmd=$1 dir=$2
patches_dir=$DAXVMM_ROOT/guest-kernel/patches
git_k() { git -C "$dir" -c user.name="${GIT_AUTHOR_NAME:-daxvmm developer}" -c user.email="${GIT_AUTHOR_EMAIL:-daxvmm@localhost}" "$@"; }

case $cmd in
init)
	[ ! -e "$dir" ] || die "$dir exists; pick a new directory"
	key=$("$DAXVMM_ROOT/scripts/build-guest-kernel.sh" --print-key)
	config=$DAXVMM_CACHE/kernels/$key/.config
	[ -f "$config" ] || die "no built guest kernel $key to take the configuration from; run scripts/build-guest-kernel.sh first"
	mkdir -p "$dir.unpack"
	src=$(unpack_kernel_source "$dir.unpack")
	mv "$src" "$dir"
	rmdir "$dir.unpack"
	# Debian's source package ignores everything at the top level; git must see the tree.
	sed -i '/^\/\*$/d' "$dir/.gitignore"
	git_k init -q
	git_k add -A
	git_k commit -q -m "baseline: $(pin_get "$KERNEL_PIN" PKG) $(pin_get "$KERNEL_PIN" PKG_VERSION)"
	git_k tag baseline
	list=$(series_patches "$patches_dir")
	if [ -n "$list" ]; then
		mapfile -t patches <<<"$list"
		log "git am: ${#patches[@]} patches"
		git_k am -q "${patches[@]}" || die "git am failed in $dir (git -C $dir am --show-current-patch)"
	fi
	cp "$config" "$dir/.config"
	log "ready: $dir (baseline + series, guest kernel .config); next: scripts/kernel-dev.sh make $dir"
	;;
make)
	[ -d "$dir/.git" ] || die "$dir is not a tree made by 'scripts/kernel-dev.sh init'"
	kernel_toolchain
	make -C "$dir" ARCH=x86_64 RUSTC="$KRUSTC" BINDGEN="$KBINDGEN" -j"$(jobs_count)" "${3:-bzImage}"
	;;
export)
	git_k rev-parse -q --verify baseline >/dev/null || die "$dir has no baseline tag (made by 'scripts/kernel-dev.sh init'?)"
	git_k diff --quiet HEAD || die "$dir has uncommitted changes; commit them as patches first"
	header=$(grep '^\s*#' "$patches_dir/series" || true)
	# The old series goes first: a patch may have been renamed, dropped or reordered.
	grep -v '^\s*#' "$patches_dir/series" | sed '/^\s*$/d' | while IFS= read -r p; do rm -f "$patches_dir/$p"; done
	files=$(git_k format-patch -o "$patches_dir" baseline..HEAD)
	{
		[ -z "$header" ] || echo "$header"
		for f in $files; do basename "$f"; done
	} >"$patches_dir/series"
	log "exported $(git_k rev-list --count baseline..HEAD) patches to guest-kernel/patches; check them with scripts/check-patches.sh"
	;;
-h | --help) usage ;;
*) usage 2 ;;
esac
