#!/usr/bin/env bash
# The main job, on a fresh machine: build, install (into a private prefix),
# start a private containerd with the Lockstep runtime, build the demo image
# locally and import it, then show
#   1. a verified three-replica run: stdin goes into the input log, three
#      containers read it, the output a majority agrees on is printed;
#   2. a two-stage pipe of verified services: cmd0 | lockstep pipe | lockstep pipe;
#   3. a replica given another seed (a cheating provider) named by the verdict;
#   4. lockstep serve: a Go key-value service as 3 replicas behind one
#      address, answered by the majority, stopped, and replayed from its log;
#   5. named services through a hub, the guard: registered by name,
#      placed on providers that announced themselves, every party a key;
#      echo hello | lockstep pipe upper | lockstep pipe rev, and parallel;
#   6. lockstep exec: the determinism core, without containerd.
# usage: sudo hack/demo.sh   (make demo)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (containerd, runc and ptrace need it)" >&2; exit 1; }
for tool in containerd runc gcc busybox curl; do
	command -v $tool >/dev/null || { echo "demo: $tool is missing: apt-get install -y containerd runc gcc busybox-static curl" >&2; exit 1; }
done
work=$(mktemp -d /tmp/lockstep-demo.XXXXXX)
source hack/lib/containerd.sh
trap 'containerd_stop "$work/containerd"; rm -rf "$work"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build and install into $work/prefix"
make -s build
make -s install PREFIX="$work/prefix" >/dev/null
export PATH="$work/prefix/bin:$PATH"
ls "$work/prefix/bin"

step "a private containerd (runtime io.containerd.lockstep.v1 from the prefix), the demo image built locally"
LOCKSTEP_BIN="$work/prefix/bin" containerd_start "$work/containerd"
hack/build-images.sh --out "$work/images" --import "$work/containerd/containerd.sock" | tail -1
run=(--address "$work/containerd/containerd.sock" --namespace lockstep)
img=lockstep.test/probes:1

step "a verified three-replica run: lockstep run --replicas 3 IMAGE -- sh -c 'sort | uniq -c | sort -rn | head -3; date; head -c 8 /dev/urandom | od -An -tx1'"
seq 1 20000 | awk '{print $1 % 7}' |
	lockstep run "${run[@]}" --replicas 3 --json $img -- /bin/busybox sh -c 'sort | uniq -c | sort -rn | head -3; date; head -c 8 /dev/urandom | od -An -tx1' \
	2>"$work/verdict.json" || { cat "$work/verdict.json"; exit 1; }
# The verdict is the JSON object at the end of stderr; lines before it
# (the host's warning) are shown as they are.
python3 -c 'import json,sys; t=open(sys.argv[1]).read(); i=0 if t.startswith("{") else t.index("\n{")+1; print(t[:i].strip()) if i else None; v=json.loads(t[i:]); print("verdict:", v["detail"]); print("logd:   ", v["log_verdict"]["detail"]); [print("  %s on %s: %s, %d bytes, digest %s" % (r["name"], r["provider"], r["state"], r["bytes"], r["digest"][:16])) for r in v["replicas"]]' "$work/verdict.json"

step "a two-stage pipe: seq | lockstep pipe IMAGE -- gzip | lockstep pipe IMAGE -- gzip -d | tail -2"
seq 1 300000 | lockstep pipe "${run[@]}" $img -- /bin/busybox gzip -c | lockstep pipe "${run[@]}" $img -- /bin/busybox gzip -dc | tail -2

step "a cheating provider: one replica with another seed is named"
if ! lockstep doctor >/dev/null; then
	echo "(this host cannot make every source deterministic, so a difference may be the host's: the verdict"
	echo " says so and names no provider, exit 4; on a host where lockstep doctor exits 0 the cheater is named)"
