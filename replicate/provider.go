package replicate

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/lockstep-run/lockstep/hostcap"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/shim"
)

// Job is one replica to run: a container of Image, whose stdin is the
// verified input stream and whose seed is the stream's seed entry.
type Job struct {
	Replica string `json:"replica"` // its name in the stream's reports
	Stream  string `json:"stream"`
	Key     string `json:"key"` // the stream's checkpoint key (logd.EncodeKey): trust no other
	Image   string `json:"image"`
	// Digest, if set, is the image's manifest digest: a provider whose
	// image of that name differs refuses the job.
	Digest string   `json:"digest,omitempty"`
	Args   []string `json:"args,omitempty"` // nil: the image's command
	// Require names sources (hostcap: rdtsc, cpuid) the provider's host
	// must make deterministic: one that cannot refuses the job.
	Require []string `json:"require,omitempty"`
	// Port, for a served stream (lockstep serve): its connections are
	// made to this TCP port in the container's network namespace.
	Port int `json:"port,omitempty"`
	// Replace: a container of this replica's name left behind by a guard
	// that stopped (its stream is being resumed) is removed first.
	Replace bool `json:"replace,omitempty"`
}

// Result is how a replica ended.
type Result struct {
	Exit   int    `json:"exit"`
	Digest string `json:"digest"` // Digest(output, exit), as reported to logd
	// Leaks are the sources the provider's host could not make
	// deterministic for this run (hostcap.Leaks), as signed in its report.
	Leaks []string `json:"leaks,omitempty"`
}

// Sink receives a replica's output and progress. Write may block: that is
// the back-pressure on the container's stdout.
type Sink interface {
	io.Writer
	Consumed(entries int64) // the container has read the stream's first entries
	// HostLeaks names, before the run starts, the sources the provider's
	// host cannot make deterministic (hostcap.Leaks), if any.
	HostLeaks(sources []string)
	// Stderr takes the container's stderr as it comes; it must not block
	// (the vote is on stdout: stderr is shown, not verified).
	Stderr(p []byte)
	// Waiting says the replica waits for the log's time to reach
	// deadline (Unix ns): the guard appends a tick when its clock does.
	Waiting(deadline int64)
	// Response takes the bytes the service sent on a served connection,
	// and Finished says it closed the connection (or never accepted it).
	// Neither may block for long: they come on the feed's one socket.
	Response(conn uint64, p []byte)
	Finished(conn uint64)
	// Dial asks the guard to make the program's connection conn out of
	// the run, to to (host:port): egress (docs/egress.md). Response and
	// Finished carry what the program sends on it.
	Dial(conn uint64, to string)
}

// digestingSink is a Sink that digests every byte it is given (the
// voter's replicas do, to check what their providers report): a provider
// in the same process reports that digest instead of computing its own
// over the same bytes.
type digestingSink interface {
	Sink
	Digest() *Digest
}

// A Provider runs replicas: containerd with the Lockstep runtime on one
// host (Local), or such a host over the network (Remote).
type Provider interface {
	Name() string
	Run(ctx context.Context, j Job, out Sink) (Result, error)
}

// Digest is a replica's output digest: sha256 over its output, the bytes
// its service sent on each served connection, and its exit status. Each
// provider signs it, at the stream's last checkpoint, in its report to
// logd.
type Digest struct {
	h     hash.Hash
	mu    sync.Mutex
	conns map[uint64]hash.Hash
}

func NewDigest() *Digest                      { return &Digest{h: sha256.New()} }
func (d *Digest) Write(p []byte) (int, error) { return d.h.Write(p) }

// Conn adds bytes the service sent on connection id.
func (d *Digest) Conn(id uint64, p []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conns == nil {
		d.conns = map[uint64]hash.Hash{}
	}
	h := d.conns[id]
	if h == nil {
		h = sha256.New()
		d.conns[id] = h
	}
	h.Write(p)
}

// Sum is the digest: sha256(sha256(output) | for each connection, in
// order of number: "conn N " sha256(its bytes) | "exit E"). A run with no
// connections digests as it did before they existed.
func (d *Digest) Sum(exit int) string {
	h := sha256.New()
	h.Write(d.h.Sum(nil))
	d.mu.Lock()
	ids := slices.Sorted(maps.Keys(d.conns))
	for _, id := range ids {
		h.Write([]byte("conn " + strconv.FormatUint(id, 10) + " "))
		h.Write(d.conns[id].Sum(nil))
	}
	d.mu.Unlock()
	h.Write([]byte("exit " + strconv.Itoa(exit)))
	return hex.EncodeToString(h.Sum(nil))
}

// Local runs replicas on the containerd at Containerd, reading streams
// from Logd and signing its reports with Key.
type Local struct {
	ProviderName string
	Containerd   string
	Namespace    string
	Logd         *logd.Client
	Key          ed25519.PrivateKey
	// Annotations are added to every container's (after the job's): the
	// provider's own settings, e.g. io.lockstep.memory.
	Annotations map[string]string

	once   sync.Once
	client *containerd.Client
	err    error

	mu      sync.Mutex
	streams map[string]*sharedStream // read for replicas running now
}

