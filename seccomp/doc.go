// Package seccomp holds Lockstep's determinism profile and the kernel
// interfaces around it.
//
// The profile is one table of rules (Rules). It is compiled two ways: to a
// classic BPF program that `lockstep exec` installs in its child with
// SECCOMP_FILTER_FLAG_NEW_LISTENER (Compile), and to an OCI LinuxSeccomp
// that runc installs for containers (OCI). Each rule sends a syscall to one
// of four places:
//
//   - Notify: the user-notification agent (package seccomp/agent) answers it
//     from the deterministic world (clocks, entropy, host identity).
//   - Trace: the exec tracer (package tracer) sees it at a ptrace seccomp
//     stop and fixes its result up at syscall exit (stat inodes and times,
//     timeouts that advance the virtual clock).
//   - Errno: denied with a fixed error (io_uring, AIO, perf_event_open, ...).
//   - Allow: everything else runs natively.
//
// Syscalls from any architecture other than x86_64, and x32 syscalls, are
// denied with ENOSYS so they cannot bypass the table.
package seccomp