fi
lockstep-logd --listen 127.0.0.1:7440 --data-dir "$work/logd" --client-url http://127.0.0.1:23790 --peer-url http://127.0.0.1:23800 2>"$work/logd.log" &
pids=($!)
# Every party is an ed25519 key: the providers take jobs from the
# requestor's key only, and the requestor pins each provider's.
me=$(lockstep id --key "$work/requestor.key")
for p in honest:7442 cheater:7441; do
	extra=(); [ "${p%%:*}" = cheater ] && extra=(--annotation io.lockstep.seed=99)
	lockstep provider --listen "127.0.0.1:${p#*:}" --logd 127.0.0.1:7440 --key "$work/${p%%:*}.key" --name "${p%%:*}" \
		--trust "$me" --address "$work/containerd/containerd.sock" "${extra[@]}" 2>>"$work/providers.log" &
	pids+=($!)
done
for port in 7440 7441 7442; do
	for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
done
honest=$(lockstep id --key "$work/honest.key")@127.0.0.1:7442
cheater=$(lockstep id --key "$work/cheater.key")@127.0.0.1:7441
lockstep run --logd 127.0.0.1:7440 --key "$work/requestor.key" --provider "$honest" --provider "$honest" --provider "$cheater" \
	$img -- /bin/busybox sh -c 'head -c 8 /dev/urandom | od -An -tx1' </dev/null || echo "(exit status $?)"
kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true

step "a replicated service: lockstep serve --replicas 3 --listen 127.0.0.1:7480 --port 8080 IMAGE -- /kv (a Go JSON key-value store)"
lockstep serve "${run[@]}" --listen 127.0.0.1:7480 --port 8080 --record "$work/served.log" $img -- /kv 2>"$work/serve.log" &
served=$!
for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:7480/ && break; sleep 0.2; [ $i -lt 100 ] || { cat "$work/serve.log"; exit 1; }; done
for i in 1 2 3; do curl -sf -X PUT -d "value $i" http://127.0.0.1:7480/k/demo; done
curl -sf http://127.0.0.1:7480/
kill -INT $served; wait $served || { cat "$work/serve.log"; exit 1; }
grep -v warning "$work/serve.log" | grep "lockstep serve" || true
echo "a fourth copy, from the recorded log (which names the image and command): lockstep replay served.log"
lockstep replay "${run[@]}" "$work/served.log" 2>&1 | grep "lockstep replay:" | grep -v warning

step "named services through a hub: echo hello | lockstep pipe upper | lockstep pipe rev; seq 1 8 | lockstep parallel square -j 2"
lockstep hub --key "$work/hub.key" --listen 127.0.0.1:7450 --status 127.0.0.1:7451 --data-dir "$work/hub" >"$work/hub.addr" 2>"$work/hub.log" &
pids=($!)
for _ in $(seq 100); do [ -s "$work/hub.addr" ] && break; sleep 0.1; done
[ -s "$work/hub.addr" ] || { cat "$work/hub.log"; exit 1; }
export LOCKSTEP_HUB=$(cat "$work/hub.addr") LOCKSTEP_KEY="$work/requestor.key"
echo "the hub is $LOCKSTEP_HUB (its key's ID @ its address)"
for p in 1 2 3; do
	lockstep provider --hub "$LOCKSTEP_HUB" --key "$work/p$p.key" --name "provider-$p" --listen "127.0.0.1:745$((p + 1))" \
		--address "$work/containerd/containerd.sock" 2>>"$work/providers.log" &
	pids+=($!)
done
for port in 7452 7453 7454; do
	for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
done
lockstep register "${run[@]}" --key "$work/owner.key" upper $img -- /bin/busybox tr a-z A-Z
lockstep register "${run[@]}" --key "$work/owner.key" rev $img -- /bin/busybox rev
lockstep register "${run[@]}" --key "$work/owner.key" square $img -- /bin/busybox sh -c 'echo $(($1*$1))' sh
lockstep services
echo hello | lockstep pipe upper 2>/dev/null | lockstep pipe rev 2>/dev/null
seq 1 8 | lockstep parallel square -j 2 2>/dev/null | tr '\n' ' '; echo
echo "the hub's status page: http://127.0.0.1:7451/ (while it runs)"
kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true
unset LOCKSTEP_HUB LOCKSTEP_KEY

step "the determinism core: lockstep exec, twice, a second apart"
for i in 1 2; do lockstep exec -- /bin/busybox sh -c 'date; head -c 8 /dev/urandom | od -An -tx1; echo pid $$'; sleep 1; done
