package runner_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hangLimit bounds one lockstep command of a root test: past it, the
// test fails with where every process under the command waits (hangDump),
// rather than running into go test's timeout with nothing said.
const hangLimit = 3 * time.Minute

// hangDump describes every thread of the processes below pid: its name,
// state, kernel wait channel and the syscall it is in (/proc/TID/syscall:
// number and arguments; "running" if none).
func hangDump(pid int) string {
	children := map[int][]int{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		n, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + p.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: the comm may hold spaces
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], n)
		}
	}
	var b strings.Builder
	var walk func(pid, depth int)
	walk = func(pid, depth int) {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			dir := fmt.Sprintf("/proc/%d/task/%s/", pid, task.Name())
			read := func(f string) string { p, _ := os.ReadFile(dir + f); return strings.TrimSpace(string(p)) }
			state := ""
			for _, l := range strings.Split(read("status"), "\n") {
				if s, ok := strings.CutPrefix(l, "State:"); ok {
					state = strings.TrimSpace(s)
				}
			}
			fmt.Fprintf(&b, "%s%d/%s %s [%s] wchan=%s syscall=%s\n", strings.Repeat("  ", depth), pid, task.Name(),
				read("comm"), state, read("wchan"), read("syscall"))
		}
		for _, c := range children[pid] {
			walk(c, depth+1)
		}
	}
	walk(pid, 0)
	return b.String()
}

// watchHang fails t with hangDump of pid if done is not closed within
// hangLimit, and then kills pid.
func watchHang(t *testing.T, pid int, done <-chan struct{}) {
	select {
	case <-done:
	case <-time.After(hangLimit):
		dump := hangDump(pid)
		if p, err := os.FindProcess(pid); err == nil {
			p.Kill()
		}
		t.Errorf("the command ran for %v; where its processes waited:\n%s", hangLimit, dump)
	}
}
