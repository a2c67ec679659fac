#!/usr/bin/env bash
# Every command against every fault it can meet: a bad flag, a missing
# argument, a bad value, a missing image, no containerd, SIGINT mid-run, a
# replay of another command and an edited log. Prints a Markdown table of
# the exit status and the first line lockstep says (host warnings left
# out). Needs a containerd with the Lockstep runtime and the probe image:
#   hack/errors-table.sh SOCKET
set -u
sock=${1:?usage: hack/errors-table.sh CONTAINERD-SOCKET}
cd "$(dirname "$0")/.."
ls=$PWD/bin/lockstep
img=lockstep.test/probes:1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
c=(--address "$sock")

say() { # the first line that is not a host warning, shortened
	grep -v -e 'warning: this host cannot' -e '^lockstep serve: .* on 127' "$1" | head -1 | cut -c1-150 | sed 's/|/\\|/g'
}
row() { # row COMMAND FAULT ARGS... (stdin empty)
	local cmd=$1 fault=$2; shift 2
	timeout 120 "$ls" "$@" </dev/null >"$work/out" 2>"$work/err"
	printf '| %s | %s | %s | %s |\n' "$cmd" "$fault" "$?" "$(say "$work/err")"
}
interrupt() { # interrupt COMMAND ARGS...: SIGINT after 3 s
	local cmd=$1; shift
	"$ls" "$@" </dev/null >"$work/out" 2>"$work/err" &
	local pid=$!
	sleep 3
	kill -INT $pid
	wait $pid
	printf '| %s | SIGINT mid-run | %s | %s |\n' "$cmd" "$?" "$(say "$work/err")"
}

echo "| command | fault | exit | message |"
echo "|---|---|---|---|"
# exec
row exec "bad flag" exec --bogus -- true
row exec "missing argument" exec
row exec "bad value" exec --seed abc -- true
row exec "missing binary" exec -- /nonexistent
"$ls" exec --log "$work/x.log" -- date >/dev/null 2>&1
row exec "replay of another command" exec --log "$work/x.log" -- date +%s
sed 's/"epoch":"[^"]*"/"epoch":"1970-01-01T00:00:00Z"/' "$work/x.log" >"$work/edited.log"
row exec "edited log" exec --log "$work/edited.log" -- date
interrupt exec exec -- sleep 30
# run and pipe
for cmd in run pipe; do
	row $cmd "bad flag" $cmd --bogus $img
	row $cmd "missing argument" $cmd
	row $cmd "bad value" $cmd --replicas 0 $img
	row $cmd "missing image" $cmd "${c[@]}" nosuch/image:1
	row $cmd "no containerd" $cmd --address "$work/none.sock" $img
	interrupt $cmd $cmd "${c[@]}" $img -- /bin/busybox sleep 30
done
# serve
s=(serve --listen 127.0.0.1:0 --port 8080)
row serve "bad flag" serve --bogus
row serve "missing argument" serve --port 8080 $img
row serve "bad value" "${s[@]/8080/0}" $img
row serve "missing image" "${s[@]}" "${c[@]}" nosuch/image:1
row serve "no containerd" "${s[@]}" --address "$work/none.sock" $img
interrupt serve "${s[@]}" "${c[@]}" $img -- /kv
# replay
busy=(/bin/busybox sh -c 'cat; i=0; while [ $i -lt 6000000 ]; do i=$((i+1)); done; echo $i')
echo hello | "$ls" run "${c[@]}" --replicas 1 --record "$work/run.log" $img -- "${busy[@]}" >/dev/null 2>&1
row replay "bad flag" replay --bogus "$work/run.log"
row replay "missing argument" replay
row replay "bad value" replay --require nope "$work/run.log"
row replay "missing image" replay "${c[@]}" --namespace lockstep-empty "$work/run.log"
row replay "no containerd" replay --address "$work/none.sock" "$work/run.log"
row replay "replay of another command" replay "${c[@]}" "$work/run.log" $img -- /bin/busybox cat
sed '2s/AAAA"}$/AAAB"}/' "$work/run.log" >"$work/edited-run.log" # the seed
cmp -s "$work/run.log" "$work/edited-run.log" && { echo "errors-table: the edit of the seed entry changed nothing" >&2; exit 1; }
cp "$work/run.log.digests" "$work/edited-run.log.digests"
row replay "edited log" replay "${c[@]}" "$work/edited-run.log"
interrupt replay replay "${c[@]}" "$work/run.log"
# provider, log, diff, doctor
row provider "bad flag" provider --bogus
row provider "missing argument" provider
row provider "bad value" provider --logd 127.0.0.1:1 --key "$work/nodir/key"
row log "bad flag" log cat --bogus s
row log "missing argument" log cat --key "$work/k"
row log "bad value" log cat --key "$work/nosuch.key" s
row log "edited log" log verify "$work/edited-run.log"
row diff "bad flag" diff --bogus a b
row diff "missing argument" diff
row diff "bad value" diff "$work/nosuch.digests" "$work/run.log.digests"
row doctor "bad flag" doctor --bogus
row doctor "bad value" doctor extra
