package integration

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestAsyncSignalsInShim: through the shim, timer expiries and signals
// between processes land where the programs' own waits put them: 20 runs
// of each program on two providers print the same, and what the
// programs' clocks say (testdata/async; runner's TestAsyncSignals checks
// the same under lockstep exec).
func TestAsyncSignalsInShim(t *testing.T) {
	// alarmloop with 20 ms rounds: with its 3 ms ones (runner's
	// TestAsyncSignals runs them under lockstep exec), one run in 20
	// through the shim printed 311 rounds where the others printed 334,
	// under the whole suite's load (docs/determinism.md, "Timers"). Its
	// 50th round's sleep ends where the alarm fires: the sleep ends, the
	// handler runs at its return, and the loop sees it.
	want := map[string][]string{
		"tick 19: loop 299, value 42, +190000 us\n": {"/timercount"},
		"alarm after 50 rounds, alarm(0) says 0\n":  {"/alarmloop", "20000000"},
		"child: signals in rounds 40 80 120\n":      {"/killcompute"},
		"round 7: 2 ready: A B\n":                   {"/selecttwo"},
		"child 4\nparent 0\n":                       {"/forkwrite"},
	}
	for line, argv := range want {
		t.Run(strings.TrimPrefix(argv[0], "/"), func(t *testing.T) {
			var first string
			for i := range 20 {
				p := env.providers[i%2]
				res := p.run(t, run{runtime: lockstepRuntime, args: argv})
				if res.code != 0 {
					t.Fatalf("run %d on %s: exit %d\n%s%s", i, p.name, res.code, res.stdout, res.stderr)
				}
				if i == 0 {
					first = res.stdout
					if !strings.Contains(first, line) {
						t.Errorf("output lacks %q:\n%s", line, first)
					}
				} else if res.stdout != first {
					t.Fatalf("run %d on %s differs from run 0:\n%s\nrun 0:\n%s", i, p.name, res.stdout, first)
				}
			}
		})
	}
}

// TestAsyncSignalsReplicated: in a replicated run, whose time follows its
// log, timers and kill(2) land where the programs' waits put them on
// every replica, and a replay of the log reproduces the run.
func TestAsyncSignalsReplicated(t *testing.T) {
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	common := []string{"--address", sock, "--namespace", namespace}
	// Sleeps of 20 ms and more: in a run whose time is its log's, a sleep
	// of at most 10 ms is a runtime's pause, which ends at a host-timed
	// point if the log's time has not reached it after 100 ms of real
	// time (docs/determinism.md, "The log is the clock"), as under load.
	want := []struct{ argv, lines []string }{
		{[]string{"/timercount", "20000", "50000000"}, []string{"tick 19: loop 59, value 42, +950000 us"}},
		{[]string{"/alarmloop", "20000000"}, []string{
			"alarm after 50 rounds, alarm(0) says 0",
			"sleep 5: Interrupted system call, 75000 us left, 7 alarms",
			"a sleep as long as the alarm: slept, 8 alarms"}},
		{[]string{"/killcompute", "20000", "400000"}, []string{"child: signals in rounds 20 40 60"}},
	}
	for _, w := range want {
		t.Run(strings.TrimPrefix(w.argv[0], "/"), func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "run.log")
			out, errs, code := runCLI(t, "", nil, append(append(append([]string{"run", "--json", "--replicas", "3", "--record", log}, common...), probeImage, "--"), w.argv...)...)
			if code != 0 || !strings.Contains(errs, `"agreed": true`) {
				t.Fatalf("run: exit %d\n%s%s", code, out, errs)
			}
			for _, line := range w.lines {
				if !strings.Contains(out, line+"\n") {
					t.Errorf("output lacks %q:\n%s", line, out)
				}
			}
			again, errs, code := runCLI(t, "", nil, append(append([]string{"replay"}, common...), log)...)
			if code != 0 || again != out || !strings.Contains(errs, "reproduced the recorded run") {
				t.Fatalf("replay: exit %d, output %q, recorded %q: %s", code, again, out, errs)
			}
		})
	}
}
