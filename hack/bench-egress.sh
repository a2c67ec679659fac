#!/usr/bin/env bash
# Egress throughput: a replicated run fetching a SIZE MiB file from a real
# web server (python3 -m http.server in a network namespace of its own,
# over a veth pair) through the guard, against one plain container
# fetching it directly, measured in the same run on a private containerd:
#   runc:      ctr run --net-host IMAGE wget -O - URL | sha256sum
#   lockstep:  lockstep run --replicas 3 --allow-net ADDR:PORT --record LOG
#              IMAGE -- sh -c 'wget -O - URL | sha256sum'
#   floor:     the same lockstep run fetching nothing (sh -c true): a
#              replicated run's fixed cost (three containers, the log, the
#              verdict), which the transfer's own throughput is net of
#   stdin:     the same file given to lockstep run as stdin (sha256sum):
#              the same bytes through the log by its other door, the
#              log's own throughput on this machine
#   piped:     the same, through the same pipeline (cat | sha256sum): the
#              log's door with the fetch's pipe between two processes
#   runc x3:   three plain containers fetching at once: the most three
#              replicas' work can take on this machine's CPUs (the
#              ceiling)
# alternating REPS times; medians of the wall times; the ratio is runc's
# time over lockstep's (the throughput ratio; target >= 0.5). The log's
# size per MiB fetched is its growth. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3} SIZE=${SIZE:-100}
ns=lockstep-bench-web veth=lsbw0 addr=10.213.8.2
source hack/lib/containerd.sh
work=$(mktemp -d)
cleanup() {
	[ -z "${srv:-}" ] || kill "$srv" 2>/dev/null || true
	ip link del "$veth" 2>/dev/null || true
	ip netns del "$ns" 2>/dev/null || true
	containerd_stop "$work/ctrd"
	rm -rf "$work"
}
trap cleanup EXIT
make -s build >/dev/null
bin/mkimage -o "$work/bench.tar" -n lockstep.bench/wget:1 --bin /bin/busybox:/bin/busybox >/dev/null
containerd_start "$work/ctrd"
$CTR image import "$work/bench.tar" >/dev/null
mkdir "$work/www"
head -c "${SIZE}M" /dev/urandom >"$work/www/file"
want=$(sha256sum <"$work/www/file")
ip netns del "$ns" 2>/dev/null || true
ip link del "$veth" 2>/dev/null || true
ip netns add "$ns"
ip link add "$veth" type veth peer name eth0 netns "$ns"
ip addr add 10.213.8.1/24 dev "$veth"
ip link set "$veth" up
ip -n "$ns" addr add "$addr/24" dev eth0
ip -n "$ns" link set eth0 up
ip -n "$ns" link set lo up
ip netns exec "$ns" python3 -m http.server 8000 --bind "$addr" --directory "$work/www" 2>/dev/null &
srv=$!
for _ in $(seq 50); do ip netns exec "$ns" python3 -c "import socket; socket.create_connection(('$addr', 8000), 1)" 2>/dev/null && break; sleep 0.1; done
url=http://$addr:8000/file

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
n=0 r=() l=() f=() i=() p=() c=()
for _ in $(seq "$REPS"); do
	n=$((n + 1))
	t0=$(now)
	got=$($CTR run --rm --net-host --runtime io.containerd.runc.v2 lockstep.bench/wget:1 "w$n" /bin/busybox sh -c "wget -q -O - $url | sha256sum")
	r+=($(( $(now) - t0 )))
	[ "$got" = "$want" ] || { echo "bench-egress: runc fetched another file: $got" >&2; exit 1; }
	t0=$(now)
	got=$(bin/lockstep run --address "$work/ctrd/containerd.sock" --namespace lockstep --replicas 3 --allow-net "$addr:8000" --record "$work/log" \
		lockstep.bench/wget:1 -- /bin/busybox sh -c "wget -q -O - $url | sha256sum" 2>"$work/err") || { echo "bench-egress: the egress run failed:" >&2; cat "$work/err" >&2; exit 1; }
	l+=($(( $(now) - t0 )))
	[ "$got" = "$want" ] || { echo "bench-egress: lockstep fetched another file: $got" >&2; cat "$work/err" >&2; exit 1; }
	t0=$(now)
	bin/lockstep run --address "$work/ctrd/containerd.sock" --namespace lockstep --replicas 3 lockstep.bench/wget:1 -- /bin/busybox true 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
	f+=($(( $(now) - t0 )))
	t0=$(now)
	got=$(bin/lockstep run --address "$work/ctrd/containerd.sock" --namespace lockstep --replicas 3 lockstep.bench/wget:1 -- /bin/busybox sha256sum <"$work/www/file" 2>"$work/err") || { cat "$work/err" >&2; exit 1; }
	i+=($(( $(now) - t0 )))
	[ "$got" = "$want" ] || { echo "bench-egress: lockstep run of sha256sum printed $got" >&2; exit 1; }
	t0=$(now)
	got=$(bin/lockstep run --address "$work/ctrd/containerd.sock" --namespace lockstep --replicas 3 lockstep.bench/wget:1 -- /bin/busybox sh -c "cat | sha256sum" <"$work/www/file" 2>"$work/err") || { cat "$work/err" >&2; exit 1; }
	p+=($(( $(now) - t0 )))
	[ "$got" = "$want" ] || { echo "bench-egress: lockstep run of cat | sha256sum printed $got" >&2; exit 1; }
	t0=$(now)
	pids=()
	for k in 1 2 3; do
		$CTR run --rm --net-host --runtime io.containerd.runc.v2 lockstep.bench/wget:1 "w$n-$k" /bin/busybox sh -c "wget -q -O - $url | sha256sum" >"$work/c$k" &
		pids+=($!)
	done
	wait "${pids[@]}"
	c+=($(( $(now) - t0 )))
	for k in 1 2 3; do [ "$(cat "$work/c$k")" = "$want" ] || { echo "bench-egress: runc x3 fetched another file" >&2; exit 1; }; done
