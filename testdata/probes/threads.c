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
 *   threads flood   four threads write 64 MiB each to /dev/null, faster
 *                   than the eBPF tracer hashes them, while one thread
 *                   waits in epoll_wait and one in read, each on a pipe
 *                   written once the writers are done. What the tracer's
 *                   back-pressure must not show: a short write, an
 *                   interrupted wait (EINTR), a delivered SIGCONT.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
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

static char block[65536];
static volatile long written, short_writes;
static volatile sig_atomic_t sigconts;
static int epfd, pipe_e[2], pipe_r[2];
static int waited = -2, read_got = -2, wait_errno, read_errno;

static void *flooder(void *arg) {
	(void)arg;
	int fd = open("/dev/null", O_WRONLY);
	for (int i = 0; i < 1024; i++) {
		ssize_t n = write(fd, block, sizeof block);
		if (n != sizeof block)
			short_writes++;
		else
			__sync_fetch_and_add(&written, n);
	}
	return NULL;
}

static void *epoller(void *arg) {
	(void)arg;
	struct epoll_event ev;
	waited = epoll_wait(epfd, &ev, 1, 60000);
	wait_errno = errno;
	return NULL;
}

static void *reader(void *arg) {
	(void)arg;
	char c;
	read_got = read(pipe_r[0], &c, 1);
	read_errno = errno;
	return NULL;
}

static void on_sigcont(int sig) {
	(void)sig;
	sigconts++;
}

static int flood(void) {
	signal(SIGCONT, on_sigcont);
	memset(block, 'x', sizeof block);
	pipe(pipe_e);
	pipe(pipe_r);
	epfd = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN};
	epoll_ctl(epfd, EPOLL_CTL_ADD, pipe_e[0], &ev);
	pthread_t e, r, w[4];
	pthread_create(&e, NULL, epoller, NULL);
	pthread_create(&r, NULL, reader, NULL);
	for (int i = 0; i < 4; i++)
		pthread_create(&w[i], NULL, flooder, NULL);
	for (int i = 0; i < 4; i++)
		pthread_join(w[i], NULL);
	write(pipe_e[1], "x", 1);
	write(pipe_r[1], "x", 1);
	pthread_join(e, NULL);
	pthread_join(r, NULL);
	printf("flood: %ld bytes, %ld short writes, epoll_wait %d (%s), read %d (%s), SIGCONT %d\n",
	       written, short_writes, waited, waited < 0 ? strerror(wait_errno) : "ok",
	       read_got, read_got < 0 ? strerror(read_errno) : "ok", (int)sigconts);
	return 0;
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
	if (argc == 2 && strcmp(argv[1], "flood") == 0)
		return flood();
	fprintf(stderr, "usage: threads start|sleep|flood\n");
	return 2;
}
