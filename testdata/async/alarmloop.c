// alarmloop: alarm(1) ends a loop that computes and sleeps 3 ms a round;
// then setitimer(ITIMER_REAL) ticks every 25 ms while the program sleeps
// 100 ms at a time, and a sleep SIGALRM interrupts reports what was left.
// It prints the rounds, the ticks and the times left; last, a sleep of
// 1 s under alarm(1): where both end together, the sleep ends first.
// usage: alarmloop [ROUND_NS]   (the rounds' sleep, default 3000000)
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t alarms;
static void on(int sig) { (void)sig, alarms++; }

int main(int argc, char **argv) {
	long nap = argc > 1 ? atol(argv[1]) : 3000000;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on; // no SA_RESTART: sleeps end with EINTR
	sigaction(SIGALRM, &sa, NULL);
	alarm(1);
	long rounds = 0;
	volatile double x = 1;
	while (!alarms) {
		for (int i = 0; i < 50000; i++)
			x = x * 1.000001 + 1e-9;
		struct timespec ts = {0, nap};
		nanosleep(&ts, NULL);
		rounds++;
	}
	printf("alarm after %ld rounds, alarm(0) says %u\n", rounds, alarm(0));
	struct itimerval it = {{0, 25000}, {0, 25000}};
	setitimer(ITIMER_REAL, &it, NULL);
	for (int i = 0; i < 6; i++) {
		struct timespec ts = {0, 100000000}, rem = {0, 0};
		int r = nanosleep(&ts, &rem);
		printf("sleep %d: %s, %ld us left, %d alarms\n", i, r ? strerror(errno) : "slept", rem.tv_nsec / 1000, (int)alarms);
	}
	struct itimerval cur;
	getitimer(ITIMER_REAL, &cur);
	printf("interval %ld us\n", cur.it_interval.tv_usec);
	// alarm replaces the interval timer (they are one); a sleep that ends
	// where it fires runs its course, the handler after it.
	alarm(1);
	struct timespec one = {1, 0};
	int r = nanosleep(&one, NULL);
	printf("a sleep as long as the alarm: %s, %d alarms\n", r ? strerror(errno) : "slept", (int)alarms);
	return 0;
}
