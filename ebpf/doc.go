// Package ebpf traces the I/O of one PID namespace (a `lockstep exec` run
// or a container) with BPF programs on the sys_enter and sys_exit raw
// tracepoints: the bytes written and read by write, writev, pwrite,
// sendto, sendmsg, read, readv, recvfrom, recvmsg and their variants reach
// user space through a ring buffer; sendfile, splice, tee, vmsplice and
// copy_file_range are counted. A writer faster than the consumer is held
// by lockstep's ptrace tracer while the consumer catches up (Record.Throttle),
// so no event is lost. Chains hashes the output of each stream
// into a digest chain with a checkpoint every K bytes, so that replicas
// can be compared and the first differing checkpoint found (Diff). See
// docs/ebpf.md.
package ebpf
