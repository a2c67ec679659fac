package virt

import (
	"fmt"
	"strconv"
	"strings"
)

// Rlimit is one resource limit a run's processes start with.
type Rlimit struct {
	Name     string // its name in an OCI spec and in <sys/resource.h>
	Cur, Max uint64
}

// Unlimited is RLIM_INFINITY.
const Unlimited = ^uint64(0)

// Rlimits are the limits every run starts with, whatever the host gave
// the caller or containerd: getrlimit, `ulimit -a` and /proc/PID/limits
// show them, and they shape what a program does (the stack limit is
// glibc's default thread stack size, so it moves every later mapping).
// Left to the host, the process and pending-signal limits, which the
// kernel derives from the host's memory, told replicas apart. The values
// are the kernel's own defaults (INIT_RLIMITS) on a 4 GiB machine, the
// memory DefaultConfig reports. Raising a hard limit needs
// CAP_SYS_RESOURCE, so they are no higher than a host commonly gives.
//
// The index of a limit is its resource number on Linux.
var Rlimits = [...]Rlimit{
	{"RLIMIT_CPU", Unlimited, Unlimited},
	{"RLIMIT_FSIZE", Unlimited, Unlimited},
	{"RLIMIT_DATA", Unlimited, Unlimited},
	{"RLIMIT_STACK", 8 << 20, Unlimited},
	{"RLIMIT_CORE", 0, Unlimited},
	{"RLIMIT_RSS", Unlimited, Unlimited},
	{"RLIMIT_NPROC", 16384, 16384},
	{"RLIMIT_NOFILE", 1024, 4096},
	{"RLIMIT_MEMLOCK", 8 << 20, 8 << 20},
	{"RLIMIT_AS", Unlimited, Unlimited},
	{"RLIMIT_LOCKS", Unlimited, Unlimited},
	{"RLIMIT_SIGPENDING", 16384, 16384},
	{"RLIMIT_MSGQUEUE", 819200, 819200},
	{"RLIMIT_NICE", 0, 0},
	{"RLIMIT_RTPRIO", 0, 0},
	{"RLIMIT_RTTIME", Unlimited, Unlimited},
}

// CheckLimits reports the first limit in the text of a /proc/PID/limits
// file that is not the one in want (Rlimits, or a spec's changes to it).
// The file lists the limits in resource order, a header first, in
// columns 26 and 21 wide.
func CheckLimits(procLimits string, want []Rlimit) error {
	ls := strings.Split(strings.TrimSuffix(procLimits, "\n"), "\n")
	if len(ls) != len(want)+1 {
		return fmt.Errorf("%d limits listed, want %d", len(ls)-1, len(want))
	}
	for i, l := range want {
		line := ls[i+1]
		if len(line) < 68 {
			return fmt.Errorf("limit line %q is too short", line)
		}
		cur, max := strings.TrimSpace(line[26:47]), strings.TrimSpace(line[47:68])
		if cur != FormatLimit(l.Cur) || max != FormatLimit(l.Max) {
			return fmt.Errorf("%s: %q is %s/%s, want %s/%s", l.Name, strings.TrimSpace(line[:26]), cur, max, FormatLimit(l.Cur), FormatLimit(l.Max))
		}
	}
	return nil
}

// FormatLimit writes a limit as getrlimit's users do: a number or
// "unlimited".
func FormatLimit(v uint64) string {
	if v == Unlimited {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}
