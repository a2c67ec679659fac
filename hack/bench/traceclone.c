// traceclone: runs a command under a bare ptrace tracer with the options
// Lockstep's tracer sets (clone, fork, exec and seccomp events), which
// resumes every stop at once: the floor of what following a program's
// threads with ptrace costs (hack/bench-time.sh).
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2) {
		fprintf(stderr, "usage: traceclone CMD [ARGS...]\n");
		return 2;
	}
	pid_t child = fork();
	if (child < 0) {
		perror("fork");
		return 1;
	}
	if (child == 0) {
		raise(SIGSTOP);
		execvp(argv[1], argv + 1);
		perror(argv[1]);
		_exit(127);
	}
	int st;
	if (waitpid(child, &st, WSTOPPED) < 0) {
		perror("waitpid");
		return 1;
	}
	long opts = PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXEC | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK |
		    PTRACE_O_TRACEVFORK | PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL;
	if (ptrace(PTRACE_SEIZE, child, 0, opts) < 0) {
		perror("PTRACE_SEIZE");
		return 1;
	}
	kill(child, SIGCONT);
	int code = 0;
	for (;;) {
		pid_t pid = waitpid(-1, &st, __WALL);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			break; // no tracee left
		}
		if (WIFEXITED(st) || WIFSIGNALED(st)) {
			if (pid == child)
				code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			continue;
		}
		int sig = WSTOPSIG(st);
		// Event stops and the new threads' first stops resume with no
		// signal; a signal-delivery stop passes its signal on.
		if (st >> 16 || sig == SIGTRAP || sig == (SIGTRAP | 0x80) || sig == SIGSTOP)
			sig = 0;
		ptrace(PTRACE_CONT, pid, 0, sig);
	}
	return code;
}
