/* tickecho: a ticker thread prints a line every second (at most N, the
 * first argument, default 10); the main thread echoes each line of stdin
 * with the time it read it, and ends the program at stdin's end. Every
 * line carries CLOCK_REALTIME in ms: under Lockstep the interleaving and
 * the times follow the input log, the same on every replica and replay. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void say(const char *what, const char *arg)
{
	struct timespec ts;
	char line[512];
	clock_gettime(CLOCK_REALTIME, &ts);
	int n = snprintf(line, sizeof line, "%lld.%03ld %s%s\n", (long long)ts.tv_sec,
			 ts.tv_nsec / 1000000, what, arg);
	write(1, line, n < (int)sizeof line ? n : (int)sizeof line - 1);
}

static void *ticker(void *arg)
{
	long n = (long)arg;
	for (long i = 0; i < n; i++) {
		struct timespec one = {1, 0};
		clock_nanosleep(CLOCK_MONOTONIC, 0, &one, NULL);
		char num[32];
		snprintf(num, sizeof num, "%ld", i);
		say("tick ", num);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10;
	pthread_t t;
	say("start", "");
	pthread_create(&t, NULL, ticker, (void *)n);
	char buf[256];
	while (fgets(buf, sizeof buf, stdin)) {
		buf[strcspn(buf, "\n")] = 0;
		say("echo ", buf);
	}
	say("eof", "");
	return 0;
}
