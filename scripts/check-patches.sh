#!/usr/bin/env bash
# Checks every guest kernel patch (guest-kernel/patches/series and each variant's series) with the pinned
# kernel's own scripts/checkpatch.pl --strict, from the build tree scripts/build-guest-kernel.sh keeps.
# Any ERROR fails; warnings and checks are printed and counted. (That the series applies is checked by
# every kernel build.)
#
# usage: scripts/check-patches.sh
source "$(dirname "$0")/lib.sh"
source "$DAXVMM_ROOT/scripts/kernel-lib.sh"
case ${1:-} in -h | --help) sed -n "2,7p" "$0" | sed "s/^# \\{0,1\\}//"; exit 0 ;; "") ;; *) die "unknown argument $1 (see --help)" ;; esac

key=$("$DAXVMM_ROOT/scripts/build-guest-kernel.sh" --print-key)
tree=$(find "$DAXVMM_CACHE/build/$key" -mindepth 1 -maxdepth 1 -type d -name 'linux-*' 2>/dev/null | head -n1)
[ -n "$tree" ] && [ -x "$tree/scripts/checkpatch.pl" ] ||
	die "no kernel tree for $key in $DAXVMM_CACHE/build; run scripts/build-guest-kernel.sh first"

patches=()
for series in "$DAXVMM_ROOT"/guest-kernel/patches/series "$DAXVMM_ROOT"/guest-kernel/variants/*/series; do
	[ -f "$series" ] || continue
	list=$(series_patches "$(dirname "$series")")
	[ -z "$list" ] || mapfile -t -O ${#patches[@]} patches <<<"$list"
done
errors=0 warnings=0 checks=0
for p in "${patches[@]}"; do
	out=$(cd "$tree" && perl scripts/checkpatch.pl --strict --color=never "$p" 2>&1 || true)
	read -r e w c < <(sed -n 's/^total: \([0-9]*\) errors, \([0-9]*\) warnings, \([0-9]*\) checks.*/\1 \2 \3/p' <<<"$out")
	[ -n "${e:-}" ] || { echo "$out" >&2; die "checkpatch printed no totals for ${p#"$DAXVMM_ROOT"/}"; }
	errors=$((errors + e)) warnings=$((warnings + w)) checks=$((checks + c))
	if [ "$e$w$c" != 000 ]; then
		echo "$out" | grep -E '^(ERROR|WARNING|CHECK|#|\+)' | sed 's/^/    /'
	fi
	log "checkpatch --strict: ${p#"$DAXVMM_ROOT"/}: $e errors, $w warnings, $c checks"
done
log "checkpatch --strict over ${#patches[@]} patches: $errors errors, $warnings warnings, $checks checks"
[ "$errors" = 0 ] || die "checkpatch reports errors"
