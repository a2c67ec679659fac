#!/usr/bin/env bash
# Benchmark of the eBPF I/O tracer: a write-heavy workload under
# `lockstep exec` with and without --digests (traced vs untraced), in the
# same run, alternating REPS times; medians of the wall times, and the
# ratio is the median of each pair's traced/untraced. Output goes to a
# file in OUT (default /dev/shm: tmpfs, so that no disk writeback of an
# earlier run lands in a later one; OUT=/tmp for ext4), so that every byte
# written is copied by the tracer and hashed into a digest chain. The
# digest chains' own rate (BenchmarkChains) is printed first: a writer
# faster than that is held until the consumer catches up.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
OUT=${OUT:-/dev/shm}
make -s build >/dev/null
work=$(mktemp -d)
out=$(mktemp -p "$OUT")
trap 'rm -rf "$work" "$out"' EXIT
gcc -O2 -static -o "$work/bench" hack/bench/bench.c
go test -c -o "$work/ebpf.test" ./ebpf/
for cpus in 1 "$(nproc)"; do # one run each: in one run, -cpu 1,2 let the first use both
	"$work/ebpf.test" -test.run '^$' -test.bench Chains -test.cpu "$cpus" |
		awk -v cpus="$cpus" '/^BenchmarkChains/ {split(substr($1, 17), a, "-"); printf "digest chain rate, records of %s bytes, %s CPU: %s MB/s\n", a[1], cpus, $(NF-1)}'
done
now() { date +%s%N; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_ns() { local t0; t0=$(now); "$@" >"$out"; echo $(( $(now) - t0 )); }
printf 'output on %s (%s)\n' "$OUT" "$(stat -f -c %T "$OUT")"
printf '%-40s %11s %11s %7s\n' workload untraced_ms traced_ms ratio
# Each workload: a label, then the command.
row() {
	local label=$1
	shift
	u=() t=() r=()
	for _ in $(seq "$REPS"); do # alternating, so that drift hits both alike
		u+=($(time_ns bin/lockstep exec -- "$@"))
		t+=($(time_ns bin/lockstep exec --digests "$work/d.json" -- "$@"))
		r+=($(echo "${t[-1]}/${u[-1]}" | bc -l))
	done
	um=$(printf '%s\n' "${u[@]}" | median) tm=$(printf '%s\n' "${t[@]}" | median) rm=$(printf '%s\n' "${r[@]}" | median)
	printf '%-40s %11.1f %11.1f %7.3f\n' "$label" "$(echo "$um/1000000" | bc -l)" "$(echo "$tm/1000000" | bc -l)" "$rm"
}
for w in "1 1" "20000 4096" "2000 65536" "200000 64"; do
	set -- $w
	row "$1 writes of $2 bytes ($(( $1 * $2 / 1048576 )) MiB)" "$work/bench" write "$1" "$2"
done
# A program that computes what it writes: gzip reads 8 MiB of text and
# writes 6 MiB, both traced.
head -c 6M /dev/urandom | base64 >"$out.in"
trap 'rm -rf "$work" "$out" "$out.in"' EXIT
row "gzip -1 of 8 MiB of text (6 MiB out)" gzip -1 -c "$out.in"
