// clocks prints what a program sees of Lockstep's clocks: the vDSO's
// reads against the syscall's, a forked child's clock against its
// parent's, and a loop that spins until the clock moves.
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t id) {
	struct timespec t;
	clock_gettime(id, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(void) {
	int ids[] = {CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_MONOTONIC_RAW, CLOCK_REALTIME_COARSE,
		     CLOCK_MONOTONIC_COARSE, CLOCK_BOOTTIME, CLOCK_TAI};
	for (unsigned i = 0; i < sizeof ids / sizeof ids[0]; i++) {
		struct timespec a, b;
		clock_gettime(ids[i], &a);
		syscall(SYS_clock_gettime, ids[i], &b);
		printf("clock %d: vdso %lld.%09ld syscall %s\n", ids[i], (long long)a.tv_sec, a.tv_nsec,
		       a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec ? "same" : "differs");
	}
	struct timeval tv;
	gettimeofday(&tv, NULL);
	printf("gettimeofday %lld.%06ld time %lld\n", (long long)tv.tv_sec, tv.tv_usec, (long long)time(NULL));
	fflush(stdout);
	long long before = ns(CLOCK_MONOTONIC);
	pid_t pid = fork();
	if (pid == 0) {
		usleep(300000);
		printf("child slept 0.3 s: +%lld ns\n", ns(CLOCK_MONOTONIC) - before);
		return 0;
	}
	usleep(100000);
	printf("parent slept 0.1 s: +%lld ns\n", ns(CLOCK_MONOTONIC) - before);
	fflush(stdout);
	waitpid(pid, NULL, 0);
	printf("parent after waiting: +%lld ns\n", ns(CLOCK_MONOTONIC) - before);
	long long start = ns(CLOCK_MONOTONIC), reads = 0;
	while (ns(CLOCK_MONOTONIC) < start + 1000000)
		reads++;
	printf("spun %lld reads for 1 ms; wall moved %lld ns\n", reads, ns(CLOCK_REALTIME) - (tv.tv_sec * 1000000000LL + tv.tv_usec * 1000));
	return 0;
}
