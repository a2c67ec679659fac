// Package hostcap measures what this host can make deterministic, never
// assuming it from the CPU's name or flags: whether rdtsc traps after
// PR_SET_TSC, whether cpuid can fault, whether the kernel has IA32 and x32
// emulation, and (for lockstep doctor) every kernel interface the runtime
// depends on: seccomp user notification and ADDFD, ptrace, the vDSO, BPF,
// cgroup v2, namespaces, runc and containerd.
//
// Instruction probes run as tiny static programs built here in memory
// (elf.go), so that no language runtime executes an instruction of its
// own between the set-up and the instruction under test.
//
// The runtime uses Leaks: the sources a run on this host cannot make
// deterministic, which every entry point reports once and records in its
// digest reports, and which --require turns into a refusal.
package hostcap
