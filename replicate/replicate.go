package replicate

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/shim"
)

// Options describe a replicated run.
type Options struct {
	Containerd string // containerd's socket
	Namespace  string
	Image      string
	Args       []string // the command; nil: the image's
	Replicas   int
	Seed       uint64
	Logd       *logd.Client // the input log
	Stream     string
	Stdin      io.Reader
	Stdout     io.Writer
	Checkpoint int // compare outputs every this many bytes

	// Replay, if set, is a recorded stream already imported into Logd:
	// the replicas read it instead of a new stream fed from Stdin.
	Replay *logd.Verified
}

// Verdict is how the run ended.
type Verdict struct {
	Agreed   bool         `json:"agreed"`
	ExitCode int          `json:"exit_code"` // the majority's
	Bytes    int64        `json:"bytes"`     // verified output bytes
	Odd      []string     `json:"odd,omitempty"`
	Detail   string       `json:"detail"`
	Log      logd.Verdict `json:"log_verdict"` // logd's verifier, from the replicas' signed reports
}

// replica is one container's output.
type replica struct {
	name string
	key  ed25519.PrivateKey
	mu   sync.Mutex
	out  []byte
	done bool
	code int
	err  error
}

func (r *replica) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.out = append(r.out, p...)
	r.mu.Unlock()
	return len(p), nil
}

// Run runs the replicas to their end.
func Run(ctx context.Context, o Options) (Verdict, error) {
	if o.Replicas < 1 {
		return Verdict{}, errors.New("run: want at least one replica")
	}
	if o.Checkpoint <= 0 {
		o.Checkpoint = 64 << 10
	}
	client, err := containerd.New(o.Containerd)
	if err != nil {
		return Verdict{}, fmt.Errorf("run: containerd at %s: %w", o.Containerd, err)
	}
	defer client.Close()
	ctx = namespaces.WithNamespace(ctx, o.Namespace)
	img, err := client.GetImage(ctx, o.Image)
	if err != nil {
		return Verdict{}, fmt.Errorf("run: image %s: %w (import it with ctr image import)", o.Image, err)
	}

	pub, appendErr, err := openLog(ctx, &o)
	if err != nil {
		return Verdict{}, err
	}

	reps := make([]*replica, o.Replicas)
	var wg sync.WaitGroup
	for i := range reps {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		reps[i] = &replica{name: fmt.Sprintf("replica-%d", i), key: k}
		wg.Add(1)
		go func(r *replica) {
			defer wg.Done()
			r.code, r.err = runReplica(ctx, client, img, o, r, pub)
			r.mu.Lock()
			r.done = true
			r.mu.Unlock()
		}(reps[i])
	}
	vote := newVoter(reps, o.Checkpoint, o.Stdout)
	stop := make(chan struct{})
	voted := make(chan struct{})
	go func() { vote.loop(stop); close(voted) }()
	wg.Wait()
	close(stop)
	<-voted
	if err := <-appendErr; err != nil {
		return Verdict{}, fmt.Errorf("run: input log: %w", err)
	}
	for _, r := range reps {
		if r.err != nil {
			return Verdict{}, fmt.Errorf("run: %s: %w", r.name, r.err)
		}
	}
	v := vote.finish()
	// Each replica signs the digest of its whole output against the log's
	// final checkpoint; logd's verifier gives its verdict too.
	info, err := o.Logd.Info(ctx, o.Stream)
	if err != nil {
		return v, err
	}
	for _, r := range reps {
		sum := sha256.Sum256(append(r.out, []byte("\x00exit "+strconv.Itoa(r.code))...))
		rep := logd.Report{Stream: o.Stream, Replica: r.name, Size: info.Checkpoint.Size, Root: info.Checkpoint.Root, Digest: hex.EncodeToString(sum[:])}
		rep.Sign(r.key)
		if err := o.Logd.Report(ctx, rep); err != nil {
			return v, fmt.Errorf("run: report %s's digest: %w", r.name, err)
		}
	}
	if v.Log, err = o.Logd.Verdict(ctx, o.Stream, o.Replicas); err != nil {
		return v, err
	}
	return v, nil
}

// openLog makes the run's input log: a fresh stream signed by a key of
// this run, fed from stdin, or the recorded stream of a replay. It returns
// the key replicas trust, and where the feeding ends.
func openLog(ctx context.Context, o *Options) (ed25519.PublicKey, chan error, error) {
	done := make(chan error, 1)
	if o.Replay != nil {
		o.Stream = o.Replay.Header.Stream
		pub, err := logd.DecodeKey(o.Replay.Header.Key)
		done <- err
		return pub, done, err
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	pub := key.Public().(ed25519.PublicKey)
	if err := o.Logd.Create(ctx, o.Stream, pub); err != nil {
		return nil, nil, err
	}
	app, err := o.Logd.OpenAppender(ctx, o.Stream, key)
	if err != nil {
		return nil, nil, err
	}
	go func() { done <- feedLog(ctx, app, o.Stdin) }()
	return pub, done, nil
}

// feedLog appends stdin to the log in entries of at most 64 KiB, each
// stamped with the log's clock, and an end entry at EOF.
func feedLog(ctx context.Context, app *logd.Appender, in io.Reader) error {
	buf := make([]byte, 64<<10)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if _, aerr := app.Append(ctx, []logd.Entry{{Kind: logd.KindInput, Time: time.Now().UnixNano(), Payload: append([]byte(nil), buf[:n]...)}}); aerr != nil {
				return aerr
			}
		}
		if err == io.EOF {
			_, err = app.Append(ctx, []logd.Entry{{Kind: logd.KindEnd, Time: time.Now().UnixNano()}})
			return err
		}
		if err != nil {
			return err
		}
	}
}

