//go:build linux

package tracer

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// KillNamespace sends SIGKILL to pid and to every other process in pid's
// PID namespace, now: killing a namespace's init alone leaves the rest
// running until the kernel reaps them at init's exit, and in that window a
// process could see a sibling die and act on it (a shell printing
// "Killed"). Processes forked meanwhile cannot run: a fork whose parent has
// a fatal signal pending fails. If pid shares this process's namespace only
// pid is killed.
func KillNamespace(pid int) {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	unix.Kill(pid, unix.SIGKILL)
	if own, _ := os.Readlink("/proc/self/ns/pid"); err != nil || ns == own {
		return
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pid {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err == nil && l == ns {
			unix.Kill(p, unix.SIGKILL)
		}
	}
}

// dying reports whether thread tid has exited or has SIGKILL pending: its
// memory may be gone mid-access, and nothing it would do runs.
func dying(tid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return true
	}
	const sigkill = 1 << (unix.SIGKILL - 1)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "State":
			if strings.HasPrefix(v, "Z") || strings.HasPrefix(v, "X") {
				return true
			}
		case "SigPnd", "ShdPnd":
			if m, err := strconv.ParseUint(v, 16, 64); err == nil && m&sigkill != 0 {
				return true
			}
		}
	}
	return false
}
