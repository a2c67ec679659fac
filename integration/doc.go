// Package integration tests the Lockstep runtime against real containerd
// and runc: it builds the shim, its exec helper and the probe images,
// starts two private containerd instances (own root, state dir and socket:
// two providers), imports the images and runs containers through the
// containerd client. It runs with LOCKSTEP_INTEGRATION=1 as root (`make
// integration`); otherwise it is skipped.
package integration