func (p *Local) Name() string { return p.ProviderName }

func (p *Local) containerd() (*containerd.Client, error) {
	p.once.Do(func() {
		p.client, p.err = containerd.New(p.Containerd)
		if p.err != nil {
			p.err = fmt.Errorf("containerd at %s: %w (is containerd running? give its socket with --address)", p.Containerd, p.err)
		}
	})
	return p.client, p.err
}

// Close closes the connection to containerd.
func (p *Local) Close() error {
	if p.client != nil {
		return p.client.Close()
	}
	return nil
}

// Run runs the job's container to its end: the stream's seed entry sets
// its seed, its input entries are its stdin, its stdout goes to out. Then
// it reports the signed digest of the output to logd.
func (p *Local) Run(ctx context.Context, j Job, out Sink) (Result, error) {
	leaks, err := hostcap.Leaks()
	if err != nil {
		return Result{}, err
	}
	if err := hostcap.Require(j.Require, leaks); err != nil {
		return Result{}, fmt.Errorf("provider %s: %w", p.Name(), err)
	}
	if len(leaks) > 0 {
		out.HostLeaks(leaks)
	}
	client, err := p.containerd()
	if err != nil {
		return Result{}, err
	}
	ctx = namespaces.WithNamespace(ctx, p.Namespace)
	img, err := client.GetImage(ctx, j.Image)
	if err != nil {
		return Result{}, fmt.Errorf("image %s: %w (import it with ctr image import)", j.Image, err)
	}
	if d := img.Target().Digest.String(); j.Digest != "" && d != j.Digest {
		return Result{}, fmt.Errorf("image %s is %s on provider %s, the run's is %s (import the run's image)", j.Image, d, p.Name(), j.Digest)
	}
	trusted, err := logd.DecodeKey(j.Key)
	if err != nil {
		return Result{}, err
	}
	f, err := p.follow(ctx, j.Stream, trusted)
	if err != nil {
		return Result{}, err
	}
	defer p.unfollow(f)
	first, rest, err := readSeed(ctx, f)
	if err != nil {
		return Result{}, err
	}
	// The container's stdin and clocks follow the stream, fed on a
	// socket its runtime connects to (package feed).
	ln, sock, closeFeed, err := listenFeed()
	if err != nil {
		return Result{}, err
	}
	defer closeFeed()
	// The run's clocks start at the log's: the time its first entry was
	// appended, the same on every replica and in every replay.
	annotations := map[string]string{
		shim.AnnotationSeed:  strconv.FormatUint(binary.BigEndian.Uint64(first.Payload), 10),
		shim.AnnotationEpoch: time.Unix(0, first.Time).UTC().Format(time.RFC3339Nano),
		shim.AnnotationInput: sock,
	}
	if j.Port != 0 {
		annotations[shim.AnnotationPort] = strconv.Itoa(j.Port)
	}
	for k, v := range p.Annotations {
		annotations[k] = v
	}
	opts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithAnnotations(annotations)}
	if len(j.Args) > 0 {
		opts = append(opts, oci.WithProcessArgs(j.Args...))
	}
	id := j.Stream + "-" + j.Replica
	if j.Replace {
		removeLeftover(ctx, client, id)
	}
	c, err := client.NewContainer(ctx, id, containerd.WithNewSnapshot(id, img), containerd.WithNewSpec(opts...),
		containerd.WithRuntime(shim.RuntimeName, nil))
	if err != nil {
		return Result{}, err
	}
	defer func() {
		// A task left behind (NewTask cancelled after containerd made
		// it) is killed first: a container with a task is not deleted.
		bg := context.WithoutCancel(ctx)
		if t, err := c.Task(bg, nil); err == nil {
			t.Delete(bg, containerd.WithProcessKill)
		}
		c.Delete(bg, containerd.WithSnapshotCleanup)
	}()

	// A sink that fails (the reader went away) must not stop the copy
	// from the container's stdout, or the container would block: the run
	// stops and the rest is discarded.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stdout := &guardedWriter{w: out, cancel: cancel}
	var digest *Digest
	var output io.Writer
	netOut := out
	if d, ok := out.(digestingSink); ok {
		digest, output = d.Digest(), stdout // the same bytes, digested once
	} else {
		digest = NewDigest()
		output = io.MultiWriter(digest, stdout)
		netOut = digestingResponses{out, digest}
	}
	// The container's FIFOs, read and written here without a copy between.
	fifos, err := cio.NewFIFOSetInDir("", id, false)
	if err != nil {
		return Result{}, err
	}
	dio, err := cio.NewDirectIO(ctx, fifos)
	if err != nil {
		return Result{}, err
	}
	task, err := c.NewTask(ctx, func(string) (cio.IO, error) { return dio, nil })
	if err != nil {
		dio.Cancel()
		dio.Close()
		return Result{}, err
	}
	defer task.Delete(context.WithoutCancel(ctx), containerd.WithProcessKill) // closes dio
	copied := make(chan struct{})
	go func() {
		io.CopyBuffer(output, dio.Stdout, make([]byte, 256<<10))
		close(copied)
	}()
	errCopied := make(chan struct{})
	go func() {
		io.CopyBuffer(stderrSink{out}, dio.Stderr, make([]byte, 32<<10))
		close(errCopied)
	}()
	dio.Stdin.Close() // the runtime feeds stdin from the socket
	status, err := task.Wait(ctx)
	if err != nil {
		return Result{}, err
	}
	conn, err := acceptFeed(ctx, ln)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	if err := task.Start(ctx); err != nil {
		return Result{}, err
	}
	fed := make(chan error, 1)
	var read int64 // entries the container has read
	feedCtx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	go func() {
		var err error
		read, err = serveFeed(feedCtx, conn, f, rest, netOut)
		if feedCtx.Err() != nil && ctx.Err() == nil {
			err = errStdinClosed // the container ended first
		}
		p.unfollow(f)
		fed <- err
	}()
	var st containerd.ExitStatus
	select {
	case st = <-status:
	case <-ctx.Done():
		task.Kill(context.WithoutCancel(ctx), 9)
		<-status
		return Result{}, context.Cause(ctx)
	}
	// Its output is complete when the shim has closed it: wait for that
	// before Delete, which closes the FIFOs.
	<-copied
	<-errCopied
	conn.Close() // the feeder stops if it still waits
	stopFeed()
	if _, err := task.Delete(context.WithoutCancel(ctx)); err != nil {
		return Result{}, err
	}
	if err := stdout.failed(); err != nil {
		return Result{}, err
	}
	if err := <-fed; err != nil && !errors.Is(err, errStdinClosed) {
		return Result{}, fmt.Errorf("input stream: %w", err)
	}
	code, _, err := st.Result()
	if err != nil {
		return Result{}, err
	}
	res := Result{Exit: int(code), Digest: digest.Sum(int(code)), Leaks: leaks}
	return res, p.report(context.WithoutCancel(ctx), j, f, read, res)
}

