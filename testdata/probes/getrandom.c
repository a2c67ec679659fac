// getrandom calls getrandom(2) with a table of lengths and flags, fixed
// and drawn from a fixed generator (flags in all 64 bits of the register),
// and prints what each returned: Lockstep's answers must match the
// kernel's but for the bytes (TestGetrandomDiffers... see runner).
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

static void call(unsigned long len, uint64_t flags) {
	static char buf[256];
	errno = 0;
	long r = syscall(SYS_getrandom, buf, len, flags);
	printf("len %lu flags %#llx: %ld errno %d\n", len, (unsigned long long)flags, r, r < 0 ? errno : 0);
}

int main(void) {
	uint64_t fixed[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 0x100000000ULL, 0xffffffff00000001ULL, 0x80000000};
	for (unsigned i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
		call(16, fixed[i]);
		call(0, fixed[i]);
	}
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	for (int i = 0; i < 200; i++) {
		x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		uint64_t flags = x;
		if (i % 2)
			flags &= 0xffffffff00000007ULL; /* valid low bits, junk above */
		call(i % 64, flags);
	}
	return 0;
}
