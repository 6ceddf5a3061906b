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
apt_download() {
	local suite=$1 pkg=$2 ver=$3 sha=$4
	local dir=$DAXVMM_CACHE/debs
	local file="$dir/${pkg}_${ver//:/%3a}.deb"
	mkdir -p "$dir"
	if [ -f "$file" ] && echo "$sha  $file" | sha256sum -c --status; then
		echo "$file"
		return
	fi
	local apt=$DAXVMM_CACHE/apt
	mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
	local mirror
	mirror=$(debian_mirror)
	# Security updates live in their own archive beside the main one (…/debian-security).
	case $suite in *-security) mirror=${mirror%/debian}/debian-security ;; esac
	printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$mirror" "$suite" >"$apt/sources.list"
	local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1
		-o APT::Sandbox::User=root -q)
	log "fetching $pkg=$ver from Debian $suite"
	apt-get "${opts[@]}" update >"$apt/update.log" 2>&1 || { cat "$apt/update.log" >&2; die "apt-get update for $suite failed"; }
	(cd "$dir" && apt-get "${opts[@]}" download "$pkg=$ver" >"$apt/download.log" 2>&1) || {
		cat "$apt/download.log" >&2
		die "$pkg=$ver is no longer on the mirror's $suite suite. Pick a version that is (apt-cache madison $pkg with the same private sources list, or see https://snapshot.debian.org/package/${pkg}/), update the pin file with it and its sha256, and rebuild"
	}
	local got
	got=$(ls "$dir/${pkg}_"*"${ver##*:}"*.deb 2>/dev/null | head -n1)
	[ -n "$got" ] || die "apt-get download left no .deb for $pkg=$ver in $dir"
	[ "$got" = "$file" ] || mv "$got" "$file"
	echo "$sha  $file" | sha256sum -c --status || die "checksum mismatch for $file (expected $sha); the pin file must name the checksum of the exact package"
	echo "$file"
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
