// forkwrite: a parent and the child it forked both write to one pipe (the
// program's stdout) after a wake-up: the child waits for the parent's
// "go" on another pipe, then each writes five lines, computing a little
// between them. Natively the lines interleave in the host's order.
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void work(void) {
	volatile double x = 1;
	for (int i = 0; i < 30000; i++)
		x = x * 1.000001 + 1e-9;
}

static void say(const char *who) {
	char line[64];
	for (int i = 0; i < 5; i++) {
		work();
		int n = snprintf(line, sizeof line, "%s %d\n", who, i);
		if (write(1, line, n) != n)
			_exit(1);
	}
}

int main(void) {
	int go[2];
	if (pipe(go) != 0)
		return 1;
	pid_t child = fork();
	if (child == 0) {
		char c;
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		say("child");
		_exit(0);
	}
	if (write(go[1], "g", 1) != 1)
		return 1;
	say("parent");
	waitpid(child, NULL, 0);
	return 0;
}
