//go:build linux

package runner_test

import (
	"path/filepath"
	"strings"
	"testing"
)

// asyncPrograms are testdata/async's programs (with arguments) whose
// output Lockstep makes the same on every run, with what each must print:
// values that only the programs' own waits fix (virtual time), so that a
// run whose signals landed where the host's timing put them cannot pass.
var asyncPrograms = []struct {
	argv []string
	want []string
}{
	// A 10 ms POSIX timer over a loop that sleeps 0.7 ms: 14 loops to the
	// first tick, the ticks 10 ms apart by the program's clock.
	{[]string{"timercount"}, []string{"overrun 0 left 10000000 ns", "tick 0: loop 14, value 42, +0 us", "tick 1: loop 29, value 42, +10000 us", "tick 19: loop 299, value 42, +190000 us"}},
	// Every 50 ms over 20 ms sleeps: each tick cuts a sleep.
	{[]string{"timercount", "20000", "50000000"}, []string{"tick 1: loop 5, value 42, +50000 us", "tick 19: loop 59, value 42, +950000 us"}},
	// alarm(1) over rounds that sleep 3 ms: 334 rounds; then a 25 ms
	// itimer cuts each 100 ms sleep 25 ms in; a 1 s sleep under alarm(1)
	// ends as it fires: it runs its course, the handler at its return.
	{[]string{"alarmloop"}, []string{"alarm after 334 rounds, alarm(0) says 0", "sleep 0: Interrupted system call, 75000 us left, 2 alarms", "sleep 5: Interrupted system call, 75000 us left, 7 alarms", "interval 25000 us", "a sleep as long as the alarm: slept, 8 alarms"}},
	// kill(2) 40 ms apart by the parent's clock, into a child that sleeps
	// 1 ms a round; then 400 ms apart into rounds of 20 ms, where each
	// signal falls due just as a round's sleep ends (it comes at the next:
	// its sender's action made it at that instant, after the sleep ended).
	{[]string{"killcompute"}, []string{"child: signals in rounds 40 80 120", "parent: child exited 0"}},
	{[]string{"killcompute", "20000", "400000"}, []string{"child: signals in rounds 20 40 60"}},
	// 390 ms apart: each signal cuts a sleep 10 ms in.
	{[]string{"killcompute", "20000", "390000"}, []string{"child: signals in rounds 19 39 59"}},
	// Two children write after computing; the parent selects (the fork
	// hold runs each child to its end first).
	{[]string{"selecttwo"}, []string{"round 0: 2 ready: A B", "round 7: 2 ready: A B"}},
	// A parent wakes its child through a pipe, then both write to stdout:
	// the woken child runs to its next wait (its exit) first (ebpf.Wakes).
	{[]string{"forkwrite"}, []string{"child 0", "child 4\nparent 0", "parent 4"}},
}

// TestAsyncSignals: timer expiries (timer_create, alarm, setitimer) and
// signals between processes (kill) land at points the programs' own waits
// fix: 20 runs of each print the same, half of them on a host kept busy;
// and a timer over a loop that never waits fires late, with a warning.
func TestAsyncSignals(t *testing.T) {
	requireRoot(t)
	for _, p := range asyncPrograms {
		t.Run(strings.Join(p.argv, " "), func(t *testing.T) {
			argv := append([]string{"exec", "--", filepath.Join(bin.probes, p.argv[0])}, p.argv[1:]...)
			var first string
			for i := range 20 {
				if i == 10 {
					stop := busy(t)
					defer stop()
				}
				r := lockstep(t, "", argv...)
				if r.code != 0 {
					t.Fatalf("run %d: exit %d\n%s%s", i, r.code, r.stdout, r.stderr)
				}
				if i == 0 {
					first = r.stdout
					for _, w := range p.want {
						if !strings.Contains(first, w+"\n") {
							t.Errorf("output lacks %q:\n%s", w, first)
						}
					}
				} else if r.stdout != first {
					t.Fatalf("run %d differs from run 0:\n%s\nrun 0:\n%s", i, r.stdout, first)
				}
			}
		})
	}
	t.Run("busy loop", func(t *testing.T) {
		r := lockstep(t, "", "exec", "--", filepath.Join(bin.probes, "busyalarm"))
		if r.code != 0 || r.stdout != "done\n" {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stderr, "a timer or signal came due while the process computed without waiting") {
			t.Errorf("no warning that the timer's signal landed at a host-timed point:\n%s", r.stderr)
		}
	})
}
