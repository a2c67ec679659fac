// stoprt: the floor under a wake-up hold (hack/bench-order.sh). A traced
// child stops itself with SIGSTOP, over and over; its tracer waits for each
// stop and resumes it. Prints the mean round trip in ns: what one ptrace
// stop and resume costs on this machine, with the tracer and the tracee on
// whichever CPUs the scheduler picks.
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(void)
{
	const int n = 20000;
	pid_t c = fork();
	if (c == 0) {
		ptrace(PTRACE_TRACEME, 0, 0, 0);
		raise(SIGSTOP);
		for (int i = 0; i < n; i++)
			syscall(SYS_tgkill, getpid(), getpid(), SIGSTOP);
		_exit(0);
	}
	int st, k = 0;
	waitpid(c, &st, 0);
	ptrace(PTRACE_CONT, c, 0, 0);
	long long t0 = now();
	while (waitpid(c, &st, __WALL) > 0 && !WIFEXITED(st)) {
		k++;
		ptrace(PTRACE_CONT, c, 0, 0); // the SIGSTOP suppressed
	}
	printf("%lld\n", k ? (now() - t0) / k : 0);
	return 0;
}
