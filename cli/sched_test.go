package cli

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

// policies reads the scheduling policy of each thread of this process
// (field 41 of /proc/self/task/TID/stat).
func policies(t *testing.T) map[string]string {
	t.Helper()
	tids, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tid := range tids {
		b, err := os.ReadFile("/proc/self/task/" + tid.Name() + "/stat")
		if err != nil {
			continue // exited
		}
		// The command name (field 2) may hold spaces: count from its end.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		out[tid.Name()] = f[41-3]
	}
	return out
}

func TestBatchScheduling(t *testing.T) {
	if err := batchScheduling(); err != nil {
		t.Fatal(err)
	}
	// A thread started afterwards inherits the policy.
	started := make(chan struct{})
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		close(started)
		<-release
	}()
	<-started
	defer close(release)
	for tid, p := range policies(t) {
		if p != "3" {
			t.Errorf("thread %s has scheduling policy %s, want 3 (SCHED_BATCH)", tid, p)
		}
	}
}
