package virt

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Kernel identity every run reports.
const (
	Sysname    = "Linux"
	Release    = "6.1.0-lockstep"
	Version    = "#1 SMP PREEMPT_DYNAMIC Thu Jan  1 00:00:00 UTC 1970"
	Machine    = "x86_64"
	Domainname = "(none)"
	cpuModel   = "Lockstep Virtual CPU"
	cpuMHz     = 2000
)

// cpuFlags is the x86-64-v3 baseline without rdrand and rdseed.
const cpuFlags = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 " +
	"clflush mmx fxsr sse sse2 ht syscall nx lm constant_tsc rep_good nopl cpuid pni " +
	"pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c lahf_lm abm " +
	"bmi1 avx2 bmi2 erms"

// Uname returns struct utsname: six 65-byte fields.
func (w *World) Uname() []byte {
	b := make([]byte, 6*65)
	for i, s := range []string{Sysname, w.cfg.Hostname, Release, Version, Machine, Domainname} {
		copy(b[i*65:i*65+64], s)
	}
	return b
}

// Sysinfo returns struct sysinfo (x86_64 layout, 112 bytes).
func (w *World) Sysinfo(tgid int32) []byte {
	b := make([]byte, 112)
	le := binary.LittleEndian
	le.PutUint64(b[0:], uint64(w.Uptime(tgid).Seconds()))
	le.PutUint64(b[32:], w.cfg.MemBytes)   // totalram
	le.PutUint64(b[40:], w.cfg.MemBytes/2) // freeram
	le.PutUint16(b[80:], 1)                // procs
	le.PutUint32(b[104:], 1)               // mem_unit
	return b
}

// CPUMask returns the affinity mask of the configured CPUs (8 bytes, as
// sched_getaffinity returns it on a kernel with up to 64 CPUs).
func (w *World) CPUMask() []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, uint64(1)<<w.cfg.CPUs-1)
	return b
}

func (w *World) cpuList() string {
	if w.cfg.CPUs == 1 {
		return "0\n"
	}
	return fmt.Sprintf("0-%d\n", w.cfg.CPUs-1)
}

// files maps virtual file paths to their contents at open time.
var files = map[string]func(w *World) string{
	"/proc/cpuinfo":                         (*World).cpuinfo,
	"/proc/meminfo":                         (*World).meminfo,
	"/proc/stat":                            (*World).stat,
	"/proc/uptime":                          nil, // per process: File
	"/proc/loadavg":                         func(w *World) string { return "0.00 0.00 0.00 1/1 1\n" },
	"/proc/version":                         func(w *World) string { return "Linux version " + Release + " (lockstep@lockstep) " + Version + "\n" },
	"/proc/cmdline":                         func(w *World) string { return "BOOT_IMAGE=/boot/vmlinuz-" + Release + " root=/dev/root ro quiet\n" },
	"/proc/partitions":                      func(w *World) string { return "major minor  #blocks  name\n\n" },
	"/proc/diskstats":                       func(w *World) string { return "" },
	"/proc/swaps":                           func(w *World) string { return "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n" },
	"/proc/vmstat":                          func(w *World) string { return vmstat() },
	"/proc/pressure/cpu":                    func(w *World) string { return noStall("some") + noStall("full") },
	"/proc/pressure/memory":                 func(w *World) string { return noStall("some") + noStall("full") },
	"/proc/pressure/io":                     func(w *World) string { return noStall("some") + noStall("full") },
	"/proc/pressure/irq":                    func(w *World) string { return noStall("full") },
	"/proc/sys/kernel/pid_max":              func(w *World) string { return "32768\n" },
	"/proc/sys/kernel/threads-max":          func(w *World) string { return fmt.Sprintf("%d\n", w.cfg.MemBytes/(128<<10)) },
	"/proc/sys/fs/file-max":                 func(w *World) string { return fmt.Sprintf("%d\n", w.fileMax()) },
	"/proc/sys/fs/file-nr":                  func(w *World) string { return fmt.Sprintf("1024\t0\t%d\n", w.fileMax()) },
	"/proc/sys/kernel/hostname":             func(w *World) string { return w.cfg.Hostname + "\n" },
	"/proc/sys/kernel/domainname":           func(w *World) string { return Domainname + "\n" },
	"/proc/sys/kernel/osrelease":            func(w *World) string { return Release + "\n" },
	"/proc/sys/kernel/ostype":               func(w *World) string { return Sysname + "\n" },
	"/proc/sys/kernel/version":              func(w *World) string { return Version + "\n" },
	"/proc/sys/kernel/random/boot_id":       func(w *World) string { return uuid(stream(w.cfg.Seed, "boot_id", 0)) + "\n" },
	"/proc/sys/kernel/random/uuid":          nil, // per process: File
	"/proc/sys/kernel/random/entropy_avail": func(w *World) string { return "256\n" },
	"/proc/sys/kernel/random/poolsize":      func(w *World) string { return "256\n" },
	"/sys/devices/system/cpu/online":        (*World).cpuList,
	"/sys/devices/system/cpu/possible":      (*World).cpuList,
	"/sys/devices/system/cpu/present":       (*World).cpuList,
	"/etc/machine-id":                       func(w *World) string { return machineID(w) + "\n" },
	"/var/lib/dbus/machine-id":              func(w *World) string { return machineID(w) + "\n" },
}

