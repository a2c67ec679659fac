package ebpf

import (
	"fmt"
	"path"
	"sort"
	"strings"
)

// EvAudit: a syscall that can be nondeterministic reached the kernel.
const EvAudit = 4

// Finding is one nondeterministic source a run touched.
type Finding struct {
	What  string   `json:"what"`  // a syscall, or "open PATH"
	Why   string   `json:"why"`   // why its result can differ between hosts or runs
	Count int      `json:"count"` // times seen
	Pids  []uint32 `json:"pids"`  // the first processes seen (PIDs in the run's namespace)
}

// Audit collects findings from EvAudit events.
type Audit struct {
	found map[string]*Finding
}

// NewAudit returns an empty audit.
func NewAudit() *Audit { return &Audit{found: map[string]*Finding{}} }

// Syscalls the profile answers (a kernel call is an escape), and timers
// it lets through: the CPU-time itimers and timerfd.
var auditSyscalls = map[uint32]string{
	228: "clock_gettime reached the kernel: host time escaped the agent",
	96:  "gettimeofday reached the kernel: host time escaped the agent",
	201: "time reached the kernel: host time escaped the agent",
	229: "clock_getres reached the kernel",
	318: "getrandom reached the kernel: host entropy escaped the agent",
	204: "sched_getaffinity reached the kernel: host CPUs",
	63:  "uname reached the kernel: host identity",
	99:  "sysinfo reached the kernel: host memory and load",
	309: "getcpu reached the kernel: the host CPU number",
	36:  "getitimer of ITIMER_VIRTUAL or ITIMER_PROF reports host CPU time",
	37:  "alarm reached the kernel: a timer escaped the agent",
	38:  "setitimer of ITIMER_VIRTUAL or ITIMER_PROF: a timer on host CPU time",
	222: "timer_create reached the kernel: a timer escaped the agent",
	223: "timer_settime reached the kernel: a timer escaped the agent",
	224: "timer_gettime reached the kernel: host time",
	287: "timerfd_gettime reports host time",
}

// Files whose contents are host state the agent does not virtualize.
var auditFiles = []struct{ pattern, why string }{
	{"/proc/self/stat", "scheduling counters and start time of the process"},
	{"/proc/self/status", "host memory use and scheduling counts"},
	{"/proc/self/sched", "scheduler statistics"},
	{"/proc/self/schedstat", "scheduler statistics"},
	{"/proc/self/io", "I/O counters"},
	{"/proc/self/statm", "memory use"},
	{"/proc/self/smaps", "memory use"},
	{"/proc/stat", "host CPU time counters"},
	{"/proc/interrupts", "host interrupt counters"},
	{"/proc/softirqs", "host interrupt counters"},
	{"/proc/loadavg", "host load"},
	{"/proc/diskstats", "host disk counters"},
	{"/proc/vmstat", "host memory counters"},
	{"/proc/zoneinfo", "host memory counters"},
	{"/proc/schedstat", "host scheduler counters"},
	{"/proc/pressure/", "host pressure stall information"},
	{"/proc/net/", "host network state"},
	{"/sys/fs/cgroup/", "cgroup counters and limits of the host"},
	{"/sys/devices/system/cpu/", "host CPU topology"},
	{"/sys/class/net/", "host network devices"},
	{"/dev/hwrng", "hardware entropy"},
}

// auditPath returns why reading path can be nondeterministic, or "".
func auditPath(p string) string {
	p = path.Clean(p)
	// /proc/N/... and /proc/thread-self/... are /proc/self/...
	if rest, ok := strings.CutPrefix(p, "/proc/"); ok {
		first, tail, _ := strings.Cut(rest, "/")
		if first == "thread-self" || (first != "" && strings.Trim(first, "0123456789") == "") {
			p = "/proc/self/" + tail
		}
	}
	for _, f := range auditFiles {
		if p == f.pattern || (strings.HasSuffix(f.pattern, "/") && strings.HasPrefix(p, f.pattern)) {
			return f.why
		}
	}
	return ""
}

// Add records an EvAudit event (others are ignored).
func (a *Audit) Add(e Event) {
	if e.Type != EvAudit {
		return
	}
	var what, why string
	switch e.Nr {
	case 2, 257, 437:
		p := string(e.Data)
		if why = auditPath(p); why == "" {
			return
		}
		what = "open " + p
	default:
		why = auditSyscalls[e.Nr]
		if why == "" {
			return
		}
		what = SyscallName(e.Nr)
	}
	f := a.found[what]
	if f == nil {
		f = &Finding{What: what, Why: why}
		a.found[what] = f
	}
	f.Count++
	if len(f.Pids) < 4 && (len(f.Pids) == 0 || f.Pids[len(f.Pids)-1] != e.Pid) {
		f.Pids = append(f.Pids, e.Pid)
	}
}

// Findings returns what was found, most frequent first.
func (a *Audit) Findings() []Finding {
	out := make([]Finding, 0, len(a.found))
	for _, f := range a.found {
		out = append(out, *f)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].What < out[j].What
	})
	return out
}

// String is the report a person reads.
func (f Finding) String() string {
	return fmt.Sprintf("%s (%d×, pid %v): %s", f.What, f.Count, f.Pids, f.Why)
}
