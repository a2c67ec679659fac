#define _GNU_SOURCE
/* tickecho [N [MODE]]: prints a line every second (at most N, default 10)
 * and echoes each line of stdin with the time it read it, and ends the
 * program at stdin's end. Every line carries CLOCK_REALTIME in ms: under
 * Lockstep the interleaving and the times follow the input log, the same
 * on every replica and replay. How it waits for the next second (MODE):
 *   sleep  a ticker thread sleeps a second (clock_nanosleep), the default
 *   cond   a ticker thread waits on a condition variable nobody signals
 *          until an absolute CLOCK_REALTIME deadline (a futex)
 *   ppoll  one thread waits for stdin with a timeout to the next second */
#include <poll.h>
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

static void *cond_ticker(void *arg)
{
	long n = (long)arg;
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t never = PTHREAD_COND_INITIALIZER;
	struct timespec at;
	clock_gettime(CLOCK_REALTIME, &at);
	pthread_mutex_lock(&mu);
	for (long i = 0; i < n; i++) {
		at.tv_sec++;
		while (pthread_cond_timedwait(&never, &mu, &at) == 0)
			;
		char num[32];
		snprintf(num, sizeof num, "%ld", i);
		say("tick ", num);
	}
	return NULL;
}

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

/* ppoll_loop reads stdin and ticks in one thread. */
static int ppoll_loop(long n)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long long next = ns(now) + 1000000000LL;
	long i = 0;
	char buf[4096];
	size_t have = 0;
	for (;;) {
		struct pollfd p = {0, POLLIN, 0};
		struct timespec left, *tp = NULL;
		if (i < n) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			long long d = next - ns(now);
			if (d < 0)
				d = 0;
			left.tv_sec = d / 1000000000LL;
			left.tv_nsec = d % 1000000000LL;
			tp = &left;
		}
		int r = ppoll(&p, 1, tp, NULL);
		if (r < 0)
			return 1;
		if (r == 0) {
			char num[32];
			snprintf(num, sizeof num, "%ld", i++);
			say("tick ", num);
			next += 1000000000LL;
			continue;
		}
		ssize_t got = read(0, buf + have, sizeof buf - 1 - have);
		if (got <= 0)
			break;
		have += got;
		char *nl;
		while ((nl = memchr(buf, '\n', have))) {
			*nl = 0;
			say("echo ", buf);
			have -= nl + 1 - buf;
			memmove(buf, nl + 1, have);
		}
	}
	say("eof", "");
	return 0;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10;
	const char *mode = argc > 2 ? argv[2] : "sleep";
	pthread_t t;
	say("start", "");
	if (!strcmp(mode, "ppoll"))
		return ppoll_loop(n);
	pthread_create(&t, NULL, strcmp(mode, "cond") ? ticker : cond_ticker, (void *)n);
	char buf[256];
	while (fgets(buf, sizeof buf, stdin)) {
		buf[strcspn(buf, "\n")] = 0;
		say("echo ", buf);
	}
	say("eof", "");
	return 0;
}
