#!/usr/bin/env bash
# Benchmark of the eBPF I/O tracer: a write-heavy workload under
# `lockstep exec` with and without --digests (traced vs untraced), in the
# same run, alternating REPS times; medians of the wall time. Output goes
# to a file, so that every byte written is copied by the tracer and
# hashed into a digest chain.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
make -s build >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -static -o "$work/bench" hack/bench/bench.c
now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
runs() {
	for _ in $(seq "$REPS"); do
		local t0; t0=$(now); "$@" >"$work/out"; echo $(( $(now) - t0 ))
	done | median
}
printf '%-36s %11s %11s %7s\n' workload untraced_ms traced_ms ratio
for w in "20000 4096" "2000 65536" "200000 64"; do
	set -- $w
	u=$(runs bin/lockstep exec -- "$work/bench" write "$1" "$2")
	t=$(runs bin/lockstep exec --digests "$work/d.json" -- "$work/bench" write "$1" "$2")
	printf '%-36s %11.1f %11.1f %7.3f\n' "$1 writes of $2 bytes ($(( $1 * $2 / 1048576 )) MiB)" "$(echo "$u/1000000" | bc -l)" "$(echo "$t/1000000" | bc -l)" "$(echo "$t/$u" | bc -l)"
done
