#!/usr/bin/env bash
# lockstep serve against plain runc, measured in the same run on a private
# containerd: the Go key-value service (testdata/probes/kv, net/http,
# persisting to a file) under a keep-alive load of CLIENTS connections
# (hack/bench/kvload: each a PUT then a GET of its own key, N requests), as
#   runc:      one container of the runc runtime, the load straight to it
#              (host network: no gateway)
#   runc x3:   three such containers, the same load sent to all three at
#              once (the work of three replicas with nothing of Lockstep's:
#              the ceiling of the ratio on this machine's CPUs)
#   lockstep:  lockstep serve --replicas 3 (embedded logd, three containers
#              of the Lockstep runtime, the gateway's vote)
# alternating REPS times; medians. Ratios: throughput against runc's
# (target >= 0.5), p99 latency against runc's (target <= 2x + 2 ms).
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3} CLIENTS=${CLIENTS:-16} N=${N:-100}
source hack/lib/containerd.sh
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; containerd_stop "$work/ctrd"; rm -rf "$work"' EXIT
make -s build >/dev/null
(cd testdata/probes/kv && CGO_ENABLED=0 go build -o "$work/kv" .)
(cd hack/bench/kvload && go build -o "$work/kvload" .)
bin/mkimage -o "$work/kv.tar" -n lockstep.bench/kv:1 --bin "$work/kv:/kv" >/dev/null
LOCKSTEP_BIN=$PWD/bin containerd_start "$work/ctrd"
$CTR image import "$work/kv.tar" >/dev/null
sock="$work/ctrd/containerd.sock"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
waitfor() { for _ in $(seq 200); do "$work/kvload" -url "$1" -clients 1 -n 1 >/dev/null 2>&1 && return; sleep 0.1; done; echo "bench-serve: $1 did not answer" >&2; exit 1; }
gone() { $CTR task rm -f "$1" >/dev/null 2>&1 || true; $CTR container rm "$1" >/dev/null 2>&1 || true; }
load() { "$work/kvload" -url "$1" -clients "$CLIENTS" -n "$N"; }

declare -a rt rp r3t lt lp
for i in $(seq "$REPS"); do
	# runc: one container on the host's network.
	$CTR run -d --net-host --runtime io.containerd.runc.v2 lockstep.bench/kv:1 "kv-runc-$i" /kv -listen 127.0.0.1:18181 -file "/kv-$i" >/dev/null
	waitfor http://127.0.0.1:18181
	read -r t _ p _ < <(load http://127.0.0.1:18181)
	rt+=("$t") rp+=("$p")
	gone "kv-runc-$i"
	# runc x3: three at once, each given the whole load.
	for k in 1 2 3; do
		$CTR run -d --net-host --runtime io.containerd.runc.v2 lockstep.bench/kv:1 "kv3-$i-$k" /kv -listen "127.0.0.1:1819$k" >/dev/null
	done
	for k in 1 2 3; do waitfor "http://127.0.0.1:1819$k"; done
	for k in 1 2 3; do load "http://127.0.0.1:1819$k" >"$work/x3-$k" & done
	wait $(jobs -p | tail -3) 2>/dev/null || true
	r3t+=("$(awk '{print $1}' "$work/x3-1")")
	for k in 1 2 3; do gone "kv3-$i-$k"; done
	# lockstep serve: three replicas behind the gateway.
	bin/lockstep serve --address "$sock" --namespace lockstep --listen 127.0.0.1:18280 --port 8080 lockstep.bench/kv:1 -- /kv 2>"$work/serve-$i.log" &
	serve=$!
	waitfor http://127.0.0.1:18280
	read -r t _ p _ < <(load http://127.0.0.1:18280)
	lt+=("$t") lp+=("$p")
	kill -INT $serve
	wait $serve || { echo "bench-serve: lockstep serve failed:"; cat "$work/serve-$i.log"; exit 1; } >&2
	grep -q DIVERGED "$work/serve-$i.log" && { echo "bench-serve: the replicas diverged:"; cat "$work/serve-$i.log"; exit 1; } >&2
	sleep 1
done
m() { printf '%s\n' "$@" | median; }
RT=$(m "${rt[@]}") RP=$(m "${rp[@]}") R3=$(m "${r3t[@]}") LT=$(m "${lt[@]}") LP=$(m "${lp[@]}")
printf '%-34s %12s %10s\n' "$CLIENTS keep-alive clients, $N requests each" "requests/s" "p99 ms"
printf '%-34s %12s %10s\n' "runc (one container, no gateway)" "$RT" "$RP"
printf '%-34s %12s %10s\n' "runc x3 (each of three at once)" "$R3" ""
printf '%-34s %12s %10s\n' "lockstep serve --replicas 3" "$LT" "$LP"
awk -v rt="$RT" -v rp="$RP" -v r3="$R3" -v lt="$LT" -v lp="$LP" 'BEGIN {
	printf "throughput: lockstep/runc %.2f (target >= 0.5); ceiling runc x3/runc %.2f; lockstep/ceiling %.2f\n", lt/rt, r3/rt, lt/r3
	printf "p99: lockstep %.2f ms against runc %.2f ms: %.2fx (target <= 2x + 2 ms = %.2f ms)\n", lp, rp, lp/rp, 2*rp+2 }'
