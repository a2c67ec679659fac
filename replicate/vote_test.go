package replicate

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

const testK = 64 << 10

// syncBuffer is the run's stdout, written by the vote's loop.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// vote runs a vote of three replicas as Run does: the loop in its own
// goroutine; end ends the replicas and waits for the loop to finish.
type vote struct {
	*voter
	out   *syncBuffer
	ended chan struct{}
	err   chan error
}

func newVote(t *testing.T) *vote {
	out := &syncBuffer{}
	o := Options{Replicas: 3, Checkpoint: testK, Stdout: out, Providers: []Provider{&Local{ProviderName: "here"}}}
	v := &vote{voter: newVoter(o, func() {}), out: out, ended: make(chan struct{}), err: make(chan error, 1)}
	go func() { v.err <- v.loop(v.ended, nil) }()
	t.Cleanup(func() { v.stop("test over") })
	return v
}

func (v *vote) end(t *testing.T) {
	t.Helper()
	for _, r := range v.reps {
		r.finish(Result{}, nil)
	}
	close(v.ended)
	if err := <-v.err; err != nil {
		t.Fatal(err)
	}
}

// write gives replica i its output, as a container does, in pieces.
func (v *vote) write(i int, b []byte) {
	for len(b) > 0 {
		n := min(len(b), 10000)
		v.reps[i].Write(b[:n])
		b = b[n:]
	}
}

// writeAll writes the replicas' outputs at once, each in its goroutine.
func (v *vote) writeAll(outs ...[]byte) {
	var wg sync.WaitGroup
	for i, b := range outs {
		wg.Add(1)
		go func() { defer wg.Done(); v.write(i, b) }()
	}
	wg.Wait()
}

func (r *replica) state() (odd string, base int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.odd, r.base
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func output(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

// A replica in the vote that differs by one byte leaves it, and the
// report says which byte and shows it.
func TestVoteNamesTheFirstDifferingByte(t *testing.T) {
	v := newVote(t)
	want := output(200000)
	bad := bytes.Clone(want)
	bad[70000] = 'X'
	// replica-2 writes each piece first, so it is never behind: it votes.
	for i := 0; i < len(want); i += 10000 {
		v.write(2, bad[i:i+10000])
		v.write(0, want[i:i+10000])
		v.write(1, want[i:i+10000])
	}
	v.end(t)
	if got := v.out.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("released %d bytes, not the majority's 200000", len(got))
	}
	odd, _ := v.reps[2].state()
	for _, s := range []string{"bytes 65536..131072", "first difference at byte 70000", `the majority has "ijkl`, `the replica has "Xjkl`} {
		if !strings.Contains(odd, s) {
			t.Errorf("replica-2: %q does not say %q", odd, s)
		}
	}
	if v.reps[0].odd != "" || v.reps[1].odd != "" || !strings.Contains(v.fault, "replica-2 on here differ") {
		t.Errorf("the majority: %q %q; fault %q", v.reps[0].odd, v.reps[1].odd, v.fault)
	}
}

// A replica that is behind when the majority's output is released is
// checked against the released checkpoints' digests as its output
// arrives: it is named at the first checkpoint where it differs, not only
// at the end.
func TestVoteChecksALateReplicaAtEachCheckpoint(t *testing.T) {
	want := output(300000)
	majority := func(t *testing.T) *vote {
		v := newVote(t)
		v.writeAll(want, want)
		waitFor(t, "the majority's output", func() bool { return len(v.out.Bytes()) == 4*testK }) // all but the last, short checkpoint, released at the end
		return v
	}

	v := majority(t)
	bad := bytes.Clone(want)
	bad[150000] ^= 1
	v.write(2, bad[:140000])
	waitFor(t, "the late replica's first checkpoints", func() bool { _, base := v.reps[2].state(); return base == 2*testK })
	if odd, _ := v.reps[2].state(); odd != "" {
		t.Fatalf("named before its differing checkpoint: %s", odd)
	}
	v.write(2, bad[140000:200000])
	waitFor(t, "the late replica named", func() bool { odd, _ := v.reps[2].state(); return odd != "" })
	if odd, _ := v.reps[2].state(); !strings.Contains(odd, "bytes 131072..196608 (it was behind") {
		t.Errorf("late replica: %q", odd)
	}
	v.end(t)

	// A late replica that agrees is never named.
	v = majority(t)
	v.write(2, want)
	v.end(t)
	if odd, base := v.reps[2].state(); odd != "" || base != int64(len(want)) {
		t.Errorf("an agreeing late replica: %q, checked up to %d", odd, base)
	}
	// Every replica has passed the four full checkpoints: their digests
	// are dropped.
	if v.sumsFrom != 4 || len(v.sums) != 1 {
		t.Errorf("digests kept: from checkpoint %d, %d of them", v.sumsFrom, len(v.sums))
	}

	// A late replica whose output ends early is named at the checkpoint
	// it does not complete.
	v = majority(t)
	v.write(2, want[:250000])
	v.end(t)
	if odd, _ := v.reps[2].state(); !strings.Contains(odd, "bytes 196608..262144") {
		t.Errorf("a late replica that ended early: %q", odd)
	}
}

// A difference between replicas whose hosts could not make rdtsc
// deterministic names no replica odd: the verdict says the host can
// explain it. The same difference with no such host names the replica.
func TestVerdictHostLimited(t *testing.T) {
	for _, leaky := range []bool{false, true} {
		v := newVote(t)
		if leaky {
			for _, r := range v.reps {
				r.HostLeaks([]string{"rdtsc"})
			}
		}
		want := output(1000)
		bad := bytes.Clone(want)
		bad[10] = 'X'
		v.writeAll(want, want, bad)
		v.end(t)
		for _, r := range v.reps {
			r.res.Digest = r.digest.Sum(0)
		}
		out := v.verdict()
		if !leaky {
			if out.Agreed || out.HostLimited || len(out.Odd) != 1 || out.Replicas[2].State != "odd" {
				t.Errorf("no leaks: %+v", out)
			}
			continue
		}
		if out.Agreed || !out.HostLimited || len(out.Odd) != 0 || out.Replicas[2].State != "differs" ||
			!strings.HasPrefix(out.Detail, "host cannot make rdtsc deterministic") || len(out.Leaks) != 3 {
			t.Errorf("rdtsc leaks: %+v", out)
		}
		// A provider that signs a digest of other output is named whatever
		// its host.
		v.reps[1].res.Digest = "forged"
		if out := v.verdict(); len(out.Odd) != 1 || out.Odd[0] != "replica-1" || out.Replicas[1].State != "odd" {
			t.Errorf("a forged digest on a leaky host: %+v", out)
		}
	}
}

// A run whose replicas wrote nothing, two failing and the third stopped
// by the vote meanwhile, is a set-up failure naming the cause once.
func TestNoneRan(t *testing.T) {
	v := newVote(t)
	bad := errors.New(`image "nosuch": not found`)
	v.reps[0].finish(Result{}, context.Canceled)
	v.reps[1].finish(Result{}, bad)
	v.reps[2].finish(Result{}, bad)
	err := v.noneRan()
	if !errors.Is(err, ErrNoneRan) || strings.Count(err.Error(), "not found") != 1 || !strings.Contains(err.Error(), "replica-1 on here, replica-2 on here") {
		t.Errorf("%v", err)
	}
	v.reps[2].finish(Result{}, nil) // one ran
	if err := v.noneRan(); err != nil {
		t.Errorf("a replica ran: %v", err)
	}
}
