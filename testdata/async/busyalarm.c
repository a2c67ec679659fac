// busyalarm: alarm(1) and a loop that only computes. Without a counter of
// its progress (the PMU) no host can say where in the loop the signal
// lands; Lockstep fires it late and says so.
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static volatile sig_atomic_t done;
static void on(int sig) { (void)sig, done = 1; }
int main(void) {
	signal(SIGALRM, on);
	alarm(1);
	volatile unsigned long n = 0;
	while (!done)
		n++;
	printf("done\n");
	return 0;
}
