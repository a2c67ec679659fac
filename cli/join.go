package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
)

// joinServe starts one more replica of a served stream (lockstep serve
// --join STREAM): it reads the log from its start, with its sleeps
// fast-forwarded, then follows it live, to the stop entry. Its answers
// do not go to clients (the guard's vote has its replicas); its final
// report goes to logd, where it is judged with the guard's replicas'
// reports. Exit status 0: it reproduced every answer (its final digest is
// the majority's), 3: it differs, 4: it differs on a host that cannot
// make a source deterministic.
func joinServe(f *fleet, stream, name string, stdout, stderr io.Writer) int {
	const who = "serve --join"
	if *f.logdAddr == "" {
		return errorf(stderr, exitUsage, "%s: --logd ADDR is required: the logd the served stream is on (lockstep serve --logd ADDR prints its stream's name)", who)
	}
	if code := f.check(stderr); code >= 0 {
		return code
	}
	client, ps, closeFleet, code := f.open(stderr)
	if code >= 0 {
		return code
	}
	defer closeFleet()
	ctx, interrupted, stopSignals := cancelOnSignal()
	defer stopSignals()
	cfg, key, err := replicate.StreamConfig(ctx, client, stream)
	if err != nil {
		return errorf(stderr, exitUsage, "%s: %v", who, err)
	}
	if cfg.Port == 0 {
		return errorf(stderr, exitUsage, "%s: stream %s is not a served one (it has no port): lockstep replay re-checks a run", who, stream)
	}
	if name == "" {
		id := make([]byte, 3)
		rand.Read(id)
		name = "join-" + hex.EncodeToString(id)
	}
	answers := &joinedConns{}
	o := replicate.Options{
		Providers: ps, Image: cfg.Image, Args: cfg.Args, Digest: cfg.Digest, Port: cfg.Port,
		Replicas: 1, Logd: client, Stream: stream, Join: name, Key: key,
		Stdout: stdout, Net: answers, Require: f.required,
	}
	fmt.Fprintf(stderr, "lockstep %s: replica %s joins stream %s (%s on port %d): it replays the log, then follows it to its stop entry\n", who, name, stream, cfg.Image, cfg.Port)
	v, err := replicate.Run(ctx, o)
	if errors.Is(err, replicate.ErrInterrupted) {
		return errorf(stderr, 128+int(interrupted()), "%s: %v", who, err)
	}
	if err != nil {
		return errorf(stderr, exitRuntime, "%s: %v", who, err)
	}
	showStderr(stderr, f.name, *f.stderrMode, v)
	if len(v.Lost) > 0 {
		return errorf(stderr, exitRuntime, "%s: replica %s did not finish: %s", who, name, v.Replicas[0].Why)
	}
	conns, bytes := answers.counts()
	lv, err := judgeJoined(ctx, client, stream, name, cfg.Replicas)
	if err != nil {
		return errorf(stderr, exitRuntime, "%s: %v", who, err)
	}
	others := slices.DeleteFunc(slices.Clone(lv.Replicas), func(r string) bool { return r == name })
	switch {
	case lv.State == "agree":
		fmt.Fprintf(stderr, "lockstep %s: %s reproduced every answer: %d connections, %d bytes, exit status %d; its final digest is that of %v (log verdict: %s)\n", who, name, conns, bytes, v.ExitCode, others, lv.Detail)
		return 0
	case !slices.Contains(lv.Odd, name):
		fmt.Fprintf(stderr, "lockstep %s: %s reproduced the majority's answers (%d connections, %d bytes); log verdict: %s, %s; outside the majority: %v\n", who, name, conns, bytes, lv.State, lv.Detail, lv.Odd)
		return 0
	case len(lv.Leaks) > 0:
		fmt.Fprintf(stderr, "lockstep %s: NOT VERIFIED: %s differs from %v: %s\n", who, name, others, lv.Detail)
		return exitHostLimited
	}
	fmt.Fprintf(stderr, "lockstep %s: DIFFERS: %s did not reproduce the answers of %v (%d connections, %d bytes): %s\n", who, name, others, conns, bytes, lv.Detail)
	return 3
}

// judgeJoined waits for the final reports of a majority of the guard's
// replicas (want of them; a replica that died never reports), and a
// little longer for the rest, then returns logd's verdict on them and
// the joined one.
func judgeJoined(ctx context.Context, c *logd.Client, stream, name string, want int) (logd.Verdict, error) {
	need := max(want, 1)/2 + 1
	deadline := time.Now().Add(2 * time.Minute)
	var grace time.Time
	for {
		v, err := c.Verdict(ctx, stream, 1)
		if err != nil {
			return v, err
		}
		n := len(v.Replicas) - 1 // the others' final reports (serve's replicas make only those)
		switch {
		case n >= max(want, 1) || (!grace.IsZero() && time.Now().After(grace)):
			return c.Verdict(ctx, stream, n+1)
		case n >= need && grace.IsZero():
			grace = time.Now().Add(3 * time.Second)
		case time.Now().After(deadline):
			return v, fmt.Errorf("stream %s: %d of the guard's %d replicas have reported after 2 minutes: nothing to compare %s with yet (lockstep log verdict shows it later)", stream, n, want, name)
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// joinedConns is the Responder of a joined replica: it counts the
// answers (the provider digests them into its report); what it sends out
// of the run was sent by the guard's replicas, and the replies are in the
// log.
type joinedConns struct {
	mu    sync.Mutex
	conns map[uint64]bool
	bytes int64
}

func (j *joinedConns) Response(_ int, id uint64, p []byte) {
	if id&logd.EgressConn != 0 {
		return
	}
	j.mu.Lock()
	if j.conns == nil {
		j.conns = map[uint64]bool{}
	}
	j.conns[id] = true
	j.bytes += int64(len(p))
	j.mu.Unlock()
}

func (j *joinedConns) counts() (int, int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.conns), j.bytes
}

func (*joinedConns) Finished(int, uint64)     {}
func (*joinedConns) Dial(int, uint64, string) {}
func (*joinedConns) Gone(int)                 {}