// entropyDevices are served as endless seeded streams.
var entropyDevices = map[string]bool{"/dev/urandom": true, "/dev/random": true}

// IsEntropyDevice reports whether path names an entropy device.
func IsEntropyDevice(path string) bool { return entropyDevices[path] }

// File returns the virtual contents of path, if Lockstep serves it, as
// process tgid opens it.
func (w *World) File(tgid int32, path string) ([]byte, bool, error) {
	f, ok := files[path]
	if !ok {
		return nil, false, nil
	}
	var s string
	switch path {
	case "/proc/uptime":
		u := w.Uptime(tgid).Seconds()
		s = fmt.Sprintf("%.2f %.2f\n", u, u*float64(w.cfg.CPUs))
	case "/proc/sys/kernel/random/uuid":
		s = w.nextUUID(tgid) + "\n"
	default:
		s = f(w)
	}
	b := []byte(s)
	w.pr.mu.Lock()
	name := w.pr.get(tgid).name
	w.pr.mu.Unlock()
	return b, true, w.note(name, "file", path, digest(b))
}

func machineID(w *World) string {
	return strings.ReplaceAll(uuid(stream(w.cfg.Seed, "machine-id", 0)), "-", "")
}

func (w *World) cpuinfo() string {
	var b strings.Builder
	for i := 0; i < w.cfg.CPUs; i++ {
		fmt.Fprintf(&b, "processor\t: %d\nvendor_id\t: Lockstep\ncpu family\t: 6\nmodel\t\t: 0\n"+
			"model name\t: %s\nstepping\t: 0\ncpu MHz\t\t: %d.000\ncache size\t: 16384 KB\n"+
			"physical id\t: 0\nsiblings\t: %d\ncore id\t\t: %d\ncpu cores\t: %d\napicid\t\t: %d\n"+
			"fpu\t\t: yes\nfpu_exception\t: yes\ncpuid level\t: 13\nwp\t\t: yes\nflags\t\t: %s\n"+
			"bogomips\t: %d.00\nclflush size\t: 64\ncache_alignment\t: 64\n"+
			"address sizes\t: 46 bits physical, 48 bits virtual\npower management:\n\n",
			i, cpuModel, cpuMHz, w.cfg.CPUs, i, w.cfg.CPUs, i, cpuFlags, 2*cpuMHz)
	}
	return b.String()
}

