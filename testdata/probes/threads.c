/* threads: the two points where Lockstep orders threads (docs/determinism.md,
 * "Threads and signals").
 *
 *   threads start   a new thread writes "new", then waits; its starter
 *                   writes "starter" right after pthread_create. Natively
 *                   the starter usually writes first; under Lockstep the
 *                   starter is held until the new thread waits.
 *   threads sleep   a thread sleeps 100 us at a time, counting, while the
 *                   main thread computes for about 10 ms; then main prints
 *                   the count. Natively it is in the hundreds; under
 *                   Lockstep a short sleep does not end while another
 *                   thread of the process runs, so it is 0.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile long count;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;

static void *newthread(void *arg) {
	(void)arg;
	write(1, "new\n", 4);
	pthread_mutex_lock(&mu);
	pthread_cond_wait(&cond, &mu); /* waits for good */
	return NULL;
}

static void *sleeper(void *arg) {
	(void)arg;
	struct timespec ts = {0, 100000};
	for (;;) {
		nanosleep(&ts, NULL);
		count++;
	}
	return NULL;
}

int main(int argc, char **argv) {
	pthread_t t;
	if (argc == 2 && strcmp(argv[1], "start") == 0) {
		pthread_create(&t, NULL, newthread, NULL);
		write(1, "starter\n", 8);
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "sleep") == 0) {
		pthread_create(&t, NULL, sleeper, NULL);
		/* ~10 ms of work, timed by iterations, not by a clock */
		volatile unsigned long x = 0;
		for (unsigned long i = 0; i < 10000000UL; i++)
			x += i ^ (i >> 3);
		printf("sleeps ended while main ran: %ld\n", count);
		return 0;
	}
	fprintf(stderr, "usage: threads start|sleep\n");
	return 2;
}
