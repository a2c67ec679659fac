#!/usr/bin/env bash
# Benchmark of Lockstep's time (issue 18) against native, measured in the
# same run: each workload runs natively, under an allow-all seccomp filter
# (the floor any seccomp-based runtime pays) and under `lockstep exec`,
# alternately, REPS times; medians of the wall times measured out here
# (inside, the clocks are virtual). Each side's cost of starting a process
# that does nothing is measured the same way and subtracted.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
lockstep=${LOCKSTEP:-bin/lockstep}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -static -pthread -o "$work/bench" hack/bench/bench.c
gcc -O2 -o "$work/allowall" hack/bench/allowall.c
(cd testdata/probes/goservice && CGO_ENABLED=0 go build -o "$work/goservice" .)
gcc -O2 -o "$work/traceclone" hack/bench/traceclone.c
# Debian's python3, not a version manager's shim that PATH may put first
# (pyenv's is a shell script: its start-up would be timed too).
python=/usr/bin/python3
[[ -x $python ]] || python=$(command -v python3)

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# trio CMD...: runs CMD natively, under the allow-all filter and under
# lockstep, in turn, REPS times; prints the three medians in ns.
trio() {
	local tn=() ta=() tl=() t0
	for _ in $(seq "$REPS"); do
		t0=$(now); "$@" >/dev/null; tn+=($(( $(now) - t0 )))
		t0=$(now); "$work/allowall" "$@" >/dev/null; ta+=($(( $(now) - t0 )))
		t0=$(now); "$lockstep" exec -- "$@" >/dev/null 2>&1; tl+=($(( $(now) - t0 )))
	done
	echo "$(printf '%s\n' "${tn[@]}" | median) $(printf '%s\n' "${ta[@]}" | median) $(printf '%s\n' "${tl[@]}" | median)"
}

ms() { echo "scale=1; $1/1000000" | bc -l; }
ratio() { echo "scale=3; $1/$2" | bc -l; }

read -r bn ba bl < <(trio "$work/bench" syscall 0)
printf '%-44s %10s %10s %10s %8s %8s\n' workload native_ms floor_ms lockstep_ms ratio vs_floor
printf '%-44s %10s %10s %10s   (subtracted below)\n' "start-to-exit (no work)" "$(ms "$bn")" "$(ms "$ba")" "$(ms "$bl")"
row() {
	local name=$1; shift
	local n a l
	read -r n a l < <(trio "$@")
	n=$(( n - bn )); a=$(( a - ba )); l=$(( l - bl ))
	(( n < 1 )) && n=1; (( a < 1 )) && a=1; (( l < 1 )) && l=1
	printf '%-44s %10s %10s %10s %8s %8s\n' "$name" "$(ms "$n")" "$(ms "$a")" "$(ms "$l")" "$(ratio "$l" "$n")" "$(ratio "$l" "$a")"
}
row "Go net/http, 2000 loopback requests" "$work/goservice" -n 2000
row "Python asyncio, 3000 loopback round trips" "$python" hack/bench/asyncio_echo.py 3000
row "1000 pthread create + join" "$work/bench" threads 1000
# The floor of following threads with ptrace at all: a bare tracer with
# the options Lockstep's sets, resuming every stop at once.
ptrace_floor() {
	local t=() t0
	for _ in $(seq "$REPS"); do
		t0=$(now); "$work/traceclone" "$work/bench" threads 1000 >/dev/null; t+=($(( $(now) - t0 )))
	done
	printf '%s\n' "${t[@]}" | median
}
pf=$(( $(ptrace_floor) - bn ))
printf '%-44s %10s %10s %10s   (floor: a bare ptrace tracer)\n' "1000 pthread create + join, ptrace floor" "" "$(ms "$pf")" ""
row "10M clock reads (clock_gettime REALTIME)" "$work/bench" clock 10000000
row "CPU-bound loop (1.5e9 iterations)" "$work/bench" cpu
