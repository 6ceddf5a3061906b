#!/usr/bin/env bash
# Race-coverage benchmark: how fast `daxvmm test` covers the interleavings of the truncate-vs-unpin
# scenario with forced schedules, against the baseline of the same scenario driven by random sleeps in guest
# user space (`daxvmm test --sleeps`: no schedule armed, each thread sleeps 0-2 ms before each sync point,
# as a sleep-based race test would). Both run in the same host run (one test host VM when nested), on
# the same guest kernel, initramfs and filesystem. The interleaving a run really took is read from the
# fault injector's log (release order when forced, arrival order when not) in both modes.
#
# Prints, for each mode: runs, seconds of runs (boot excluded), distinct interleavings observed, and
# interleavings per minute; for the baseline also how many runs it took to first hit the window that
# matters ("unpin while truncate waits": the break-layout wait began before the unpinner's first sync
# point), if ever, and after how many it had seen every interleaving the forced runs saw; and the ratio
# forced/baseline of interleavings per minute.
#
# usage: scripts/bench-race.sh [--baseline-runs N] [--fs ext4|xfs] [--where auto|direct|nested]
#          [--daxvmm PATH] [--kernel PATH] [--initrd PATH]
#   defaults: 100 baseline runs on ext4; artifacts as in test-host-vm batch.
source "$(dirname "$0")/lib.sh"

baseline_runs=100 fs=ext4 where=auto daxvmm='' kernel='' initrd=''
while [ $# -gt 0 ]; do
	case $1 in
	--baseline-runs) baseline_runs=$2; shift 2 ;;
	--fs) fs=$2; shift 2 ;;
	--where) where=$2; shift 2 ;;
	--daxvmm) daxvmm=$2; shift 2 ;;
	--kernel) kernel=$2; shift 2 ;;
	--initrd) initrd=$2; shift 2 ;;
	-h | --help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
[[ $baseline_runs =~ ^[1-9][0-9]*$ ]] || die "--baseline-runs wants a positive number, got '$baseline_runs'"
case $fs in ext4 | xfs) ;; *) die "--fs is ext4 or xfs, got '$fs'" ;; esac

arts=$(resolve_artifacts "$daxvmm" "$kernel" "$initrd") || exit 1
{ read -r daxvmm; read -r kernel; read -r initrd; } <<<"$arts"
[ "$where" = auto ] && where=$(kvm_where)
case $where in
direct) k=$kernel i=$initrd d=$daxvmm out=$(mktemp -d "${TMPDIR:-/tmp}/daxvmm-bench-race.XXXXXX") ;;
nested) k=/guest/bzImage i=/guest/initrd.cpio.lz4 d=/bin/daxvmm out=/tmp/bench-race ;;
*) die "--where is auto, direct or nested, got '$where'" ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/daxvmm-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
common="--kernel $k --initrd $i --scenario truncate-unpin --fs $fs --timeout 20m"
{
	printf 'forced\t%s test %s --out %s/forced\n' "$d" "$common" "$out"
	printf 'baseline\t%s test %s --out %s/baseline --sleeps --runs %s\n' "$d" "$common" "$out" "$baseline_runs"
} >"$work/batch"

log "benchmark: truncate-unpin on $fs, forced schedules vs $baseline_runs sleep-driven runs ($where)"
test_host_vm batch --where "$where" --split "$work/out" --batch "$work/batch" --daxvmm "$daxvmm" --kernel "$kernel" \
	--initrd "$initrd" --timeout 3000 --case-timeout 1500 || die "the test host VM did not finish the benchmark"

# Per mode: runs, seconds of runs, distinct observed orders, first baseline run in the window.
summarize() { # MODE
	awk '
		/\] observed \[/ {
			o = $0; sub(/.* observed \[/, "", o); sub(/\].*/, "", o)
			n++
			if (o != "incomplete") seen[o] = 1
			# The window: the wait began (0.e7) before the unpinner passed its first point (1.s1).
			if (first == "" && index(o, "0.e7") > 0 && index(o, "0.e7") < index(o, "1.s1")) first = n
		}
		/^daxvmm test: / { s = $0; sub(/.* with the boot, /, "", s); sub(/ s of runs.*/, "", s); secs = s }
		END {
			d = 0; for (k in seen) d++
			printf "%d %s %d %s\n", n, (secs == "" ? "none" : secs), d, (first == "" ? "never" : first)
		}' "$work/out/$1"
}
orders() { # MODE -> the observed order of each run, one per line, in run order
	awk '/\] observed \[/ { o = $0; sub(/.* observed \[/, "", o); sub(/\].*/, "", o); print o }' "$work/out/$1"
}
# After how many baseline runs had it seen every interleaving the forced runs observed, or which it missed.
orders forced | grep -v '^incomplete$' | sort -u >"$work/forced-orders"
coverage=$(orders baseline | awk -v want="$work/forced-orders" '
	BEGIN { while ((getline l < want) > 0) { need[l] = 1; left++ } }
	{ n++; if ($0 in need && !($0 in got)) { got[$0] = 1; left-- } if (left == 0 && at == "") at = n }
	END {
		if (at != "") { print "after " at " runs"; exit }
		m = ""; for (k in need) if (!(k in got)) m = m (m == "" ? "" : ", ") "[" k "]"
		print "never in " n " runs (missed " m ")"
	}')
read -r fr fs_secs fd _ < <(summarize forced)
read -r br bs_secs bd bfirst < <(summarize baseline)
[ "$fr" -gt 0 ] && [ "$fs_secs" != none ] || { tail -n 40 "$work/out/forced" >&2; die "the forced run printed no results"; }
[ "$br" -gt 0 ] && [ "$bs_secs" != none ] || { tail -n 40 "$work/out/baseline" >&2; die "the baseline run printed no results"; }
rate() { awk -v d="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0 ? d * 60 / s : 0) }'; }
frate=$(rate "$fd" "$fs_secs")
brate=$(rate "$bd" "$bs_secs")

echo
echo "Interleavings of truncate-unpin on $fs (10 schedules: truncator s1, wait-begin, s2; unpinner s1, s2)"
echo "both modes measured in the same run ($where$([ "$where" = nested ] && echo ': one test host VM, QEMU TCG + nested SVM' || true)); seconds are the runs alone, boot excluded"
printf '  %-9s %4d runs in %6.1f s, %2d distinct interleavings observed, %7s per minute\n' forced "$fr" "$fs_secs" "$fd" "$frate"
printf '  %-9s %4d runs in %6.1f s, %2d distinct interleavings observed, %7s per minute; first run in the window (unpin while truncate waits): %s\n' \
	baseline "$br" "$bs_secs" "$bd" "$brate" "$bfirst"
echo "  the baseline saw every interleaving the forced runs saw: $coverage"
echo "  ratio forced/baseline (interleavings per minute): $(awk -v a="$frate" -v b="$brate" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "inf (the baseline observed none)" }')"
echo "  forced: every schedule of the scenario tried in $fs_secs s (goal: under 60 s)"
