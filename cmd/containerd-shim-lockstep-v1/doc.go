// Command containerd-shim-lockstep-v1 is wiring only: the shim itself is
// package shim. containerd starts it for containers of the runtime type
// io.containerd.lockstep.v1; it also runs each container's agent process.
package main
