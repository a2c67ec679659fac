//go:build linux

package runner_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockstep-run/lockstep/virt"
)

// TestClockPage: the vDSO's reads come from the process's clock page and
// agree with the agent's; a forked child gets a page of its own, its
// parent's clock takes in the child's at the wait; reads do not move time
// until a process spins on the clock.
func TestClockPage(t *testing.T) {
	requireRoot(t)
	r := lockstep(t, "", "exec", "--", filepath.Join(bin.probes, "clocks"))
	epoch := virt.DefaultEpoch.Unix()
	want := fmt.Sprintf(`clock 0: vdso %[1]d.000000000 syscall same
clock 1: vdso 100.000000000 syscall same
clock 4: vdso 100.000000000 syscall same
clock 5: vdso %[1]d.000000000 syscall same
clock 6: vdso 100.000000000 syscall same
clock 7: vdso 100.000000000 syscall same
clock 11: vdso %[2]d.000000000 syscall same
gettimeofday %[1]d.000000 time %[1]d
parent slept 0.1 s: +100000000 ns
child slept 0.3 s: +300000000 ns
parent after waiting: +300000000 ns
spun %[3]d reads for 1 ms; wall moved 301001000 ns
`, epoch, epoch+37, virt.SpinReads+998) // the loop's reads from the third after the wait
	if r.code != 0 || r.stdout != want {
		t.Fatalf("exit %d:\n%s\nwant:\n%s\n%s", r.code, r.stdout, want, r.stderr)
	}
}

// TestServiceTime: a Go HTTP service and its clients, in one program with
// the runtime's threads, print each request's latency and the service's
// times by their own clocks: the same bytes on every run, and the times
// the handlers' sleeps make.
func TestServiceTime(t *testing.T) {
	requireRoot(t)
	var first string
	for i := range 5 {
		r := lockstep(t, "", "exec", "--", filepath.Join(bin.probes, "goservice"), "-n", "40", "-clients", "4", "-sleep", "2ms", "-print")
		if r.code != 0 {
			t.Fatalf("run %d: exit %d: %s", i, r.code, r.stderr)
		}
		if i == 0 {
			first = r.stdout
			if !strings.Contains(first, "/0 2025-01-01T00:00:00Z 2ms latency=2ms") ||
				!strings.Contains(first, "/39 2025-01-01T00:00:00.018Z 2ms latency=2ms") ||
				!strings.HasSuffix(first, "40 requests in 20ms\n") {
				t.Fatalf("the service's times:\n%s", first)
			}
		} else if r.stdout != first {
			t.Fatalf("run %d differs:\n%s\nfirst run:\n%s", i, r.stdout, first)
		}
	}
}
