# shellcheck shell=bash
# Kernel build pieces shared by scripts/build-guest-kernel.sh and scripts/kernel-dev.sh: the pinned
# toolchain for the kernel's Rust, the pinned source, and the patch series. Source after lib.sh. Part of the
# guest kernel's cache key, like build-guest-kernel.sh itself.

KERNEL_PIN=$DAXVMM_ROOT/guest-kernel/PIN

# Sets KRUSTC and KBINDGEN and puts the pinned rustc first on PATH (cargo, rustdoc match it), with
# LIBCLANG_PATH for bindgen.
kernel_toolchain() {
	local ver libclang
	ver=$(pin_get "$KERNEL_PIN" KERNEL_RUSTC)
	KRUSTC=$(rustup which --toolchain "$ver" rustc 2>/dev/null) || die "rustc $ver is not installed; run scripts/setup-host.sh"
	KBINDGEN=$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")
	[ -x "$KBINDGEN" ] || die "bindgen is not installed; run scripts/setup-host.sh"
	libclang=$(pin_get "$KERNEL_PIN" LIBCLANG_PATH)
	[ -d "$libclang" ] || die "libclang not found at $libclang; run scripts/setup-host.sh"
	export PATH="$(dirname "$KRUSTC"):$PATH" LIBCLANG_PATH="$libclang"
}

# unpack_kernel_source DIR -> prints the unpacked source tree's path (a new directory inside DIR).
unpack_kernel_source() {
	local deb
	deb=$(apt_download "$(pin_get "$KERNEL_PIN" SUITE)" "$(pin_get "$KERNEL_PIN" PKG)" \
		"$(pin_get "$KERNEL_PIN" PKG_VERSION)" "$(pin_get "$KERNEL_PIN" PKG_SHA256)")
	log "unpacking $(basename "$deb")"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -O "./$(pin_get "$KERNEL_PIN" TARBALL)" | tar -xJ -C "$1"
	find "$1" -mindepth 1 -maxdepth 1 -type d | head -n1
}

# series_patches DIR -> the patch files DIR/series names, in order (one per line).
series_patches() {
	local p
	while IFS= read -r p; do
		[ -f "$1/$p" ] || die "$1/series names $p but that file does not exist"
		echo "$1/$p"
	done < <(grep -v '^\s*#' "$1/series" | sed '/^\s*$/d')
}
