// bench runs one workload of the core benchmark (hack/bench-exec.sh):
//   cpu        a CPU-bound loop, no syscalls
//   syscall N  N untrapped syscalls (getppid)
//   clock N    N clock_gettime(CLOCK_REALTIME) calls
//   urandom N  read N bytes of /dev/urandom
//   write N B  N writes of B bytes to stdout (hack/bench-ebpf.sh)
//   threads N  N threads created and joined, one at a time (hack/bench-time.sh)
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void *thread(void *arg) { return arg; }

int main(int argc, char **argv) {
	if (argc < 2) return 2;
	long n = argc > 2 ? atol(argv[2]) : 0;
	unsigned long acc = 1;
	if (strcmp(argv[1], "cpu") == 0) {
		for (unsigned long i = 0; i < 1500000000UL; i++) acc = acc * 6364136223846793005UL + i;
	} else if (strcmp(argv[1], "syscall") == 0) {
		for (long i = 0; i < n; i++) acc += syscall(SYS_getppid);
	} else if (strcmp(argv[1], "clock") == 0) {
		struct timespec ts;
		for (long i = 0; i < n; i++) { clock_gettime(CLOCK_REALTIME, &ts); acc += ts.tv_nsec; }
	} else if (strcmp(argv[1], "urandom") == 0) {
		char buf[65536];
		int fd = open("/dev/urandom", O_RDONLY);
		for (long left = n; left > 0;) {
			ssize_t r = read(fd, buf, left < (long)sizeof buf ? left : (long)sizeof buf);
			if (r <= 0) return 1;
			left -= r;
			acc += buf[0];
		}
	} else if (strcmp(argv[1], "write") == 0) {
		long size = argc > 3 ? atol(argv[3]) : 4096;
		char *buf = malloc(size);
		memset(buf, 'x', size);
		for (long i = 0; i < n; i++)
			if (write(1, buf, size) != size) return 1;
		return 0;
	} else if (strcmp(argv[1], "threads") == 0) {
		for (long i = 0; i < n; i++) {
			pthread_t t;
			void *r;
			if (pthread_create(&t, NULL, thread, (void *)i) != 0 || pthread_join(t, &r) != 0) return 1;
			acc += (long)r;
		}
	} else {
		return 2;
	}
	printf("%lu\n", acc & 1);
	return 0;
}
