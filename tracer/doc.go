// Package tracer is Lockstep's exec tracer: a ptrace tracer that attaches
// with PTRACE_SEIZE and stops a tracee only where determinism needs it.
//
//   - At every execve (PTRACE_EVENT_EXEC) it maps the process's clock page
//     into it (a memfd made there by syscalls the tracer runs in the
//     tracee: syscallIn) and replaces the vDSO's clock_gettime,
//     gettimeofday and time with code that reads the page (clockcode.go),
//     and its getcpu, clock_getres and getrandom with real syscalls (which
//     the seccomp filter sends to the agent); it rewrites the 16 AT_RANDOM
//     bytes from the seed, and re-arms CPUID faulting where the CPU has it.
//     A forked child gets a page of its own before it first runs.
//   - At a SIGSEGV raised by rdtsc, rdtscp or a faulting cpuid, it emulates
//     the instruction from virtual time and a fixed CPU description.
//   - At a seccomp trace stop (SECCOMP_RET_TRACE) it lets the syscall run and
//     fixes the result up at syscall exit: inode and device numbers and file
//     times of stat results, filesystem sizes, rusage; a timeout that expired
//     advances the virtual clock to its deadline.
//   - At a SIGSTOP the eBPF I/O tracer sent a writer when its ring buffer
//     was past half full (Throttle), it holds the thread until the I/O
//     tracer's consumer has caught up, and resumes it without the signal.
//
// Everything else (computation, untrapped syscalls, clones) runs at native
// speed. Tracees are seized with PTRACE_O_EXITKILL: if the tracer dies,
// they die with it.
package tracer
