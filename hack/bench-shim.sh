#!/usr/bin/env bash
# Benchmark of the Lockstep runtime against io.containerd.runc.v2, measured
# in the same run on a private containerd: `ctr run --rm` start-to-exit of
# `true`, a CPU-bound loop and 1M untrapped syscalls, alternating the two
# runtimes REPS times; medians of the wall times. The work of a workload is
# its time minus the runtime's time for `true`.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-7}
source hack/lib/containerd.sh
work=$(mktemp -d)
trap 'containerd_stop "$work/ctrd"; rm -rf "$work"' EXIT
make -s build >/dev/null
gcc -O2 -static -o "$work/bench" hack/bench/bench.c
gcc -O2 -static -o "$work/allowall" hack/bench/allowall.c
bin/mkimage -o "$work/bench.tar" -n lockstep.bench/bench:1 --bin "$work/bench:/bench" --bin "$work/allowall:/allowall" --bin /bin/busybox:/bin/busybox
containerd_start "$work/ctrd"
$CTR image import "$work/bench.tar" >/dev/null

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
n=0
# runs RUNTIME CMD...: one wall time per line, REPS lines.
runs() {
	local rt=$1; shift
	for _ in $(seq "$REPS"); do
		n=$((n + 1))
		local t0; t0=$(now)
		$CTR run --rm --runtime "$rt" lockstep.bench/bench:1 "b$n" "$@" >/dev/null
		echo $(( $(now) - t0 ))
	done | median
}
ms() { echo "$1/1000000" | bc -l; }

runc=io.containerd.runc.v2 lockstep=io.containerd.lockstep.v1
base_r=$(runs $runc /bin/busybox true)
base_l=$(runs $lockstep /bin/busybox true)
printf '%-34s %10s %11s %9s\n' workload runc_ms lockstep_ms ratio
printf '%-34s %10.1f %11.1f %9s\n' "start-to-exit (true)" "$(ms "$base_r")" "$(ms "$base_l")" "+$(( (base_l - base_r) / 1000000 )) ms"
row() {
	local name=$1; shift
	local r l
	r=$(runs $runc /bench "$@"); l=$(runs $lockstep /bench "$@")
	local rw=$(( r - base_r )) lw=$(( l - base_l ))
	(( rw < 1 )) && rw=1
	printf '%-34s %10.1f %11.1f %9.3f   (totals %.1f / %.1f)\n' "$name" "$(ms $rw)" "$(ms $lw)" "$(echo "$lw/$rw" | bc -l)" "$(ms "$r")" "$(ms "$l")"
}
row "cpu-bound loop" cpu
row "1M untrapped syscalls (getppid)" syscall 1000000
r=$(runs $runc /bench syscall 1000000); a=$(runs $runc /allowall /bench syscall 1000000)
printf '%-34s %10.1f %11.1f %9.3f\n' "  reference: allow-all filter, runc" "$(ms $((r - base_r)))" "$(ms $((a - base_r)))" "$(echo "($a-$base_r)/($r-$base_r)" | bc -l)"
row "100k clock reads (REALTIME)" clock 100000
