/*
 * lockstep-shim-exec: the first program of every process the Lockstep shim
 * starts in a container (init and each exec). runc has installed the
 * determinism filter already; this program
 *
 *   1. turns ASLR off for itself and what it execs (personality),
 *   2. connects to the container's agent at /.lockstep/agent.sock and
 *      waits until the agent's tracer has seized it ('G'); the init may
 *      get its stdio with it (the client's FIFOs, which the shim opened
 *      instead of copying through pipes), and puts it on fds 0-2,
 *   3. makes rdtsc trap (the tracer now emulates it),
 *   4. execs the container's command, which the tracer sees at its exec
 *      stop (vDSO patched, AT_RANDOM rewritten, clocks started).
 *
 * It is static C, not Go, because until the tracer has seized it the
 * filter's traced syscalls (stat, futex with a timeout, ...) fail with
 * ENOSYS: it makes only the few syscalls below. See docs/shim.md.
 *
 * usage: lockstep-shim-exec CMD [ARGS...]
 *
 * The agent also runs it on the host, in the container's PID namespace, as
 * `lockstep-shim-exec --set-last-pid N`: it writes N to ns_last_pid, so that
 * the command's first child is N+1 however many threads runc's init made.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define AGENT_SOCKET "/.lockstep/agent.sock"

/* Exit statuses when the command cannot start, as shells use them. */
enum { EXIT_RUNTIME = 125, EXIT_CANNOT_RUN = 126, EXIT_NOT_FOUND = 127 };

static int fail(int code, const char *what, int err)
{
	fprintf(stderr, "lockstep: %s: %s\n", what, strerror(err));
	return code;
}

/* setLastPID writes pid to this process's PID namespace's ns_last_pid. */
static int setLastPID(const char *pid)
{
	FILE *f = fopen("/proc/sys/kernel/ns_last_pid", "w");
	if (!f || fputs(pid, f) < 0 || fclose(f) != 0)
		return fail(EXIT_RUNTIME, "write ns_last_pid", errno);
	return 0;
}

/*
 * takeStdio puts the fds that came with the go-ahead on the standard fds
 * whose bits are set in mask (bit i: fd i), in order. They arrived close-
 * on-exec; the copies on 0-2 are not.
 */
static int takeStdio(struct msghdr *mh, unsigned char mask)
{
	struct cmsghdr *c = CMSG_FIRSTHDR(mh);
	if ((mh->msg_flags & MSG_CTRUNC) || !c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
		errno = EBADMSG;
		return -1;
	}
	int *fds = (int *)CMSG_DATA(c);
	size_t got = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int), k = 0;
	for (int i = 0; i < 3; i++) {
		if (!(mask & (1 << i)))
			continue;
		if (k == got) {
			errno = EBADMSG;
			return -1;
		}
		if (dup2(fds[k++], i) < 0)
			return -1;
	}
	for (size_t j = 0; j < got; j++)
		close(fds[j]);
	return k == got ? 0 : (errno = EBADMSG, -1);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--set-last-pid") == 0)
		return setLastPID(argv[2]);
	if (argc < 2) {
		fprintf(stderr, "usage: %s CMD [ARGS...]\n", argv[0]);
		return EXIT_RUNTIME;
	}
	int cur = personality(0xffffffff);
	if (cur == -1 || personality(cur | ADDR_NO_RANDOMIZE) == -1)
		return fail(EXIT_RUNTIME, "turn ASLR off", errno);

	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return fail(EXIT_RUNTIME, "agent socket", errno);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strncpy(sa.sun_path, AGENT_SOCKET, sizeof(sa.sun_path) - 1);
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return fail(EXIT_RUNTIME, "connect to the lockstep agent " AGENT_SOCKET, errno);
	char b[2] = { 'P' };
	if (write(s, b, 1) != 1)
		return fail(EXIT_RUNTIME, "handshake with the lockstep agent", errno);
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(3 * sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = b, .iov_len = sizeof(b) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
	ssize_t n;
	do
		n = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 1 || b[0] != 'G') {
		fprintf(stderr, "lockstep: the agent did not seize %s; not starting it\n", argv[1]);
		return EXIT_RUNTIME;
	}
	if (n == 2 && takeStdio(&mh, (unsigned char)b[1]) < 0)
		return fail(EXIT_RUNTIME, "take the stdio the lockstep agent sent", errno);
	close(s);
	if (prctl(PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0) < 0)
		return fail(EXIT_RUNTIME, "make rdtsc trap", errno);

	execvp(argv[1], argv + 1);
	int err = errno;
	fprintf(stderr, "lockstep: exec %s: %s\n", argv[1], strerror(err));
	return err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN;
}
