// Package agent is Lockstep's seccomp user-notification agent.
//
// An Agent reads notifications from one listener fd (from `lockstep exec`'s
// own filter, or sent by runc over the listenerPath socket) and answers each
// from a virt.World through a registry of handlers keyed by syscall number.
// A handler reads the caller's memory with process_vm_readv, re-checks the
// notification with SECCOMP_IOCTL_NOTIF_ID_VALID before any side effect,
// writes its answer with process_vm_writev, and installs answers that are
// file descriptors with SECCOMP_IOCTL_NOTIF_ADDFD.
//
// It fails closed: a handler that cannot answer deterministically returns an
// errno (never a real value), and an internal failure (a replay mismatch, an
// unknown syscall) stops the agent with an error so that its owner kills the
// process tree.
package agent
