// Package shim is the containerd runtime shim io.containerd.lockstep.v1:
// runc's task service (containerd v1.7 runtime v2 libraries) with Create,
// Exec and Delete wrapped so that every container runs deterministically.
//
// Create rewrites the bundle's config.json (RewriteSpec): the determinism
// seccomp profile with runc's listenerPath, a fixed hostname, PID, UTS,
// IPC and mount namespaces, and the exec helper lockstep-shim-exec
// bind-mounted at /.lockstep/exec in front of the command. It then starts
// the container's agent process, which serves every seccomp listener runc
// sends (init and each exec) and traces every process the helper hands
// over, all from one virtual world. If the agent dies, the container is
// killed. Delete stops the agent and removes its directory. See
// docs/shim.md.
package shim
