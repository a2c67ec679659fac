// addfd: installs a filter that notifies getppid, prints the listener's fd
// number, waits for a byte on stdin, then calls getppid argv[1] times.
// The agent answers each call with a new fd (ADDFD with SEND); this
// program counts the answers that are not an open fd above stderr, and
// prints that count.
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 1000;
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {sizeof f / sizeof f[0], f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		perror("no_new_privs");
		return 2;
	}
	int fd = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
	if (fd < 0) {
		perror("seccomp");
		return 2;
	}
	printf("%d\n", fd);
	fflush(stdout);
	char c;
	if (read(0, &c, 1) != 1)
		return 2;
	int bad = 0;
	for (int i = 0; i < n; i++) {
		long r = syscall(__NR_getppid);
		if (r <= 2 || fcntl(r, F_GETFD) < 0)
			bad++;
		else
			close(r);
	}
	printf("%d\n", bad);
	return 0;
}
