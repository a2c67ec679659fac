#!/usr/bin/env bash
# Demo of the determinism core: the same program, run natively twice and
# under `lockstep exec` twice, a second apart.
set -euo pipefail
cd "$(dirname "$0")/.."
probes=$(mktemp -d)
trap 'rm -rf "$probes"' EXIT
testdata/probes/build.sh "$probes" >/dev/null
show() { "$@" "$probes/probe-dynamic" /tmp/lockstep-demo-dir | grep -E '^(realtime|getrandom|urandom|aslr|uname|cpuinfo|pid|getdents)' | cut -c1-100; rm -rf /tmp/lockstep-demo-dir; }
echo "== native, twice"; show env > "$probes/n1"; sleep 1; show env > "$probes/n2"
diff -u "$probes/n1" "$probes/n2" || true
echo; echo "== lockstep exec, twice"; show bin/lockstep exec -- > "$probes/l1"; sleep 1; show bin/lockstep exec -- > "$probes/l2"
cat "$probes/l1"
cmp -s "$probes/l1" "$probes/l2" && echo "-> identical" || { echo "-> DIFFER"; diff "$probes/l1" "$probes/l2"; exit 1; }
echo; echo "== lockstep exec --verify (a Go program)"
bin/lockstep exec --verify -- "$probes/goprobe" /tmp/lockstep-demo-go | head -3; rm -rf /tmp/lockstep-demo-go
