#!/usr/bin/env bash
# Benchmark of `lockstep exec` against native, measured in the same run:
# each workload runs natively and under lockstep, alternating, REPS times;
# the medians of the wall times are compared. Wall time is measured out
# here, because inside lockstep the clocks are virtual.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
lockstep=${LOCKSTEP:-bin/lockstep}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -static -o "$work/bench" hack/bench/bench.c
gcc -O2 -o "$work/allowall" hack/bench/allowall.c

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# time_ns CMD...: median wall time in ns over REPS runs.
time_ns() {
	for _ in $(seq "$REPS"); do
		local t0; t0=$(now); "$@" >/dev/null; echo $(( $(now) - t0 ))
	done | median
}

printf '%-34s %12s %12s %9s   %s\n' workload native_ms lockstep_ms ratio "(totals with process start, ms)"
row() {
	local name=$1; shift
	local n l
	n=$(time_ns "$work/bench" "$@")
	l=$(time_ns "$lockstep" exec -- "$work/bench" "$@")
	# Subtract the fixed cost of starting the process (measured below).
	local nw=$(( n - base_native )) lw=$(( l - base_lockstep ))
	(( nw < 1 )) && nw=1
	printf '%-34s %12.1f %12.1f %9.3f   %.1f / %.1f\n' "$name" "$(echo "$nw/1000000" | bc -l)" "$(echo "$lw/1000000" | bc -l)" "$(echo "$lw/$nw" | bc -l)" "$(echo "$n/1000000" | bc -l)" "$(echo "$l/1000000" | bc -l)"
}
base_native=$(time_ns "$work/bench" syscall 0)
base_lockstep=$(time_ns "$lockstep" exec -- "$work/bench" syscall 0)
printf '%-34s %12.1f %12.1f %9s\n' "start-to-exit (no work)" "$(echo "$base_native/1000000" | bc -l)" "$(echo "$base_lockstep/1000000" | bc -l)" "+$(( (base_lockstep - base_native) / 1000000 )) ms"
row "cpu-bound loop (1.5e9 iterations)" cpu
row "1M untrapped syscalls (getppid)" syscall 1000000
row "1M clock reads (REALTIME)" clock 1000000
row "1 MiB /dev/urandom read" urandom 1048576
n=$(time_ns "$work/bench" syscall 1000000); a=$(time_ns "$work/allowall" "$work/bench" syscall 1000000)
printf '%-34s %12.1f %12.1f %9.3f\n' "  reference: allow-all seccomp" "$(echo "($n-$base_native)/1000000" | bc -l)" "$(echo "($a-$base_native)/1000000" | bc -l)" "$(echo "($a-$base_native)/($n-$base_native)" | bc -l)"
