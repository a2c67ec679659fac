// probe prints every nondeterminism source Lockstep covers, one per line,
// as "name value". Built static and dynamic by testdata/probes/build.sh.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void hex(const char *name, const unsigned char *b, int n) {
	printf("%s ", name);
	for (int i = 0; i < n; i++) printf("%02x", b[i]);
	printf("\n");
}

static void clock_line(const char *name, clockid_t id) {
	struct timespec ts;
	clock_gettime(id, &ts);
	printf("%s %lld.%09ld\n", name, (long long)ts.tv_sec, ts.tv_nsec);
}

static void file_line(const char *name, const char *path, const char *key) {
	char line[512];
	FILE *f = fopen(path, "r");
	if (!f) { printf("%s error %d\n", name, errno); return; }
	while (fgets(line, sizeof line, f))
		if (!key || strncmp(line, key, strlen(key)) == 0) { printf("%s %s", name, line); break; }
	fclose(f);
}

static void device_line(const char *name, const char *path) {
	unsigned char b[16];
	int fd = open(path, O_RDONLY);
	if (fd < 0 || read(fd, b, sizeof b) != sizeof b) { printf("%s error %d\n", name, errno); return; }
	close(fd);
	hex(name, b, sizeof b);
}

static void dir_lines(const char *dir) {
	char path[4096];
	mkdir(dir, 0755);
	// Created in an order unlike the names' order.
	for (int i = 0; i < 40; i++) {
		snprintf(path, sizeof path, "%s/f%02d", dir, (i * 17) % 40);
		int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
		write(fd, "x", 1);
		close(fd);
	}
	DIR *d = opendir(dir);
	if (!d) { printf("getdents error %d\n", errno); return; }
	struct dirent *e;
	printf("getdents");
	while ((e = readdir(d)) != NULL) printf(" %s:%lu", e->d_name, (unsigned long)e->d_ino);
	printf("\n");
	closedir(d);
	struct stat st;
	snprintf(path, sizeof path, "%s/f07", dir);
	stat(path, &st);
	printf("stat ino=%lu dev=%lu mtime=%lld.%09ld ctime=%lld blocks=%ld\n", (unsigned long)st.st_ino,
	       (unsigned long)st.st_dev, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
	       (long long)st.st_ctim.tv_sec, (long)st.st_blocks);
}

int main(int argc, char **argv) {
	struct timeval tv;
	unsigned char b[16];
	clock_line("realtime", CLOCK_REALTIME);
	clock_line("monotonic", CLOCK_MONOTONIC);
	clock_line("boottime", CLOCK_BOOTTIME);
	clock_line("cputime", CLOCK_PROCESS_CPUTIME_ID);
	gettimeofday(&tv, NULL);
	printf("gettimeofday %lld.%06ld\n", (long long)tv.tv_sec, (long)tv.tv_usec);
	printf("time %lld\n", (long long)time(NULL));
	struct timespec res;
	clock_getres(CLOCK_REALTIME_COARSE, &res);
	printf("clock_getres_coarse %ld\n", res.tv_nsec);
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	printf("rdtsc %llu\n", ((unsigned long long)hi << 32) | lo);
	getrandom(b, sizeof b, 0);
	hex("getrandom", b, sizeof b);
	device_line("urandom", "/dev/urandom");
	device_line("random", "/dev/random");
	hex("at_random", (unsigned char *)getauxval(AT_RANDOM), 16);
	int local;
	void *heap = malloc(100);
	void *map = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	printf("aslr stack=%p heap=%p mmap=%p code=%p\n", (void *)&local, heap, map, (void *)main);
	srand(time(NULL));
	printf("rand %d\n", rand());
	struct utsname u;
	uname(&u);
	printf("uname %s %s %s %s %s\n", u.sysname, u.nodename, u.release, u.version, u.machine);
	char host[256];
	gethostname(host, sizeof host);
	printf("hostname %s\n", host);
	printf("nprocs %ld %ld\n", sysconf(_SC_NPROCESSORS_ONLN), sysconf(_SC_NPROCESSORS_CONF));
	cpu_set_t set;
	sched_getaffinity(0, sizeof set, &set);
	printf("affinity %d\n", CPU_COUNT(&set));
	unsigned cpu = 99, node = 99;
	syscall(SYS_getcpu, &cpu, &node, NULL);
	printf("getcpu %u %u sched_getcpu %d\n", cpu, node, sched_getcpu());
	struct sysinfo si;
	sysinfo(&si);
	printf("sysinfo uptime=%ld totalram=%lu freeram=%lu procs=%d\n", si.uptime, si.totalram, si.freeram, si.procs);
	file_line("cpuinfo", "/proc/cpuinfo", "model name");
	file_line("meminfo", "/proc/meminfo", "MemTotal");
	file_line("uptime", "/proc/uptime", NULL);
	file_line("boot_id", "/proc/sys/kernel/random/boot_id", NULL);
	struct statfs sf;
	statfs("/", &sf);
	printf("statfs blocks=%lu bfree=%lu files=%lu\n", (unsigned long)sf.f_blocks, (unsigned long)sf.f_bfree, (unsigned long)sf.f_files);
	printf("pid %d ppid %d\n", getpid(), getppid());
	pid_t c = fork();
	if (c == 0) _exit(0);
	waitpid(c, NULL, 0);
	printf("fork_child %d\n", c);
	dir_lines(argc > 1 ? argv[1] : "/tmp/lockstep-probe-dir");
	long ret = syscall(425, 1, NULL);
	printf("io_uring_setup %ld errno=%d\n", ret, errno);
	ret = syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0);
	printf("perf_event_open %ld errno=%d\n", ret, errno);
	// i386 getpid, in a child: the filter may deny it with ENOSYS (lockstep
	// exec) or kill the caller with SIGSYS (libseccomp's bad-architecture
	// action, under runc).
	fflush(stdout);
	if ((c = fork()) == 0) {
		long r;
		__asm__ volatile("int $0x80" : "=a"(r) : "a"(20));
		printf("int80_getpid %ld\n", r);
		fflush(stdout);
		_exit(0);
	}
	int status;
	waitpid(c, &status, 0);
	if (WIFSIGNALED(status))
		printf("int80_getpid killed by signal %d\n", WTERMSIG(status));
	return 0;
}
