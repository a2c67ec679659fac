// timercount: a POSIX timer (CLOCK_MONOTONIC, every 10 ms, SIGRTMIN with a
// value) interrupts a loop that computes and sleeps 0.7 ms; it prints how
// many loops each tick saw, the time each tick read, and the overruns.
// Natively the counts follow the host's speed; under Lockstep they follow
// the loop's own sleeps.
// usage: timercount [NAP_US [PERIOD_NS]]   (default 700 10000000)
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TICKS 20
static volatile sig_atomic_t ticks;
static volatile long loops;
static long seen[TICKS];
static long long at[TICKS];
static int values[TICKS];

static void tick(int sig, siginfo_t *si, void *uc) {
	(void)sig, (void)uc;
	if (ticks >= TICKS)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	seen[ticks] = loops;
	at[ticks] = ts.tv_sec * 1000000000LL + ts.tv_nsec;
	values[ticks] = si->si_value.sival_int;
	ticks++;
}

int main(int argc, char **argv) {
	int nap = argc > 1 ? atoi(argv[1]) : 700;
	long period = argc > 2 ? atol(argv[2]) : 10000000;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = tick;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGRTMIN, &sa, NULL);
	struct sigevent ev;
	memset(&ev, 0, sizeof ev);
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN;
	ev.sigev_value.sival_int = 42;
	timer_t t;
	if (timer_create(CLOCK_MONOTONIC, &ev, &t) != 0)
		return perror("timer_create"), 1;
	struct itimerspec its = {{0, period}, {0, period}};
	timer_settime(t, 0, &its, NULL);
	volatile double x = 1;
	while (ticks < TICKS) {
		for (int i = 0; i < 20000; i++)
			x = x * 1.000001 + 1e-9;
		usleep(nap);
		loops++;
	}
	struct itimerspec left;
	timer_gettime(t, &left);
	printf("overrun %d left %ld ns\n", timer_getoverrun(t), left.it_value.tv_nsec);
	timer_delete(t);
	for (int i = 0; i < TICKS; i++)
		printf("tick %d: loop %ld, value %d, +%lld us\n", i, seen[i], values[i], (at[i] - at[0]) / 1000);
	return 0;
}
