#!/bin/sh
# Builds the probes into $1 (default testdata/probes/build): probe-static
# and probe-dynamic (C), goprobe (static Go).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/build}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cc=${CC:-gcc}
$cc -O1 -Wall -static -o "$out/probe-static" "$here/probe.c"
$cc -O1 -Wall -o "$out/probe-dynamic" "$here/probe.c"
$cc -O1 -Wall -o "$out/writer" "$here/writer.c"
$cc -O1 -Wall -pthread -o "$out/threads" "$here/threads.c"
$cc -O1 -Wall -o "$out/clocks" "$here/clocks.c"
$cc -O1 -Wall -o "$out/getrandom" "$here/getrandom.c"
$cc -O1 -Wall -o "$out/emulated" "$here/emulated.c"
$cc -O1 -Wall -o "$out/sysserve" "$here/sysserve.c"
$cc -O1 -Wall -static -pthread -o "$out/tickecho" "$here/tickecho.c"
# Asynchronous signals and processes racing (testdata/async): static, for
# the probe image too.
for p in timercount alarmloop killcompute busyalarm forkwrite selecttwo; do
	$cc -O1 -Wall -static -o "$out/$p" "$here/../async/$p.c"
done
(cd "$here/goprobe" && CGO_ENABLED=0 go build -o "$out/goprobe" .)
(cd "$here/goservice" && CGO_ENABLED=0 go build -o "$out/goservice" .)
(cd "$here/kv" && CGO_ENABLED=0 go build -o "$out/kv" .)
cp "$here/busybox.sh" "$out/busybox.sh"
