// emulated calls the system calls Lockstep answers instead of the kernel
// with tables of arguments: valid, boundary and invalid (NULL, unmapped
// and read-only pointers, unaligned buffers, odd clock ids and flags,
// junk in a register's upper half, bad timespecs), and prints what each
// returned and its errno. Only results whose values Lockstep virtualises
// are printed as their sign. Natively and under Lockstep the output must
// be the same (TestEmulatedAgreeWithKernel, runner).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static char *rw, *ro, *none; // a writable page, a read-only page, an unmapped page

static void show(const char *what, long r, int exact) {
	int e = r < 0 ? errno : 0;
	if (r >= 0 && !exact)
		r = 0;
	printf("%s: %ld errno %d\n", what, r, e);
}

// Pointers to try for a struct the kernel writes: valid, unaligned, NULL,
// read-only, unmapped, and one that runs off the end of the mapping.
static void *outs(int i) {
	switch (i) {
	case 0: return rw;
	case 1: return rw + 1;
	case 2: return NULL;
	case 3: return ro;
	case 4: return none;
	default: return rw + 4096 - 4; // the next page is unmapped
	}
}

static void clocks(void) {
	// Not 8 and 9 (the alarm clocks): the kernel says EINVAL on a host
	// with no RTC (this VM) and reads them on one with; Lockstep's
	// machine has one, on every host.
	long ids[] = {0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 16, -1, -2, -3, -5, -6, -7, -8, -9, 0x100000001L, 1L << 40};
	for (unsigned i = 0; i < sizeof ids / sizeof ids[0]; i++)
		for (int p = 0; p < 6; p++) {
			void *out = outs(p);
			char what[96];
			errno = 0;
			long r = syscall(SYS_clock_gettime, ids[i], out);
			snprintf(what, sizeof what, "clock_gettime(%#lx, out%d)", ids[i], p);
			show(what, r, 1);
			errno = 0;
			r = syscall(SYS_clock_getres, ids[i], out);
			snprintf(what, sizeof what, "clock_getres(%#lx, out%d)", ids[i], p);
			show(what, r, 1);
		}
	for (int p = 0; p < 6; p++)
		for (int q = 0; q < 6; q++) {
			char what[64];
			errno = 0;
			long r = syscall(SYS_gettimeofday, outs(p), outs(q));
			snprintf(what, sizeof what, "gettimeofday(out%d, out%d)", p, q);
			show(what, r, 1);
		}
	for (int p = 0; p < 6; p++) {
		char what[64];
		errno = 0;
		long r = syscall(SYS_time, outs(p));
		snprintf(what, sizeof what, "time(out%d)", p);
		show(what, r, 0);
	}
}

// Sleeps that end at once or fail: zero, already past, or invalid.
static void sleeps(void) {
	struct timespec *ts = (struct timespec *)(rw + 512);
	struct {
		long sec, nsec;
	} specs[] = {{0, 0}, {0, -1}, {0, 1000000000}, {-1, 0}, {-1, 999999999}};
	long ids[] = {0, 1, 2, 3, 7, 11, -1, -6, 0x100000001L}; // not the alarm clocks (above)
	long flags[] = {0, TIMER_ABSTIME, 2, 0x100000000L};
	for (unsigned s = 0; s < sizeof specs / sizeof specs[0]; s++) {
		char what[128];
		ts->tv_sec = specs[s].sec, ts->tv_nsec = specs[s].nsec;
		errno = 0;
		long r = syscall(SYS_nanosleep, ts, NULL);
		snprintf(what, sizeof what, "nanosleep({%ld, %ld})", specs[s].sec, specs[s].nsec);
		show(what, r, 1);
		for (unsigned i = 0; i < sizeof ids / sizeof ids[0]; i++)
			for (unsigned f = 0; f < sizeof flags / sizeof flags[0]; f++) {
				// Zero, relative or absolute (long past), returns at once.
				errno = 0;
				r = syscall(SYS_clock_nanosleep, ids[i], flags[f], ts, NULL);
				snprintf(what, sizeof what, "clock_nanosleep(%#lx, %#lx, {%ld, %ld})", ids[i], flags[f], specs[s].sec, specs[s].nsec);
				show(what, r, 1);
			}
	}
	for (int p = 2; p < 5; p++) {
		char what[64];
		errno = 0;
		long r = syscall(SYS_nanosleep, outs(p), NULL);
		snprintf(what, sizeof what, "nanosleep(out%d)", p);
		show(what, r, 1);
		errno = 0;
		r = syscall(SYS_clock_nanosleep, 1, 0, outs(p), NULL);
		snprintf(what, sizeof what, "clock_nanosleep(1, 0, out%d)", p);
		show(what, r, 1);
	}
}

