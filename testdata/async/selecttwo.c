// selecttwo: two children each compute, then write to their own pipe;
// the parent selects over both pipes and prints which was ready first,
// round after round (child A computes a little less than child B).
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

static void work(int n) {
	volatile double x = 1;
	for (int i = 0; i < n; i++)
		x = x * 1.000001 + 1e-9;
}

int main(void) {
	for (int round = 0; round < 8; round++) {
		int a[2], b[2];
		if (pipe(a) != 0 || pipe(b) != 0)
			return 1;
		if (fork() == 0) {
			work(200000);
			(void)!write(a[1], "A", 1);
			_exit(0);
		}
		if (fork() == 0) {
			work(220000);
			(void)!write(b[1], "B", 1);
			_exit(0);
		}
		fd_set r;
		FD_ZERO(&r);
		FD_SET(a[0], &r);
		FD_SET(b[0], &r);
		int n = select(b[0] + 1, &r, NULL, NULL, NULL);
		printf("round %d: %d ready:%s%s\n", round, n, FD_ISSET(a[0], &r) ? " A" : "", FD_ISSET(b[0], &r) ? " B" : "");
		fflush(stdout);
		while (wait(NULL) > 0)
			;
		close(a[0]), close(a[1]), close(b[0]), close(b[1]);
	}
	return 0;
}
