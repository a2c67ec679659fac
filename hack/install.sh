#!/usr/bin/env bash
# Installs the Lockstep runtime for containerd on this machine:
#   - lockstep, containerd-shim-lockstep-v1 and lockstep-shim-exec into
#     $PREFIX/bin (default /usr/local), which must be on containerd's PATH;
#   - the CRI runtime snippet for containerd's config (printed, or appended
#     with --configure to /etc/containerd/config.toml, then restart containerd);
#   - hack/k8s/runtimeclass.yaml is the Kubernetes RuntimeClass (kubectl apply -f).
#
# usage: sudo hack/install.sh [--configure] [--prefix DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/usr/local
configure=no
while [ $# -gt 0 ]; do
	case $1 in
	--configure) configure=yes ;;
	--prefix) prefix=$2; shift ;;
	-h|--help) sed -n '2,10p' "$0"; exit 0 ;;
	*) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
make build
make install PREFIX="$prefix"

snippet='
# Lockstep: deterministic containers (runtime type io.containerd.lockstep.v1).
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.lockstep]
  runtime_type = "io.containerd.lockstep.v1"
  # CRI passes only the annotations listed here into the OCI spec.
  pod_annotations = ["io.lockstep.*"]
  container_annotations = ["io.lockstep.*"]
  # Optional per-runtime settings (seed, epoch, cpus, memory, hostname, log):
  # options = { ConfigPath = "/etc/lockstep/runtime.toml" }
'
if [ "$configure" = yes ]; then
	conf=/etc/containerd/config.toml
	if grep -q 'runtimes.lockstep]' "$conf" 2>/dev/null; then
		echo "install.sh: $conf already has the lockstep runtime"
	else
		mkdir -p /etc/containerd
		[ -s "$conf" ] || containerd config default >"$conf"
		printf '%s' "$snippet" >>"$conf"
		echo "install.sh: added the lockstep runtime to $conf; restart containerd"
	fi
else
	echo "For CRI (Kubernetes), add to /etc/containerd/config.toml (or rerun with --configure):"
	printf '%s\n' "$snippet"
fi
echo "Installed. Try: ctr run --rm --runtime io.containerd.lockstep.v1 IMAGE ID CMD"
echo "Kubernetes: kubectl apply -f hack/k8s/runtimeclass.yaml, then runtimeClassName: lockstep"