static void identity(void) {
	for (int p = 0; p < 6; p++) {
		char what[64];
		errno = 0;
		long r = syscall(SYS_uname, outs(p));
		snprintf(what, sizeof what, "uname(out%d)", p);
		show(what, r, 1);
		errno = 0;
		r = syscall(SYS_sysinfo, outs(p));
		snprintf(what, sizeof what, "sysinfo(out%d)", p);
		show(what, r, 1);
		for (int q = 0; q < 6; q++) {
			errno = 0;
			r = syscall(SYS_getcpu, outs(p), outs(q), NULL);
			snprintf(what, sizeof what, "getcpu(out%d, out%d)", p, q);
			show(what, r, 1);
		}
	}
	long lens[] = {0, 1, 4, 7, 8, 9, 12, 16, 64, 128, 1024, 4096, 0x100000008L, -8};
	long pids[] = {0, -1, 0x100000000L};
	for (unsigned l = 0; l < sizeof lens / sizeof lens[0]; l++)
		for (unsigned i = 0; i < sizeof pids / sizeof pids[0]; i++)
			for (int p = 0; p < 6; p++) {
				char what[96];
				errno = 0;
				long r = syscall(SYS_sched_getaffinity, pids[i], lens[l], outs(p));
				snprintf(what, sizeof what, "sched_getaffinity(%#lx, %ld, out%d)", pids[i], lens[l], p);
				show(what, r, 0);
			}
}

static void files(void) {
	const char *paths[] = {"/", "/proc", "/dev/null", "/nonexistent", ""};
	for (unsigned i = 0; i < sizeof paths / sizeof paths[0]; i++)
		for (int p = 0; p < 6; p++) {
			char what[96];
			errno = 0;
			long r = syscall(SYS_statfs, paths[i], outs(p));
			snprintf(what, sizeof what, "statfs(\"%s\", out%d)", paths[i], p);
			show(what, r, 1);
		}
	for (int p = 2; p < 5; p++) {
		char what[64];
		errno = 0;
		long r = syscall(SYS_statfs, outs(p), rw);
		snprintf(what, sizeof what, "statfs(path%d)", p);
		show(what, r, 1);
	}
}

// Directory listings: the agent serves them in name order; what fails
// must fail as the kernel's does.
static void dirents(void) {
	const char *paths[] = {"/", "/dev/null"};
	long counts[] = {0, 1, 18, 19, 24, 4096, 0x100000000L + 4096, -1};
	long nrs[] = {SYS_getdents64, SYS_getdents};
	for (unsigned k = 0; k < 2; k++)
		for (unsigned i = 0; i < 3; i++) {
			int fd = i < 2 ? open(paths[i], O_RDONLY) : 9999;
			for (unsigned c = 0; c < sizeof counts / sizeof counts[0]; c++)
				for (int p = 0; p < 6; p++) {
					char what[96];
					lseek(fd, 0, SEEK_SET);
					errno = 0;
					long r = syscall(nrs[k], fd, outs(p), counts[c]);
					snprintf(what, sizeof what, "getdents%s(%s, out%d, %#lx)", k ? "" : "64", i < 2 ? paths[i] : "9999", p, counts[c]);
					show(what, r, 0);
				}
			if (i < 2)
				close(fd);
		}
}

int main(void) {
	rw = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (rw == MAP_FAILED || ro == MAP_FAILED)
		return 1;
	none = rw + 4096;
	munmap(none, 4096); // rw's page ends where nothing is mapped
	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	clocks();
	sleeps();
	identity();
	files();
	dirents();
	return 0;
}
