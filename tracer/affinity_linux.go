package tracer

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// pin puts a new tracee (its threads and children inherit it) and the
// calling thread, its tracer, on one CPU: the one the tracee last ran
// on, where the kernel placed it, if it may run there. Every stop of a
// tracee (a traced syscall, an emulated rdtsc or cpuid) wakes its tracer
// and then the tracee again; a wake-up on the same CPU is a switch, one
// to another CPU an interrupt, tens of µs in a VM. On the 2-vCPU VM: an
// emulated rdtsc took 100 µs, 35 pinned; ffmpeg with libx264 (whose libhwy
// measures the timer with 131,072 rdtsc at load) 14 s, 5.7 s pinned. The
// program sees one CPU whichever it is (virt: affinity, nprocs), so
// pinning shows nowhere. Failing, it leaves things as they were.
func pin(tid int) {
	var allowed unix.CPUSet
	if unix.SchedGetaffinity(tid, &allowed) != nil {
		return
	}
	cpu := lastCPU(tid)
	if cpu < 0 || !allowed.IsSet(cpu) {
		cpu = -1
		for c := 0; c < 1024; c++ {
			if allowed.IsSet(c) {
				cpu = c
				break
			}
		}
		if cpu < 0 {
			return
		}
	}
	var one unix.CPUSet
	one.Set(cpu)
	if unix.SchedSetaffinity(tid, &one) == nil {
		unix.SchedSetaffinity(0, &one)
	}
}

// lastCPU is the CPU thread tid last ran on (/proc/TID/stat, field 39),
// or -1.
func lastCPU(tid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/stat")
	if err != nil {
		return -1
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 37 {
		return -1
	}
	cpu, err := strconv.Atoi(f[36])
	if err != nil {
		return -1
	}
	return cpu
}
