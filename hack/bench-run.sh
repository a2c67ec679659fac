#!/usr/bin/env bash
# Throughput of a replicated run against one plain container, measured in
# the same run on a private containerd: SIZE MiB of text through a
# stdin-to-stdout filter (gzip -c), as
#   runc:      ctr run --rm --runtime io.containerd.runc.v2 IMAGE gzip -c
#   runc x3:   three such containers at once, each given the whole input
#              (the work of three replicas with nothing of Lockstep's: the
#              ceiling of the ratio on this machine)
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
n=0 r=() r3=() l=()
for _ in $(seq "$REPS"); do
	n=$((n + 1))
	t0=$(now)
	$CTR run --rm --runtime io.containerd.runc.v2 lockstep.bench/gzip:1 "g$n" /bin/busybox gzip -c <"$work/in" | sha256sum >"$work/runc.sum"
	r+=($(( $(now) - t0 )))
	t0=$(now)
	pids=()
	for i in 1 2 3; do
		$CTR run --rm --runtime io.containerd.runc.v2 lockstep.bench/gzip:1 "g$n-$i" /bin/busybox gzip -c <"$work/in" >/dev/null &
		pids+=($!)
	done
	wait "${pids[@]}"
	r3+=($(( $(now) - t0 )))
	t0=$(now)
	bin/lockstep run --address "$work/ctrd/containerd.sock" --namespace lockstep --replicas 3 lockstep.bench/gzip:1 -- /bin/busybox gzip -c <"$work/in" | sha256sum >"$work/lockstep.sum"
	l+=($(( $(now) - t0 )))
	cmp -s "$work/runc.sum" "$work/lockstep.sum" || { echo "bench-run: the outputs differ" >&2; exit 1; }
done
rt=$(printf '%s\n' "${r[@]}" | median) r3t=$(printf '%s\n' "${r3[@]}" | median) lt=$(printf '%s\n' "${l[@]}" | median)
s() { echo "$1/1000000000" | bc -l; }
printf '%-44s %8s %8s %8s %8s\n' "gzip -c of $SIZE MiB (median of $REPS), $(nproc) CPUs" runc runc_x3 lockstep ratio
printf '%-44s %8.2f %8.2f %8.2f %8.2f\n' "wall s; ratio 1 runc container / 3 replicas" "$(s "$rt")" "$(s "$r3t")" "$(s "$lt")" "$(echo "$rt/$lt" | bc -l)"
printf '%-44s %8.1f %8.1f %8.1f\n' "throughput MiB/s" "$(echo "$SIZE*1000000000/$rt" | bc -l)" "$(echo "$SIZE*1000000000/$r3t" | bc -l)" "$(echo "$SIZE*1000000000/$lt" | bc -l)"
printf '%-44s %8.2f %8s %8.2f\n' "ceiling: 1 runc / 3 runc at once; Lockstep's" "$(echo "$rt/$r3t" | bc -l)" "" "$(echo "$r3t/$lt" | bc -l)"
