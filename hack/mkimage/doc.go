// Command mkimage writes an OCI image archive for `ctr image import` from
// files on this machine (wiring for package ociimage):
//
//	mkimage -o probe.tar -n lockstep.test/probe:1 --bin ./probe-dynamic:/probe -- /probe
//	mkimage -o debian.tar -n lockstep.test/debian:12 --rootfs /srv/debian-rootfs -- /bin/sh
package main
