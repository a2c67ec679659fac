#!/usr/bin/env bash
# The main job, on a fresh machine: build, install (into a private prefix),
# start a private containerd with the Lockstep runtime, build the demo image
# locally and import it, then show
#   1. a verified three-replica run: stdin goes into the input log, three
#      containers read it, the output a majority agrees on is printed;
#   2. a two-stage pipe of verified services: cmd0 | lockstep pipe | lockstep pipe;
#   3. a replica given another seed (a cheating provider) named by the verdict;
#   4. lockstep exec: the determinism core, without containerd.
# usage: sudo hack/demo.sh   (make demo)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (containerd, runc and ptrace need it)" >&2; exit 1; }
for tool in containerd runc gcc busybox; do
	command -v $tool >/dev/null || { echo "demo: $tool is missing: apt-get install -y containerd runc gcc busybox-static" >&2; exit 1; }
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
logd=$!
for p in honest:7442 cheater:7441; do
	extra=(); [ "${p%%:*}" = cheater ] && extra=(--annotation io.lockstep.seed=99)
	lockstep provider --listen "127.0.0.1:${p#*:}" --logd 127.0.0.1:7440 --key "$work/${p%%:*}.key" --name "${p%%:*}" \
		--address "$work/containerd/containerd.sock" "${extra[@]}" 2>>"$work/providers.log" &
done
for port in 7440 7441 7442; do
	for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
done
lockstep run --logd 127.0.0.1:7440 --provider 127.0.0.1:7442 --provider 127.0.0.1:7442 --provider 127.0.0.1:7441 \
	$img -- /bin/busybox sh -c 'head -c 8 /dev/urandom | od -An -tx1' </dev/null || echo "(exit status $?)"
kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true

step "the determinism core: lockstep exec, twice, a second apart"
for i in 1 2; do lockstep exec -- /bin/busybox sh -c 'date; head -c 8 /dev/urandom | od -An -tx1; echo pid $$'; sleep 1; done
