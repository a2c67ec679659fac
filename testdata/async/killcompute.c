// killcompute: a parent signals its child three times (SIGUSR1, 40 ms of
// its own time apart) while the child computes in rounds of about a
// millisecond of work and a 1 ms sleep; the child prints the round each
// signal landed in. Natively that follows the host's speed.
// usage: killcompute [SLEEP_US [GAP_US]]   (default 1000 40000)
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t got;
static volatile long round_;
static long at[3];
static void on(int sig) {
	(void)sig;
	if (got < 3)
		at[got] = round_;
	got++;
}

int main(int argc, char **argv) {
	int nap = argc > 1 ? atoi(argv[1]) : 1000, gap = argc > 2 ? atoi(argv[2]) : 40000;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	pid_t child = fork();
	if (child == 0) {
		volatile double x = 1;
		while (got < 3) {
			for (int i = 0; i < 20000; i++)
				x = x * 1.000001 + 1e-9;
			usleep(nap);
			round_++;
		}
		printf("child: signals in rounds %ld %ld %ld\n", at[0], at[1], at[2]);
		return 0;
	}
	for (int i = 0; i < 3; i++) {
		usleep(gap);
		kill(child, SIGUSR1);
	}
	int status;
	waitpid(child, &status, 0);
	printf("parent: child exited %d\n", WEXITSTATUS(status));
	return 0;
}
