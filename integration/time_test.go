package integration

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pacedInput yields each of its lines after its delay.
type pacedInput struct {
	delays []time.Duration
	lines  []string
}

func (p *pacedInput) Read(b []byte) (int, error) {
	if len(p.lines) == 0 {
		return 0, io.EOF
	}
	time.Sleep(p.delays[0])
	n := copy(b, p.lines[0])
	p.delays, p.lines = p.delays[1:], p.lines[1:]
	return n, nil
}

// TestTimeFollowsLog: three replicas of a program whose ticker thread
// prints a line every second and whose main thread echoes stdin, fed
// lines at irregular real times, print one interleaving with one set of
// times: the log's. The times start at the real time of the run, ticks are
// one second apart, every line comes in the order of its time, and a
// replay prints the same bytes without waiting the seconds out. The
// ticker waits in three ways: a sleep (the agent holds it), a condition
// variable's absolute timeout (a futex the tracer takes the timeout from),
// and one thread's ppoll on stdin with a timeout to the next second.
func TestTimeFollowsLog(t *testing.T) {
	for _, mode := range []string{"sleep", "cond", "ppoll"} {
		t.Run(mode, func(t *testing.T) { timeFollowsLog(t, mode) })
	}
}

func timeFollowsLog(t *testing.T, mode string) {
	log := filepath.Join(t.TempDir(), "run.log")
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	common := []string{"--address", sock, "--namespace", namespace}
	in := &pacedInput{
		delays: []time.Duration{1300 * time.Millisecond, 2100 * time.Millisecond, 400 * time.Millisecond},
		lines:  []string{"a\n", "b\n", "c\n"},
	}
	start := time.Now()
	out, errs, code := runCLIFrom(t, in, nil, append(append([]string{"run", "--json", "--replicas", "3", "--record", log}, common...), probeImage, "--", "/tickecho", "10", mode)...)
	live := time.Since(start)
	if code != 0 || !strings.Contains(errs, `"agreed": true`) {
		t.Fatalf("run: exit %d: %s", code, errs)
	}
	var prev float64
	var ticks []float64
	echoes := ""
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i, l := range lines {
		f := strings.SplitN(l, " ", 2)
		at, err := strconv.ParseFloat(f[0], 64)
		if err != nil || len(f) < 2 {
			t.Fatalf("line %d: %q\n%s", i, l, out)
		}
		if i == 0 && (f[1] != "start" || at < float64(start.Unix()) || at > float64(start.Add(live).Unix()+1)) {
			t.Fatalf("the run's clock starts at %s; it began at %d:\n%s", f[0], start.Unix(), out)
		}
		if at < prev {
			t.Errorf("line %d (%q) comes after a later time: the interleaving does not follow the times\n%s", i, l, out)
		}
		prev = at
		switch {
		case strings.HasPrefix(f[1], "tick "):
			ticks = append(ticks, at)
		case strings.HasPrefix(f[1], "echo "):
			echoes += strings.TrimPrefix(f[1], "echo ")
		}
	}
	if echoes != "abc" || lines[len(lines)-1][strings.IndexByte(lines[len(lines)-1], ' ')+1:] != "eof" {
		t.Fatalf("echoed %q:\n%s", echoes, out)
	}
	for i := 1; i < len(ticks); i++ {
		if d := ticks[i] - ticks[i-1]; d < 0.9995 || d > 1.0005 {
			t.Errorf("ticks %d and %d are %.3f s apart, not one second:\n%s", i-1, i, d, out)
		}
	}
	if len(ticks) < 3 {
		t.Errorf("%d ticks in a run fed for 3.8 s:\n%s", len(ticks), out)
	}
	begin := time.Now()
	again, errs, code := runCLI(t, "", nil, append(append([]string{"replay"}, common...), log)...)
	took := time.Since(begin)
	if code != 0 || again != out || !strings.Contains(errs, "reproduced the recorded run") {
		t.Fatalf("replay: exit %d, output %q, recorded %q: %s", code, again, out, errs)
	}
	if took >= live {
		t.Errorf("the replay took %v, the live run %v: a replay fast-forwards the log's time", took, live)
	}
	fmt.Printf("live %v, replay %v\n%s", live.Round(time.Millisecond), took.Round(time.Millisecond), out)
}
