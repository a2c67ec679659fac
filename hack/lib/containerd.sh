# Sourced by hack/ scripts: a private containerd (own root, state dir and
# socket) with this checkout's bin/ on its PATH, so that the runtime type
# io.containerd.lockstep.v1 finds bin/containerd-shim-lockstep-v1.
#
#   containerd_start DIR   starts it; sets CTR (a ctr command for it)
#   containerd_stop DIR    stops it

containerd_start() {
	local dir=$1 bin
	bin=${LOCKSTEP_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../bin" && pwd)}
	mkdir -p "$dir"
	cat >"$dir/config.toml" <<CONF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
CONF
	PATH="$bin:$PATH" setsid containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
	echo $! >"$dir/containerd.pid"
	CTR="ctr -a $dir/containerd.sock -n lockstep"
	for _ in $(seq 100); do
		$CTR version >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "containerd did not start; see $dir/containerd.log" >&2
	return 1
}

containerd_stop() {
	local dir=$1
	[ -f "$dir/containerd.pid" ] || return 0
	kill "$(cat "$dir/containerd.pid")" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null || break
		sleep 0.1
	done
	rm -f "$dir/containerd.pid"
}
