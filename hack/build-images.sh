#!/usr/bin/env bash
# Builds OCI image archives locally (no registry) and, with --import
# ADDRESS, imports them into the containerd at that socket:
#   lockstep.test/probes:1   the C (static, dynamic) and Go probes, busybox
#   lockstep.test/python:1   Debian's /usr/bin/python3 with its standard library and
#                            testdata/python at /srv (with --python; the
#                            integration tests build their own)
#   lockstep.test/debian:12  a Debian 12 minbase rootfs from debootstrap
#                            (with --debian; needs deb.debian.org, ~200 MB)
# (namespace $CONTAINERD_NAMESPACE, default lockstep: lockstep run's).
# usage: sudo hack/build-images.sh [--python] [--debian] [--out DIR] [--import ADDRESS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/images debian=no python=no address=
while [ $# -gt 0 ]; do
	case $1 in
	--debian) debian=yes ;;
	--python) python=yes ;;
	--out) out=$2; shift ;;
	--import) address=$2; shift ;;
	-h|--help) sed -n '2,11p' "$0"; exit 0 ;;
	*) echo "build-images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
mkdir -p "$out"
make -s build >/dev/null
testdata/probes/build.sh "$out/probes"
bin/mkimage -o "$out/probes.tar" -n lockstep.test/probes:1 \
	--bin "$out/probes/probe-static:/probe-static" --bin "$out/probes/probe-dynamic:/probe-dynamic" \
	--bin "$out/probes/goprobe:/goprobe" --bin "$out/probes/tickecho:/tickecho" --bin "$out/probes/kv:/kv" --bin /bin/busybox:/bin/busybox -- /probe-static
archives=("$out/probes.tar")
if [ "$python" = yes ]; then
	bin/mkimage -o "$out/python.tar" -n lockstep.test/python:1 --python /usr/bin/python3 --tree testdata/python:/srv -- /usr/bin/python3
	archives+=("$out/python.tar")
fi
if [ "$debian" = yes ]; then
	command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
	[ -x "$out/debian/bin/sh" ] || debootstrap --variant=minbase bookworm "$out/debian" http://deb.debian.org/debian >"$out/debootstrap.log"
	bin/mkimage -o "$out/debian.tar" -n lockstep.test/debian:12 --rootfs "$out/debian" -- /bin/bash
	archives+=("$out/debian.tar")
fi
for a in "${archives[@]}"; do
	echo "built $a"
	[ -z "$address" ] || ctr -a "$address" -n "${CONTAINERD_NAMESPACE:-lockstep}" image import "$a"
done
