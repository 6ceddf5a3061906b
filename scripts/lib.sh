# shellcheck shell=bash
# Common helpers for daxvmm's scripts: logging, the cache directory, and fetching pinned Debian packages
# through a private apt configuration that leaves the system's apt state alone.

set -euo pipefail

DAXVMM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DAXVMM_CACHE=${DAXVMM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/daxvmm}
export DAXVMM_ROOT DAXVMM_CACHE

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Reads KEY=VALUE from a pin file without sourcing it.
pin_get() { # file key
	sed -n "s/^$2=//p" "$1" | head -n1
}

# The Debian mirror: taken from the system's own apt sources so no host is named here.
debian_mirror() {
	if [ -n "${DAXVMM_DEBIAN_MIRROR:-}" ]; then
		echo "$DAXVMM_DEBIAN_MIRROR"
		return
	fi
	local uri
	uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
		grep -oE '(https?|file)://[^ ]*/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ')
	[ -n "$uri" ] || die "no Debian mirror found in /etc/apt; set DAXVMM_DEBIAN_MIRROR to one (the URL ending in /debian)"
	echo "${uri%/}"
}

# apt_download SUITE PACKAGE VERSION SHA256 -> prints the path of the verified .deb in the cache.
# A private sources list, state and cache under $DAXVMM_CACHE/apt keep the system's apt untouched.
# apt_private DIR deb|deb-src SUITE: a private apt state in DIR with one sources line for SUITE of the
# host's mirror, updated; sets the caller's `opts` array to the apt-get options that use it.
apt_private() {
	local apt=$1 kind=$2 suite=$3 mirror
	mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
	mirror=$(debian_mirror)
	# Security updates live in their own archive beside the main one (…/debian-security).
	case $suite in *-security) mirror=${mirror%/debian}/debian-security ;; esac
	printf '%s [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$kind" "$mirror" "$suite" >"$apt/sources.list"
	opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1
		-o APT::Sandbox::User=root -q)
	apt-get "${opts[@]}" update >"$apt/update.log" 2>&1 || { cat "$apt/update.log" >&2; die "apt-get update for $kind $suite failed"; }
}

apt_download() {
	local suite=$1 pkg=$2 ver=$3 sha=$4
	local dir=$DAXVMM_CACHE/debs
	local file="$dir/${pkg}_${ver//:/%3a}.deb"
	mkdir -p "$dir"
	if [ -f "$file" ] && echo "$sha  $file" | sha256sum -c --status; then
		echo "$file"
		return
	fi
	# One private apt state per suite, locked: the background kernel build fetches while others do.
	local apt=$DAXVMM_CACHE/apt/$suite lock
	mkdir -p "$apt"
	exec {lock}>"$apt/lock"
	flock "$lock"
	local opts
	apt_private "$apt" deb "$suite"
	log "fetching $pkg=$ver from Debian $suite"
	(cd "$dir" && apt-get "${opts[@]}" download "$pkg=$ver" >"$apt/download.log" 2>&1) || {
		cat "$apt/download.log" >&2
		die "$pkg=$ver is no longer on the mirror's $suite suite. Pick a version that is (apt-cache madison $pkg with the same private sources list, or see https://snapshot.debian.org/package/${pkg}/), update the pin file with it and its sha256, and rebuild"
	}
	local got
	got=$(ls "$dir/${pkg}_"*"${ver##*:}"*.deb 2>/dev/null | head -n1)
	[ -n "$got" ] || die "apt-get download left no .deb for $pkg=$ver in $dir"
	[ "$got" = "$file" ] || mv "$got" "$file"
	exec {lock}>&-
	echo "$sha  $file" | sha256sum -c --status || die "checksum mismatch for $file (expected $sha); the pin file must name the checksum of the exact package"
	echo "$file"
}

# apt_orig_tarball SUITE PKG UPSTREAM_VERSION SHA256 -> the upstream tarball (PKG_VERSION.orig.tar.*) of
# a Debian source package, from a private deb-src list, cached in $DAXVMM_CACHE/debs and checked. Only the
# orig tarball matters: the mirror may have dropped the .dsc or the Debian diff of a version.
apt_orig_tarball() {
	local suite=$1 pkg=$2 ver=$3 sha=$4
	local dir=$DAXVMM_CACHE/debs f
	mkdir -p "$dir"
	for f in "$dir/${pkg}_${ver}.orig.tar."*; do
		[ -f "$f" ] && echo "$sha  $f" | sha256sum -c --status && { echo "$f"; return; }
	done
	local apt=$DAXVMM_CACHE/apt-src/$suite lock
	mkdir -p "$apt/get"
	exec {lock}>"$apt/lock"
	flock "$lock"
	local opts
	apt_private "$apt" deb-src "$suite"
	log "fetching the source of $pkg $ver from Debian $suite"
	(cd "$apt/get" && apt-get "${opts[@]}" source --download-only "$pkg" >"$apt/source.log" 2>&1) || true
	for f in "$apt/get/${pkg}_${ver}.orig.tar."*; do
		[ -f "$f" ] || continue
		echo "$sha  $f" | sha256sum -c --status || die "checksum mismatch for $f (expected $sha)"
		mv "$f" "$dir/"
		exec {lock}>&-
		echo "$dir/$(basename "$f")"
		return
	done
	cat "$apt/source.log" >&2
	die "Debian $suite no longer has the source of $pkg $ver; pick the suite that does (apt-cache showsrc $pkg with a deb-src line) and update the pin file"
}

# hash_files FILE... -> a short content hash of the named files (names and contents). Comment lines of
# shell scripts do not count, so editing a script's documentation rebuilds nothing.
hash_files() {
	local f
	for f in "$@"; do
		printf '%s\n' "${f#"$DAXVMM_ROOT"/}"
		case $f in
		*.sh) grep -v '^[[:space:]]*#' "$f" || true ;;
		*) cat "$f" ;;
		esac
	done | sha256sum | cut -c1-16
}

jobs_count() { nproc 2>/dev/null || echo 2; }

# kvm_where -> "direct" when this host has a hardware KVM that boots ordinary guests, else "nested" (the
# test host VM). The same rule as tests/src/host.rs and scripts/quickstart.sh.
kvm_where() {
	if [ -c /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ] && { [ -e /sys/module/kvm_intel ] || [ -e /sys/module/kvm_amd ]; }; then
		echo direct
	else
		echo nested
	fi
}
