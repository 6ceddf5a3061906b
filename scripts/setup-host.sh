#!/usr/bin/env bash
# Installs what building and testing daxvmm needs on a Debian 12 host (run as root, or with sudo):
# Debian packages (QEMU for the test host VM, busybox/e2fsprogs/xfsprogs/ndctl/daxctl for the guest image,
# mmdebstrap for the suite image, the kernel build tools, clang/libclang 19 for the kernel's Rust bindings,
# python3-ply/git for checkpatch's SPDX check), the pinned Rust toolchain with rust-src and the musl target, and bindgen-cli. Idempotent: a second run only checks and takes seconds.
source "$(dirname "$0")/lib.sh"

pin=$DAXVMM_ROOT/guest-kernel/PIN
rustc_ver=$(pin_get "$pin" KERNEL_RUSTC)
bindgen_ver=$(pin_get "$pin" KERNEL_BINDGEN)

packages=(
	qemu-system-x86 seabios ipxe-qemu busybox-static e2fsprogs xfsprogs ndctl daxctl
	build-essential bc bison flex libelf-dev libssl-dev cpio gzip xz-utils zstd kmod rsync file
	clang-19 lld-19 llvm-19 libclang-19-dev lz4 debian-archive-keyring ca-certificates
	perl python3-ply python3-git acpica-tools mmdebstrap
)
sudo=''
[ "$(id -u)" = 0 ] || sudo=sudo
# QEMU for the test host VM comes from bookworm-backports (images/test-host.pin says why): a sources
# entry for that suite and an apt preference that raises exactly the pinned packages at exactly the pinned
# versions, so nothing else is ever taken from backports.
qpin=$DAXVMM_ROOT/images/test-host.pin
qsuite=$(pin_get "$qpin" QEMU_SUITE)
qver=$(pin_get "$qpin" QEMU_VERSION)
read -r -a qpkgs <<<"$(pin_get "$qpin" QEMU_PACKAGES)"
sbver=$(pin_get "$qpin" SEABIOS_VERSION)
apt_pin=/etc/apt/preferences.d/daxvmm-test-host-qemu
apt_src=/etc/apt/sources.list.d/daxvmm-$qsuite.list
want_pin=$(for p in "${qpkgs[@]}"; do printf 'Package: %s\nPin: version %s\nPin-Priority: 990\n\n' "$p" "$qver"; done
	printf 'Package: seabios\nPin: version %s\nPin-Priority: 990\n' "$sbver")
want_src="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) $qsuite main"
if [ "$(cat "$apt_pin" 2>/dev/null)" != "$want_pin" ] || [ "$(cat "$apt_src" 2>/dev/null)" != "$want_src" ]; then
	log "pinning QEMU $qver from $qsuite for the test host VM ($apt_pin)"
	echo "$want_pin" | $sudo tee "$apt_pin" >/dev/null
	echo "$want_src" | $sudo tee "$apt_src" >/dev/null
	$sudo apt-get update -q >/dev/null || die "apt-get update failed after adding $apt_src"
fi
installed_qemu=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
if [ "$installed_qemu" != "$qver" ]; then
	log "installing QEMU $qver (was: ${installed_qemu:-none})"
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${qpkgs[@]/%/=$qver}" "seabios=$sbver" >/dev/null ||
		die "apt-get install of QEMU $qver from $qsuite failed (is $qsuite still on the mirror? see images/test-host.pin)"
fi

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
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