func (w *World) meminfo() string {
	kb := w.cfg.MemBytes >> 10
	var b strings.Builder
	for _, f := range []struct {
		name string
		v    uint64
	}{
		{"MemTotal", kb}, {"MemFree", kb / 2}, {"MemAvailable", kb / 2}, {"Buffers", 0},
		{"Cached", 0}, {"SwapCached", 0}, {"Active", 0}, {"Inactive", 0}, {"Shmem", 0},
		{"SReclaimable", 0}, {"SUnreclaim", 0}, {"Slab", 0}, {"SwapTotal", 0}, {"SwapFree", 0},
		{"Dirty", 0}, {"Writeback", 0}, {"Mapped", 0}, {"CommitLimit", kb / 2}, {"Committed_AS", 0},
		{"HugePages_Total", 0}, {"HugePages_Free", 0}, {"Hugepagesize", 2048},
	} {
		unit := " kB"
		if strings.HasPrefix(f.name, "HugePages_") {
			unit = ""
		}
		fmt.Fprintf(&b, "%-16s%8d%s\n", f.name+":", f.v, unit)
	}
	return b.String()
}

func (w *World) stat() string {
	var b strings.Builder
	b.WriteString("cpu  0 0 0 0 0 0 0 0 0 0\n")
	for i := 0; i < w.cfg.CPUs; i++ {
		fmt.Fprintf(&b, "cpu%d 0 0 0 0 0 0 0 0 0 0\n", i)
	}
	fmt.Fprintf(&b, "intr 0\nctxt 0\nbtime %d\nprocesses 1\nprocs_running 1\nprocs_blocked 0\nsoftirq 0\n",
		w.cfg.Epoch.Unix()-int64(monoStart.Seconds()))
	return b.String()
}

// presentOnly are served only where the file exists in the caller's root:
// a machine ID is not invented for an image that has none.
var presentOnly = map[string]bool{"/etc/machine-id": true, "/var/lib/dbus/machine-id": true}

// Paths lists every path Lockstep serves itself.
func Paths() []string {
	var ps []string
	for p := range files {
		ps = append(ps, p)
	}
	for p := range entropyDevices {
		ps = append(ps, p)
	}
	return ps
}

// IsVirtual reports whether File serves path.
func IsVirtual(path string) bool { _, ok := files[path]; return ok }

// ServedIfPresent reports whether path is served only where it exists.
func ServedIfPresent(path string) bool { return presentOnly[path] }

// SysfsHidden returns what a sysfs directory listing that holds names
// leaves out: the CPUs and memory nodes the world does not have. The
// listing of /sys/devices/system/cpu (known by its "possible" and
// "kernel_max" files) loses cpuN for N ≥ CPUs, that of
// /sys/devices/system/node (its "has_cpu") nodeN for N ≥ 1; `ls` of them
// showed the host's count.
func (w *World) SysfsHidden(names map[string]bool) func(name string) bool {
	var prefix string
	var keep int
	switch {
	case names["possible"] && names["kernel_max"]:
		prefix, keep = "cpu", w.cfg.CPUs
	case names["possible"] && names["has_cpu"]:
		prefix, keep = "node", 1
	default:
		return func(string) bool { return false }
	}
	return func(name string) bool {
		n, err := strconv.Atoi(strings.TrimPrefix(name, prefix))
		return strings.HasPrefix(name, prefix) && err == nil && n >= keep
	}
}

// vmstat is /proc/vmstat with every counter 0: the kernel's names (what
// vmstat(8) looks up), none of the host's paging, faults and reclaim.
func vmstat() string {
	b, _ := os.ReadFile("/proc/vmstat")
	var out strings.Builder
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if name, _, ok := strings.Cut(line, " "); ok {
			out.WriteString(name + " 0\n")
		}
	}
	return out.String()
}

// noStall is a line of a /proc/pressure file with no stall.
func noStall(kind string) string {
	return kind + " avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
}

// fileMax is the kernel's default file-max for the world's memory: a
// tenth of it in KiB (files_maxfiles_init).
func (w *World) fileMax() uint64 { return max(8192, w.cfg.MemBytes>>10/10) }