// report signs the replica's digest against the root of the entries its
// container read.
func (p *Local) report(ctx context.Context, j Job, f *streamReader, size int64, res Result) error {
	root, err := f.Root(ctx, size)
	if err != nil {
		return err
	}
	r := logd.Report{Stream: j.Stream, Replica: j.Replica, Size: size, Root: root, Digest: res.Digest, Final: true, Leaks: res.Leaks}
	r.Sign(p.Key)
	if err := p.Logd.Report(ctx, r); err != nil {
		return fmt.Errorf("report the digest: %w", err)
	}
	return nil
}

// digestingResponses digests a served service's responses on their way
// to a Sink that does not.
type digestingResponses struct {
	Sink
	d *Digest
}

func (s digestingResponses) Response(conn uint64, p []byte) {
	s.d.Conn(conn, p)
	s.Sink.Response(conn, p)
}

// stderrSink passes a container's stderr to its Sink.
type stderrSink struct{ out Sink }

func (s stderrSink) Write(p []byte) (int, error) {
	s.out.Stderr(p)
	return len(p), nil
}

// entrySource hands out a stream's verified entries: a logd.Follower, or
// a replica's reader of a shared stream.
type entrySource interface {
	Next(ctx context.Context, wait time.Duration) ([]logd.Entry, error)
}

// readSeed reads the stream's first entry, its seed (whose time is the
// run's start), and returns it and the entries that came with it.
func readSeed(ctx context.Context, f entrySource) (logd.Entry, []logd.Entry, error) {
	for {
		es, err := f.Next(ctx, 10*time.Second)
		if err != nil {
			return logd.Entry{}, nil, err
		}
		if len(es) == 0 {
			continue
		}
		if es[0].Kind != logd.KindSeed {
			return logd.Entry{}, nil, fmt.Errorf("%w: the stream's first entry is %s, not its seed", logd.ErrBadLog, es[0].Kind)
		}
		return es[0], es[1:], nil
	}
}

// guardedWriter passes writes on until one fails; then it cancels the run
// and swallows the rest.
type guardedWriter struct {
	w      io.Writer
	cancel context.CancelCauseFunc
	mu     sync.Mutex
	err    error
}

func (g *guardedWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		if _, err := g.w.Write(p); err != nil {
			g.err = fmt.Errorf("output: %w", err)
			g.cancel(g.err)
		}
	}
	return len(p), nil
}

func (g *guardedWriter) failed() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// removeLeftover kills and removes the container id, if there is one: a
// replica of a guard that stopped before its stream's end.
func removeLeftover(ctx context.Context, client *containerd.Client, id string) {
	c, err := client.LoadContainer(ctx, id)
	if err != nil {
		return
	}
	if t, err := c.Task(ctx, nil); err == nil {
		t.Delete(ctx, containerd.WithProcessKill)
	}
	c.Delete(ctx, containerd.WithSnapshotCleanup)
}
