#!/usr/bin/env bash
# Benchmark of `lockstep exec` against native, measured in the same run:
# each workload runs natively and under lockstep, alternately, REPS times;
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

# pair A -- B: runs command A and command B alternately, REPS times each
# (so that the VM's drift hits both alike), and prints their median wall
# times in ns.
pair() {
	local a=() b=() ta=() tb=() t0
	while [ "$1" != -- ]; do a+=("$1"); shift; done
	shift
	b=("$@")
	for _ in $(seq "$REPS"); do
		t0=$(now); "${a[@]}" >/dev/null; ta+=($(( $(now) - t0 )))
		t0=$(now); "${b[@]}" >/dev/null; tb+=($(( $(now) - t0 )))
	done
	echo "$(printf '%s\n' "${ta[@]}" | median) $(printf '%s\n' "${tb[@]}" | median)"
}

printf '%-34s %12s %12s %9s   %s\n' workload native_ms lockstep_ms ratio "(totals with process start, ms)"
row() {
	local name=$1; shift
	local n l
	read -r n l < <(pair "$work/bench" "$@" -- "$lockstep" exec -- "$work/bench" "$@")
	# Subtract the fixed cost of starting the process (measured below).
	local nw=$(( n - base_native )) lw=$(( l - base_lockstep ))
	(( nw < 1 )) && nw=1
	printf '%-34s %12.1f %12.1f %9.3f   %.1f / %.1f\n' "$name" "$(echo "$nw/1000000" | bc -l)" "$(echo "$lw/1000000" | bc -l)" "$(echo "$lw/$nw" | bc -l)" "$(echo "$n/1000000" | bc -l)" "$(echo "$l/1000000" | bc -l)"
}
read -r base_native base_lockstep < <(pair "$work/bench" syscall 0 -- "$lockstep" exec -- "$work/bench" syscall 0)
printf '%-34s %12.1f %12.1f %9s\n' "start-to-exit (no work)" "$(echo "$base_native/1000000" | bc -l)" "$(echo "$base_lockstep/1000000" | bc -l)" "+$(( (base_lockstep - base_native) / 1000000 )) ms"
row "cpu-bound loop (1.5e9 iterations)" cpu
row "1M untrapped syscalls (getppid)" syscall 1000000
row "1M clock reads (REALTIME)" clock 1000000
row "64 MiB /dev/urandom (64 KiB reads)" urandom 67108864
read -r n a < <(pair "$work/bench" syscall 1000000 -- "$work/allowall" "$work/bench" syscall 1000000)
printf '%-34s %12.1f %12.1f %9.3f\n' "  reference: allow-all seccomp" "$(echo "($n-$base_native)/1000000" | bc -l)" "$(echo "($a-$base_native)/1000000" | bc -l)" "$(echo "($a-$base_native)/($n-$base_native)" | bc -l)"
