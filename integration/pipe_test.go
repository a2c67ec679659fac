//go:build linux

package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPipeStreams: `gen | lockstep pipe IMG -- tr | lockstep pipe IMG --
// cat` with three replicas per stage moves 100 MiB: output flows before
// the input ends, every byte arrives, and each stage's memory stays
// bounded (its peak anonymous RSS is far below the data's size).
func TestPipeStreams(t *testing.T) {
	const total = 100 << 20
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	stage := func(args ...string) *exec.Cmd {
		cmd := exec.Command(lockstepBinary(t), append([]string{"pipe", "--address", sock, "--namespace", namespace, probeImage, "--"}, args...)...)
		cmd.Stderr = &lockedBuffer{}
		return cmd
	}
	s1 := stage("/bin/busybox", "tr", "a-z", "A-Z")
	s2 := stage("/bin/busybox", "cat")
	in, err := s1.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	mid, err := s1.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s2.Stdin = mid
	out, err := s2.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*exec.Cmd{s1, s2} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	peaks := []*peakRSS{watchRSS(s1.Process.Pid), watchRSS(s2.Process.Pid)}

	// The input: numbered lines; the expected output is them upper-cased.
	want := sha256.New()
	var inputDone time.Time
	var mu sync.Mutex
	go func() {
		w := bufio.NewWriterSize(in, 64<<10)
		n := 0
		for i := 0; n < total; i++ {
			line := fmt.Sprintf("line %09d of the lockstep pipe test: abcdefghijklmnopqrstuvwxyz\n", i)
			n += len(line)
			w.WriteString(line)
			want.Write([]byte(strings.ToUpper(line)))
		}
		w.Flush()
		in.Close()
		mu.Lock()
		inputDone = time.Now()
		mu.Unlock()
	}()
	got := sha256.New()
	first := make([]byte, 1)
	if _, err := io.ReadFull(out, first); err != nil {
		t.Fatalf("no output: %v; stage 1: %s; stage 2: %s", err, s1.Stderr, s2.Stderr)
	}
	firstAt := time.Now()
	got.Write(first)
	n, _ := io.Copy(got, out)
	n++
	err1, err2 := s1.Wait(), s2.Wait()
	for _, p := range peaks {
		p.stop()
	}
	if err1 != nil || err2 != nil {
		t.Fatalf("stage 1: %v: %s\nstage 2: %v: %s", err1, s1.Stderr, err2, s2.Stderr)
	}
	mu.Lock()
	streamed := firstAt.Before(inputDone)
	mu.Unlock()
	if !streamed {
		t.Errorf("the first output byte came only after the input had ended: not streaming")
	}
	if n < total || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("output: %d bytes, not the input's %d bytes upper-cased", n, total)
	}
	for i, p := range peaks {
		half, peak := len(p.series)/2, slices.Max(p.series)
		t.Logf("stage %d: peak anonymous RSS %d MiB for %d MiB through it (first half %d MiB, second half %d MiB)", i+1, peak, total>>20, slices.Max(p.series[:half]), slices.Max(p.series[half:]))
		if peak > 128 {
			t.Errorf("stage %d: peak anonymous RSS %d MiB: memory is not bounded", i+1, peak)
		}
	}
}

// peakRSS samples a process's anonymous resident memory.
type peakRSS struct {
	series []int64 // MiB
	done   chan struct{}
	wg     sync.WaitGroup
}

func watchRSS(pid int) *peakRSS {
	p := &peakRSS{done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			p.series = append(p.series, rssAnon(pid)>>20)
			select {
			case <-p.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return p
}

func (p *peakRSS) stop() { close(p.done); p.wg.Wait() }

func rssAnon(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "RssAnon:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// lockedBuffer is a bytes.Buffer safe for a process's writes and a test's
// reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
