#!/usr/bin/env bash
# Builds the guest root filesystem image for the standard suites: Debian (images/suites.pin: ROOTFS_SUITE,
# minbase, made with mmdebstrap) with the tools the suites use; fstests built inside it from the pinned
# commit and installed in /var/lib/xfstests, with its users (fsgqa, fsgqa2, 123456-fsgqa); ndctl built from
# the pinned Debian source package (NDCTL_*) and installed in /usr/local, with the test programs and
# scripts of its test/ directory in /usr/local/lib/ndctl-tests; busybox and daxvmm-guest (power-off, the
# exit status port); and images/rootfs/{init,daxvmm-fstests,daxvmm-ndctl-tests,journalctl}. The compilers are
# removed again after the build. The image is ext4 and boots as a raw NVDIMM: `--pmem SIZE,file=IMG,
# share=off` with root=/dev/pmem0 (share=off: the guest's writes never reach the file).
# Cached by content in $DAXVMM_CACHE/rootfs/KEY/ (rootfs.img, and packages.txt: every package and version
# in the image, also printed at build time). Needs root (mmdebstrap, chroot). Prints the image's path.
# fstests' source: images/vendor/xfstests-<commit>.tar.xz, the pinned commit's archive kept in this
# repository (or $DAXVMM_FSTESTS_TARBALL, another copy of it), checked against the pin's sha256.
#
# usage: scripts/build-guest-rootfs.sh [--force]
source "$(dirname "$0")/lib.sh"

force=0
while [ $# -gt 0 ]; do
	case $1 in
	--force) force=1; shift ;;
	-h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done

pin=$DAXVMM_ROOT/images/suites.pin
suite=$(pin_get "$pin" ROOTFS_SUITE)
commit=$(pin_get "$pin" FSTESTS_COMMIT)
tar_sha=$(pin_get "$pin" FSTESTS_TARBALL_SHA256)
ndctl_suite=$(pin_get "$pin" NDCTL_SUITE)
ndctl_ver=$(pin_get "$pin" NDCTL_VERSION)
ndctl_sha=$(pin_get "$pin" NDCTL_ORIG_SHA256)
# What the suites run, and the libraries fstests' programs link against (kept when the -dev packages go).
runtime=(bash coreutils util-linux e2fsprogs xfsprogs xfsdump ndctl daxctl fio attr acl psmisc bc gawk perl
	procps kmod file sed grep findutils hostname quota busybox-static uuid-runtime trace-cmd
	libaio1 liburing2 libgdbm6 libcap2 libuuid1 libacl1 libattr1 libkmod2 libudev1 libjson-c5 libiniparser1 libkeyutils1 libtracefs1 libtraceevent1)
build=(build-essential autoconf automake libtool-bin pkg-config xfslibs-dev uuid-dev libacl1-dev
	libattr1-dev libaio-dev liburing-dev libgdbm-dev libcap-dev
	meson ninja-build libkmod-dev libudev-dev libjson-c-dev libiniparser-dev libkeyutils-dev libtracefs-dev libtraceevent-dev)

[ "$(id -u)" = 0 ] || die "building the suite image needs root (mmdebstrap and chroot); run it with sudo"
command -v mmdebstrap >/dev/null || die "mmdebstrap not found; run scripts/setup-host.sh"

musl=x86_64-unknown-linux-musl
log "building daxvmm-guest (release, $musl)"
(cd "$DAXVMM_ROOT" && cargo build --quiet --release --target $musl -p daxvmm-guest-tools) >&2 ||
	die "cargo build of daxvmm-guest failed"
guest_bin=${CARGO_TARGET_DIR:-$DAXVMM_ROOT/target}/$musl/release/daxvmm-guest