// runReplica runs one container whose stdin is the verified log.
func runReplica(ctx context.Context, client *containerd.Client, img containerd.Image, o Options, r *replica, trusted ed25519.PublicKey) (int, error) {
	id := fmt.Sprintf("%s-%s", o.Stream, r.name)
	opts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithAnnotations(map[string]string{shim.AnnotationSeed: strconv.FormatUint(o.Seed, 10)})}
	if len(o.Args) > 0 {
		opts = append(opts, oci.WithProcessArgs(o.Args...))
	}
	c, err := client.NewContainer(ctx, id, containerd.WithNewSnapshot(id, img), containerd.WithNewSpec(opts...),
		containerd.WithRuntime(shim.RuntimeName, nil))
	if err != nil {
		return 0, err
	}
	defer c.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup)
	f, err := o.Logd.Follow(ctx, o.Stream, trusted)
	if err != nil {
		return 0, err
	}
	pr, pw := io.Pipe()
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(pr, r, io.Discard)))
	if err != nil {
		return 0, err
	}
	defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill)
	status, err := task.Wait(ctx)
	if err != nil {
		return 0, err
	}
	if err := task.Start(ctx); err != nil {
		return 0, err
	}
	// Feed verified entries to the container's stdin until the end entry.
	feedErr := make(chan error, 1)
	go func() {
		for {
			es, err := f.Next(ctx, 10*time.Second)
			if err != nil {
				pw.CloseWithError(err)
				feedErr <- err
				return
			}
			for _, e := range es {
				if e.Kind == logd.KindEnd {
					pw.Close()
					task.CloseIO(ctx, containerd.WithStdinCloser)
					feedErr <- nil
					return
				}
				if e.Kind == logd.KindInput {
					if _, err := pw.Write(e.Payload); err != nil {
						feedErr <- nil // the command stopped reading
						return
					}
				}
			}
		}
	}()
	st := <-status
	if err := <-feedErr; err != nil {
		return 0, err
	}
	code, _, err := st.Result()
	if err != nil {
		return 0, err
	}
	return int(code), nil
}

// voter streams output a majority agrees on, checkpoint by checkpoint.
type voter struct {
	reps  []*replica
	k     int
	out   io.Writer
	sent  int64 // bytes released
	fault string
}

func newVoter(reps []*replica, k int, out io.Writer) *voter {
	return &voter{reps: reps, k: k, out: out}
}

func (v *voter) loop(stop chan struct{}) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		v.release(false)
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// release writes the next checkpoints a majority agrees on (at the end,
// also the last partial one).
func (v *voter) release(final bool) {
	need := len(v.reps)/2 + 1
	for v.fault == "" {
		end := v.sent + int64(v.k)
		votes := map[string][]int{}
		for i, r := range v.reps {
			r.mu.Lock()
			n := int64(len(r.out))
			var seg []byte
			if n >= end || (final && r.done) {
				seg = r.out[v.sent:min(end, n)]
			}
			r.mu.Unlock()
			if seg != nil {
				votes[string(seg)] = append(votes[string(seg)], i)
			}
		}
		var best string
		for s, who := range votes {
			if len(who) > len(votes[best]) {
				best = s
			}
		}
		if len(votes[best]) < need {
			if final && len(votes) > 1 {
				v.fault = fmt.Sprintf("no majority at bytes %d..", v.sent)
			}
			return
		}
		if len(votes) > 1 && v.fault == "" {
			// A majority agrees; the others differ here.
			v.fault = fmt.Sprintf("replicas differ at the checkpoint of bytes %d..%d", v.sent, end)
		}
		if best == "" {
			return
		}
		v.out.Write([]byte(best))
		v.sent += int64(len(best))
		if v.fault != "" {
			return
		}
	}
}

func (v *voter) finish() Verdict {
	v.release(true)
	need := len(v.reps)/2 + 1
	codes := map[int][]string{}
	for _, r := range v.reps {
		codes[r.code] = append(codes[r.code], r.name)
	}
	out := Verdict{Bytes: v.sent, ExitCode: 1}
	for code, who := range codes {
		if len(who) >= need {
			out.ExitCode = code
		}
	}
	// The odd replicas: whose output or exit status is not the majority's.
	var majority []byte
	groups := map[string][]*replica{}
	for _, r := range v.reps {
		k := string(r.out) + "\x00" + strconv.Itoa(r.code)
		groups[k] = append(groups[k], r)
		if len(groups[k]) >= need {
			majority = []byte(k)
		}
	}
	for _, r := range v.reps {
		if majority == nil || !bytes.Equal([]byte(string(r.out)+"\x00"+strconv.Itoa(r.code)), majority) {
			out.Odd = append(out.Odd, r.name)
		}
	}
	out.Agreed = majority != nil && len(out.Odd) == 0
	switch {
	case out.Agreed:
		out.Detail = fmt.Sprintf("%d replicas agree: %d bytes, exit status %d", len(v.reps), v.sent, out.ExitCode)
	case majority != nil:
		out.Detail = fmt.Sprintf("a majority agrees (%d bytes, exit status %d); %v differ: %s", v.sent, out.ExitCode, out.Odd, v.fault)
	default:
		out.Detail = "no majority: " + v.fault
	}
	return out
}
