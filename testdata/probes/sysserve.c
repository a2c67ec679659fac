// sysserve makes system calls on request, for differential fuzzing
// (runner/fuzz_root_test.go): the same requests go to one copy running
// natively and one under Lockstep, and what each call returned and its
// errno must agree.
//
// A request is 128 bytes on stdin: the call number (int32; -1 is
// open+read+close), the kinds of its six arguments (3 bits each, below),
// the six argument values and 64 bytes of data. Before the call, a
// writable page and a read-only page are filled with the data, repeated,
// so that whatever a pointer argument points at is the same in both
// copies whatever earlier calls wrote. The answer is 16 bytes on stdout:
// the return value and errno (0 unless the call failed).
//
// usage: sysserve DIR   (DIR holds a few files, for paths and dirents)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { RAW, RW, RO, UNMAPPED, PATH, FD, LOW };

struct request {
	int32_t nr;
	uint32_t kinds;
	uint64_t args[6];
	uint8_t data[64];
	uint8_t pad[8];
};

_Static_assert(sizeof(struct request) == 128, "request is 128 bytes");

static char *rw, *ro, *none;
static const char *paths[16];
static int npaths;
static long fds[8];
static int nfds;

static int readfull(int fd, void *p, size_t n) {
	for (size_t got = 0; got < n;) {
		ssize_t r = read(fd, (char *)p + got, n - got);
		if (r <= 0)
			return -1;
		got += r;
	}
	return 0;
}

static void fill(char *page, const uint8_t *data) {
	for (int i = 0; i < 4096; i += 64)
		memcpy(page + i, data, 64);
}

static long arg(uint32_t kind, uint64_t v) {
	switch (kind) {
	case RW: return (long)(rw + (v & 4095));
	case RO: return (long)(ro + (v & 4095));
	case UNMAPPED: return (long)(none + (v & 4095));
	case PATH: return (long)paths[v % npaths];
	case FD: return fds[v % nfds];
	case LOW: return (long)(v & 4095);
	default: return (long)v;
	}
}

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: sysserve DIR\n");
		return 2;
	}
	// Only stdio, as under lockstep exec (the fuzzer's workers pass
	// descriptors of their own down).
	syscall(SYS_close_range, 3, ~0U, 0);
	// The open-file limit of Lockstep's machine (poll checks nfds by it).
	struct rlimit nofile = {1024, 4096};
	setrlimit(RLIMIT_NOFILE, &nofile);
	// No signal interrupts a call: timers the fuzzer arms fire into a
	// blocked mask (and SIGALRM's default would end the program).
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	// Every pointer is at the same address in both copies, so that a
	// pointer passed where the call takes a number means the same too.
	char *base = (char *)0x5540000000;
	if (mmap(base, 6 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != base)
		return 1;
	rw = base, none = base + 4096, ro = base + 2 * 4096;
	munmap(none, 4096); // the writable page ends where nothing is mapped
	mprotect(ro, 4096, PROT_READ);

	char *at = base + 3 * 4096; // the paths, read-only
	const char *p[] = {"/", "/proc", "/proc/self/stat", "/proc/self/status", "/proc/uptime",
			   "/proc/cpuinfo", "/dev/null", "/dev/urandom", "/nonexistent", "",
			   argv[1], "a", "a/x", NULL, "/proc/self/task", "/sys/devices/system/cpu/online"};
	npaths = sizeof p / sizeof p[0];
	for (int i = 0; i < npaths; i++) {
		paths[i] = at;
		if (p[i] == NULL) { // longer than PATH_MAX
			memset(at, 'a', 4200);
			at[0] = '/';
			at += 4201;
		} else
			at = stpcpy(at, p[i]) + 1;
	}
	mprotect(base + 3 * 4096, 3 * 4096, PROT_READ);
	if (chdir(argv[1]) != 0)
		return 1;
	const char *file = "a";
	long f[] = {open(argv[1], O_RDONLY | O_DIRECTORY), open("/dev/null", O_RDWR), AT_FDCWD, 9999,
		    open(file, O_RDONLY), open("/", O_RDONLY | O_DIRECTORY), -1, open("/proc", O_RDONLY | O_DIRECTORY)};
	nfds = sizeof f / sizeof f[0];
	memcpy(fds, f, sizeof f);

	struct request q;
	while (readfull(0, &q, sizeof q) == 0) {
		fill(rw, q.data);
		mprotect(ro, 4096, PROT_READ | PROT_WRITE);
		fill(ro, q.data);
		mprotect(ro, 4096, PROT_READ);
		long a[6];
		for (int i = 0; i < 6; i++)
			a[i] = arg((q.kinds >> (3 * i)) & 7, q.args[i]);
		for (int i = 0; i < nfds; i++)
			if (fds[i] >= 0)
				lseek(fds[i], 0, SEEK_SET); // directory listings start over
		long r;
		int e;
		if (q.nr == -1) { // open a path and read from it: the files the agent serves
			errno = 0;
			r = syscall(SYS_openat, AT_FDCWD, a[0], (int)a[1] & ~(O_CREAT | O_TMPFILE | O_TRUNC), 0);
			if (r >= 0) {
				int fd = r;
				errno = 0;
				r = read(fd, (void *)a[2], (size_t)a[3] & 0xffff);
				e = r < 0 ? errno : 0;
				close(fd);
			} else
				e = errno;
		} else {
			errno = 0;
			r = syscall(q.nr, a[0], a[1], a[2], a[3], a[4], a[5]);
			e = r < 0 ? errno : 0;
			if (r >= 0 && (q.nr == SYS_openat || q.nr == SYS_open || q.nr == SYS_openat2))
				close(r);
		}
		int64_t out[2] = {r, e};
		if (write(1, out, sizeof out) != sizeof out)
			return 1;
	}
	return 0;
}