key=$( (hash_files "$0" "$pin" "$DAXVMM_ROOT"/images/rootfs/* "$DAXVMM_ROOT/images/guest-tests/lib.sh" "$guest_bin"; echo "${runtime[*]} ${build[*]}") | sha256sum | cut -c1-16)
out=$DAXVMM_CACHE/rootfs/$key
if [ $force = 0 ] && [ -f "$out/rootfs.img" ]; then
	log "guest suite image $key is cached"
	echo "$out/rootfs.img"
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/daxvmm-rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
archive=${DAXVMM_FSTESTS_TARBALL:-$DAXVMM_ROOT/images/vendor/xfstests-${commit:0:12}.tar.xz}
log "fstests $commit from $archive"
echo "$tar_sha  $archive" | sha256sum -c --status ||
	die "$archive is not the pinned fstests archive (sha256 must be $tar_sha, images/suites.pin; docs/suites.md says how to make it)"
src=$work/fstests.tar.xz
cp "$archive" "$src"

ndctl_src=$(apt_orig_tarball "$ndctl_suite" ndctl "$ndctl_ver" "$ndctl_sha")
log "building the suite image ($key): Debian $suite, fstests ${commit:0:12}, ndctl $ndctl_ver (a few minutes)"
root=$work/root
mkdir "$root"
jobs=$(jobs_count)
# The hooks run with the image's root as $1.
mmdebstrap --quiet --variant=minbase --include="$(IFS=,; echo "${runtime[*]},${build[*]}")" \
	--customize-hook="copy-in '$src' /tmp" \
	--customize-hook="chroot \"\$1\" sh -ec 'cd /tmp && tar xf fstests.tar.xz && cd xfstests-* && make -j$jobs >/tmp/build.log 2>&1 && make install >>/tmp/build.log 2>&1' || { tail -n 30 \"\$1\"/tmp/build.log >&2; exit 1; }" \
	--customize-hook="copy-in '$ndctl_src' /tmp" \
	--customize-hook="chroot \"\$1\" sh -ec 'cd /tmp && tar xf $(basename "$ndctl_src") && cd ndctl-$ndctl_ver && meson setup build --prefix=/usr/local -Drootprefix=/usr/local -Drootlibdir=/usr/local/lib/x86_64-linux-gnu -Dversion-tag=$ndctl_ver -Dtest=enabled -Ddestructive=enabled -Dpoison=disabled -Ddocs=disabled -Dsystemd=disabled -Diniparserdir=/usr/include/iniparser >/tmp/ndctl.log 2>&1 && meson compile -C build >>/tmp/ndctl.log 2>&1 && meson install -C build >>/tmp/ndctl.log 2>&1 && mkdir -p /usr/local/lib/ndctl-tests && cp build/test/dax-pmd build/test/dax-dev build/test/mmap /usr/local/lib/ndctl-tests/ && cp -a test/common test/dax.sh test/dax-ext4.sh test/dax-xfs.sh test/mmap.sh /usr/local/lib/ndctl-tests/ && ldconfig' || { tail -n 30 \"\$1\"/tmp/ndctl.log >&2; exit 1; }" \
	--customize-hook="chroot \"\$1\" sh -ec 'groupadd fsgqa; useradd -m -g fsgqa fsgqa; useradd -m fsgqa2; useradd 123456-fsgqa'" \
	--customize-hook="chroot \"\$1\" apt-mark manual ${runtime[*]} >/dev/null" \
	--customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q --autoremove -o APT::AutoRemove::RecommendsImportant=false -o APT::AutoRemove::SuggestsImportant=false ${build[*]} >/dev/null" \
	--customize-hook="copy-in '$guest_bin' /usr/local/bin" \
	--customize-hook="copy-in '$DAXVMM_ROOT/images/rootfs/daxvmm-fstests' '$DAXVMM_ROOT/images/rootfs/daxvmm-ndctl-tests' '$DAXVMM_ROOT/images/rootfs/journalctl' /usr/local/bin" \
	--customize-hook="copy-in '$DAXVMM_ROOT/images/rootfs/init' /usr/local/sbin" \
	--customize-hook="mkdir -p \"\$1\"/usr/local/lib/daxvmm" \
	--customize-hook="copy-in '$DAXVMM_ROOT/images/guest-tests/lib.sh' /usr/local/lib/daxvmm" \
	--customize-hook="mv \"\$1\"/usr/local/sbin/init \"\$1\"/usr/local/sbin/daxvmm-init" \
	--customize-hook="chroot \"\$1\" dpkg-query -W -f '\${Package} \${Version}\n' >'$work/packages.txt'" \
	--customize-hook="rm -rf \"\$1\"/tmp/* \"\$1\"/var/cache/apt/* \"\$1\"/var/lib/apt/lists/* \"\$1\"/usr/share/doc \"\$1\"/usr/share/man \"\$1\"/usr/share/locale" \
	"$suite" "$root" "$(debian_mirror)" >&2 || die "mmdebstrap failed (see above)"
[ -x "$root/var/lib/xfstests/check" ] || die "fstests was not installed in the image"
[ -x "$root/usr/local/lib/ndctl-tests/dax-pmd" ] || die "ndctl's tests were not installed in the image"

# Room for the suites' own files (results, fsgqa's homes): a quarter more than the contents, in 64 MiB.
used_mb=$(du -sm "$root" | cut -f1)
size_mb=$(((used_mb * 5 / 4 + 64 + 63) / 64 * 64))
mkfs.ext4 -q -F -L daxvmm-root -b 4096 -d "$root" "$work/rootfs.img" "${size_mb}M" >&2 || die "mkfs.ext4 -d failed"

log "packages in the image ($(wc -l <"$work/packages.txt")):"
column -c 110 "$work/packages.txt" >&2 2>/dev/null || cat "$work/packages.txt" >&2
mkdir -p "$out"
mv "$work/packages.txt" "$out/packages.txt"
mv "$work/rootfs.img" "$out/rootfs.img"
log "guest suite image: $out/rootfs.img (${size_mb} MiB, ${used_mb} MiB used)"
echo "$out/rootfs.img"
