#!/usr/bin/env bash
# Installs what building and testing daxvmm needs on a Debian 12 host (run as root, or with sudo):
# Debian packages (QEMU for the test host VM, busybox/e2fsprogs/xfsprogs/ndctl for the guest image, the
# kernel build tools, clang/libclang 19 for the kernel's Rust bindings, python3-ply/git for checkpatch's
# SPDX check), the pinned Rust toolchain with rust-src and the musl target, and bindgen-cli. Idempotent: a second run only checks and takes seconds.
source "$(dirname "$0")/lib.sh"

pin=$DAXVMM_ROOT/guest-kernel/PIN
rustc_ver=$(pin_get "$pin" KERNEL_RUSTC)
bindgen_ver=$(pin_get "$pin" KERNEL_BINDGEN)

packages=(
	qemu-system-x86 seabios ipxe-qemu busybox-static e2fsprogs xfsprogs ndctl
	build-essential bc bison flex libelf-dev libssl-dev cpio gzip xz-utils zstd kmod rsync file
	clang-19 lld-19 llvm-19 libclang-19-dev lz4 debian-archive-keyring ca-certificates
	perl python3-ply python3-git
)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=''
	[ "$(id -u)" = 0 ] || sudo=sudo
	log "installing Debian packages: ${missing[*]}"
	$sudo apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
		die "apt-get install failed for: ${missing[*]}"
fi

command -v rustup >/dev/null || die "rustup not found; install it from rustup.rs first"
if ! rustup run "$rustc_ver" rustc --version >/dev/null 2>&1; then
	log "installing Rust $rustc_ver"
	rustup toolchain install "$rustc_ver" --profile minimal -c rust-src,rustfmt,clippy >/dev/null
fi
installed=$(rustup component list --toolchain "$rustc_ver" --installed 2>/dev/null)
grep -q '^rust-src' <<<"$installed" || rustup component add --toolchain "$rustc_ver" rust-src >/dev/null
rustup target list --toolchain "$rustc_ver" --installed | grep -q x86_64-unknown-linux-musl ||
	rustup target add --toolchain "$rustc_ver" x86_64-unknown-linux-musl >/dev/null
# The workspace builds with the default toolchain; it needs the musl target and the lint tools too.
rustup target list --installed | grep -q x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl >/dev/null
for c in rustfmt clippy; do
	rustup component list --installed | grep -q "^$c" || rustup component add "$c" >/dev/null
done

bindgen=$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")
if ! "$bindgen" --version 2>/dev/null | grep -q " $bindgen_ver\$"; then
	log "installing bindgen-cli $bindgen_ver (about a minute)"
	cargo install --quiet --locked bindgen-cli --version "$bindgen_ver" || die "cargo install bindgen-cli failed"
fi
log "host ready: $(qemu-system-x86_64 --version | head -n1), rustc $rustc_ver, bindgen $bindgen_ver"