done
rt=$(printf '%s\n' "${r[@]}" | median) lt=$(printf '%s\n' "${l[@]}" | median) ft=$(printf '%s\n' "${f[@]}" | median) it=$(printf '%s\n' "${i[@]}" | median) pt=$(printf '%s\n' "${p[@]}" | median) ct=$(printf '%s\n' "${c[@]}" | median)
logsize=$(stat -c %s "$work/log")
s() { echo "$1/1000000000" | bc -l; }
printf '%-46s %8s %8s %8s\n' "fetch $SIZE MiB over HTTP (median of $REPS), $(nproc) CPUs" runc lockstep ratio
printf '%-46s %8.2f %8.2f %8.2f\n' "wall s; ratio 1 runc container / 3 replicas" "$(s "$rt")" "$(s "$lt")" "$(echo "$rt/$lt" | bc -l)"
printf '%-46s %8.1f %8.1f\n' "throughput MiB/s" "$(echo "$SIZE*1000000000/$rt" | bc -l)" "$(echo "$SIZE*1000000000/$lt" | bc -l)"
printf '%-46s %8s %8.2f\n' "floor: lockstep run of true, wall s" "" "$(s "$ft")"
printf '%-46s %8.1f %8.1f %8.2f\n' "transfer MiB/s net of the floor; ratio" "$(echo "$SIZE*1000000000/$rt" | bc -l)" "$(echo "$SIZE*1000000000/($lt-$ft)" | bc -l)" "$(echo "$rt/($lt-$ft)" | bc -l)"
printf '%-46s %8s %8.2f %8.2f\n' "the file as stdin through the log, wall s; egress/it" "" "$(s "$it")" "$(echo "$it/$lt" | bc -l)"
printf '%-46s %8s %8.2f %8.2f\n' "the same piped (cat | sha256sum), wall s; egress/it" "" "$(s "$pt")" "$(echo "$pt/$lt" | bc -l)"
printf '%-46s %8.2f %8s %8.2f\n' "runc x3 at once (the ceiling), wall s; lockstep/it" "$(s "$ct")" "" "$(echo "$ct/$lt" | bc -l)"
printf '%-46s %17.3f\n' "log bytes per byte fetched (--record file)" "$(echo "$logsize/($SIZE*1048576)" | bc -l)"
