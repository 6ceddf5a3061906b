# shellcheck shell=bash
# Helpers for packing initramfs images, sourced by scripts/build-initramfs.sh and by the test host VM
# (tests/src/test_host.rs), after scripts/lib.sh: a busybox-static userland, dynamically linked host
# tools with their shared libraries, and newc cpio archives.

# busybox_static -> the path of a statically linked busybox (Debian's busybox-static), or dies.
busybox_static() {
	local bb
	bb=$(command -v busybox || true)
	[ -n "$bb" ] || die "busybox not found; run scripts/setup-host.sh (it installs busybox-static)"
	bb=$(readlink -f "$bb")
	# A static binary has no ELF interpreter; a dynamic busybox would not run in an image without its libc.
	if LC_ALL=C ldd "$bb" 2>&1 | grep -q '=>'; then
		die "$bb is dynamically linked; install busybox-static (scripts/setup-host.sh)"
	fi
	echo "$bb"
}

# stage_busybox ROOT: busybox at ROOT/bin/busybox plus one symlink per applet, at the paths
# `busybox --list-full` names (what `busybox --install -s` would make), and the usual empty directories.
stage_busybox() {
	local root=$1 bb applet
	bb=$(busybox_static)
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,root,etc,run,mnt}
	chmod 1777 "$root/tmp"
	install -m 0755 "$bb" "$root/bin/busybox"
	while IFS= read -r applet; do
		[ "$applet" = bin/busybox ] && continue
		mkdir -p "$root/$(dirname "$applet")"
		ln -sf /bin/busybox "$root/$applet"
	done < <("$bb" --list-full)
	# The kernel opens /dev/console for /init's stdio before /init can mount devtmpfs.
	[ -e "$root/dev/console" ] || mknod -m 600 "$root/dev/console" c 5 1 ||
		die "mknod $root/dev/console failed (packing needs root)"
}

# shared_libs BINARY... -> the shared libraries and the dynamic loader they need, one path per line.
shared_libs() {
	local b
	for b in "$@"; do
		LC_ALL=C ldd "$b" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' ||
			true
	done | sort -u
}

# stage_dynamic ROOT BINARY...: each binary and the libraries it needs (ldd), at their host paths, so
# they run inside the image. A busybox applet of the same name is removed so the real tool wins.
stage_dynamic() {
	local root=$1 b lib name d
	shift
	for b in "$@"; do
		[ -x "$b" ] || die "$b not found or not executable; run scripts/setup-host.sh"
		mkdir -p "$root/$(dirname "$b")"
		cp -L "$b" "$root/$b"
		name=$(basename "$b")
		for d in bin sbin usr/bin usr/sbin; do
			if [ -L "$root/$d/$name" ] && [ "$(readlink "$root/$d/$name")" = /bin/busybox ]; then
				rm -f "$root/$d/$name"
			fi
		done
	done
	while IFS= read -r lib; do
		mkdir -p "$root/$(dirname "$lib")"
		cp -L "$lib" "$root/$lib"
	done < <(shared_libs "$@")
}

# pack_cpio ROOT OUT gzip|lz4|none: a newc cpio of ROOT (sorted, owned by root) written atomically to OUT.
pack_cpio() {
	local root=$1 out=$2 comp=$3
	command -v cpio >/dev/null || die "cpio not found; run scripts/setup-host.sh"
	(
		cd "$root" || exit 1
		find . -mindepth 1 -print0 | LC_ALL=C sort -z |
			cpio --null --create --format=newc --owner=0:0 --quiet
	) | case $comp in
		gzip) gzip -n -6 ;;
		# The kernel's initramfs unpacker takes only the legacy LZ4 frame format (-l).
		lz4) lz4 -l -9 -q ;;
		none) cat ;;
		*) die "pack_cpio: unknown compression '$comp'" ;;
	esac >"$out.tmp.$$"
	mv "$out.tmp.$$" "$out"
}
