/* notified: the process side of TestHandlers. It reads a seccomp filter
 * (a uint16 count, then struct sock_filter instructions) on stdin,
 * installs it with a listener, writes the listener's fd number (int32) on
 * stdout, waits for a byte on stdin (the agent is serving), then makes
 * each syscall the handlers answer and writes one record per call:
 * tag (uint8), return value (int64), errno (int32), length (uint32), the
 * bytes the kernel (here: the agent) wrote. argv[1] is a directory with
 * files in it, argv[2] a file.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/time.h>
#include <sys/times.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static void full(int fd, const void *p, size_t n) {
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			_exit(3);
		p = (const char *)p + w;
		n -= w;
	}
}

static void in(void *p, size_t n) {
	while (n > 0) {
		ssize_t r = read(0, p, n);
		if (r <= 0)
			_exit(4);
		p = (char *)p + r;
		n -= r;
	}
}

/* record writes the result of a call made with errno cleared. */
static void record(uint8_t tag, long ret, const void *b, uint32_t n) {
	int32_t e = ret < 0 ? errno : 0;
	int64_t r = ret;
	full(1, &tag, 1);
	full(1, &r, 8);
	full(1, &e, 4);
	full(1, &n, 4);
	if (n)
		full(1, b, n);
}

static void readall(uint8_t tag, long fd, size_t max) {
	static char buf[65536];
	size_t n = 0;
	if (fd >= 0) {
		ssize_t r;
		while (n < max && (r = read(fd, buf + n, max - n)) > 0)
			n += r;
		close(fd);
	}
	record(tag, fd < 0 ? fd : (long)n, buf, n);
}

int main(int argc, char **argv) {
	if (argc != 3)
		return 2;
	uint16_t count;
	in(&count, 2);
	struct sock_filter *insns = calloc(count, sizeof *insns);
	in(insns, count * sizeof *insns);
	struct sock_fprog prog = {count, insns};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return 5;
	int32_t fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
	if (fd < 0)
		return 6;
	full(1, &fd, 4);
	char go;
	in(&go, 1);

	struct timespec ts;
	errno = 0; record(1, syscall(SYS_clock_gettime, CLOCK_REALTIME, &ts), &ts, sizeof ts);
	errno = 0; record(1, syscall(SYS_clock_gettime, CLOCK_REALTIME, &ts), &ts, sizeof ts);
	struct timeval tv;
	errno = 0; record(2, syscall(SYS_gettimeofday, &tv, NULL), &tv, sizeof tv);
	time_t t = 0;
	errno = 0; record(3, syscall(SYS_time, &t), &t, sizeof t);
	errno = 0; record(4, syscall(SYS_clock_getres, CLOCK_MONOTONIC, &ts), &ts, sizeof ts);
	errno = 0; record(5, syscall(SYS_clock_gettime, 12345, &ts), NULL, 0);

	struct timespec before, after, d = {0, 30000000};
	syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &before);
	errno = 0; record(6, syscall(SYS_nanosleep, &d, NULL), NULL, 0);
	errno = 0; record(7, syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &d, NULL), NULL, 0);
	syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &after);
	int64_t moved = (after.tv_sec - before.tv_sec) * 1000000000LL + (after.tv_nsec - before.tv_nsec);
	record(8, 0, &moved, sizeof moved);

	struct tms tm;
	memset(&tm, 0xff, sizeof tm);
	errno = 0; record(9, syscall(SYS_times, &tm), &tm, sizeof tm);
	struct rusage ru;
	memset(&ru, 0xff, sizeof ru);
	errno = 0; record(10, syscall(SYS_getrusage, RUSAGE_SELF, &ru), &ru, sizeof ru);

	unsigned char rnd[64];
	errno = 0; record(11, syscall(SYS_getrandom, rnd, sizeof rnd, 0), rnd, sizeof rnd);
	errno = 0; record(12, syscall(SYS_getrandom, rnd, 8, 0x100), NULL, 0);

	struct utsname u;
	errno = 0; record(13, syscall(SYS_uname, &u), &u, sizeof u);
	struct sysinfo si;
	errno = 0; record(14, syscall(SYS_sysinfo, &si), &si, sizeof si);
	unsigned cpu = 7, node = 7, cn[2];
	errno = 0; long r = syscall(SYS_getcpu, &cpu, &node, NULL);
	cn[0] = cpu; cn[1] = node;
	record(15, r, cn, sizeof cn);
	cpu_set_t set;
	errno = 0; r = syscall(SYS_sched_getaffinity, 0, sizeof set, &set);
	record(16, r, &set, r > 0 ? (uint32_t)r : 0);

	errno = 0; readall(17, syscall(SYS_open, "/proc/cpuinfo", O_RDONLY), 65536);
	errno = 0; readall(18, syscall(SYS_openat, AT_FDCWD, "/proc/meminfo", O_RDONLY), 65536);
	struct open_how how = {.flags = O_RDONLY};
	errno = 0; readall(19, syscall(SYS_openat2, AT_FDCWD, "/proc/loadavg", &how, sizeof how), 65536);
	errno = 0; readall(20, syscall(SYS_openat, AT_FDCWD, "/dev/urandom", O_RDONLY), 32);
	errno = 0; readall(21, syscall(SYS_openat, AT_FDCWD, "/proc/self/comm", O_RDONLY), 64);

	static char dents[8192];
	int dir = open(argv[1], O_RDONLY | O_DIRECTORY);
	errno = 0; r = syscall(SYS_getdents64, dir, dents, sizeof dents);
	record(22, r, dents, r > 0 ? (uint32_t)r : 0);
	close(dir);
	dir = open(argv[1], O_RDONLY | O_DIRECTORY);
	errno = 0; r = syscall(SYS_getdents, dir, dents, sizeof dents);
	record(23, r, dents, r > 0 ? (uint32_t)r : 0);
	close(dir);

	int file = open(argv[2], O_RDONLY);
	struct stat st;
	errno = 0; record(24, syscall(SYS_fstat, file, &st), &st, sizeof st);
	struct statfs sfs;
	errno = 0; record(25, syscall(SYS_statfs, argv[2], &sfs), &sfs, sizeof sfs);
	errno = 0; record(26, syscall(SYS_fstatfs, file, &sfs), &sfs, sizeof sfs);
	return 0;
}
