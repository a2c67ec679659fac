#!/usr/bin/env bash
# Throughput of a replicated run against one plain container, measured in
# the same run on a private containerd: SIZE MiB of text through a
# stdin-to-stdout filter (gzip -c), as
#   runc:      ctr run --rm --runtime io.containerd.runc.v2 IMAGE gzip -c
#   lockstep:  lockstep run --replicas 3 IMAGE -- gzip -c   (embedded logd,
#              three containers of the Lockstep runtime, checkpoint votes)
# alternating REPS times; medians of the wall times; the ratio is runc's
# time over lockstep's (the throughput ratio; target >= 0.5).
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3} SIZE=${SIZE:-64}
source hack/lib/containerd.sh
work=$(mktemp -d)
trap 'containerd_stop "$work/ctrd"; rm -rf "$work"' EXIT
make -s build >/dev/null
bin/mkimage -o "$work/bench.tar" -n lockstep.bench/gzip:1 --bin /bin/busybox:/bin/busybox >/dev/null
containerd_start "$work/ctrd"
$CTR image import "$work/bench.tar" >/dev/null
seq 1 100000000 | head -c "${SIZE}M" >"$work/in" || true # seq ends on SIGPIPE

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
n=0 r=() l=() sums=()
for _ in $(seq "$REPS"); do
	n=$((n + 1))
	t0=$(now)
	$CTR run --rm --runtime io.containerd.runc.v2 lockstep.bench/gzip:1 "g$n" /bin/busybox gzip -c <"$work/in" | sha256sum >"$work/runc.sum"
	r+=($(( $(now) - t0 )))
	t0=$(now)
	bin/lockstep run --address "$work/ctrd/containerd.sock" --namespace lockstep --replicas 3 lockstep.bench/gzip:1 -- /bin/busybox gzip -c <"$work/in" | sha256sum >"$work/lockstep.sum"
	l+=($(( $(now) - t0 )))
	cmp -s "$work/runc.sum" "$work/lockstep.sum" || { echo "bench-run: the outputs differ" >&2; exit 1; }
done
rt=$(printf '%s\n' "${r[@]}" | median) lt=$(printf '%s\n' "${l[@]}" | median)
printf '%-40s %9s %9s %9s\n' "gzip -c of $SIZE MiB (median of $REPS)" runc_s lockstep_s ratio
printf '%-40s %9.2f %9.2f %9.2f\n' "1 runc container vs 3 replicas" "$(echo "$rt/1000000000" | bc -l)" "$(echo "$lt/1000000000" | bc -l)" "$(echo "$rt/$lt" | bc -l)"
printf '%-40s %9.1f %9.1f\n' "throughput MiB/s" "$(echo "$SIZE*1000000000/$rt" | bc -l)" "$(echo "$SIZE*1000000000/$lt" | bc -l)"
