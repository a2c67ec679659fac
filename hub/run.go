package hub

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockstep-run/lockstep/ebpf"
	"github.com/lockstep-run/lockstep/replicate"
	"github.com/lockstep-run/lockstep/serve"
)

// A run of a named service (POST /v1/runs/NAME): the request body is a
// 4-byte big-endian length and a RunRequest as JSON, then the requestor's
// input until its end. The answer is a stream of frames (a kind byte, a
// 4-byte big-endian length, the payload): verified output as it is
// agreed, the guard's messages, and last the RunResult.
const (
	frameOutput  = 'o'
	frameMessage = 'm'
	frameResult  = 'r'
	frameServing = 'a' // a network service's address at the hub, once it serves
	maxFrame     = 1 << 20
	maxHead      = 1 << 16
)

// RunRequest is what a requestor asks of a run.
type RunRequest struct {
	Args       []string `json:"args,omitempty"` // appended to the service's command
	Seed       uint64   `json:"seed"`
	Checkpoint int      `json:"checkpoint,omitempty"` // compare outputs every this many bytes (default 64 KiB)
}

// RunResult is how a run ended: its verdict, or why it gave none.
type RunResult struct {
	Stream  string             `json:"stream"`
	Verdict *replicate.Verdict `json:"verdict,omitempty"`
	Error   string             `json:"error,omitempty"`
	Kind    string             `json:"kind,omitempty"`   // with Error: setup or interrupted
	Status  string             `json:"status,omitempty"` // a network service's: connections served
	// Answers are a network service's answers' digest chains, one stream
	// per connection ("conn N", as lockstep serve --record writes them),
	// for the requestor's record.
	Answers []ebpf.Checkpoint `json:"answers,omitempty"`
}

// run is the guard of one run: it places the replicas, appends the
// requestor's input to the log, votes, and sends the verified output
// back once.
func (h *Hub) run(w http.ResponseWriter, r *http.Request) {
	var req RunRequest
	if err := readHead(r.Body, &req); err != nil {
		http.Error(w, "bad run request: "+err.Error(), http.StatusBadRequest)
		return
	}
	svc, err := h.st.service(r.Context(), r.PathValue("name"))
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ErrUnknown) {
			code = http.StatusNotFound
		}
		http.Error(w, err.Error(), code)
		return
	}
	served := strings.HasPrefix(r.URL.Path, "/v1/serve/")
	switch {
	case served && svc.Port == 0:
		http.Error(w, fmt.Sprintf("service %s is not a network service (it was registered without --port): lockstep run or pipe it", svc.Name), http.StatusBadRequest)
		return
	case !served && svc.Port != 0:
		http.Error(w, fmt.Sprintf("service %s is a network service on port %d: lockstep serve it", svc.Name, svc.Port), http.StatusBadRequest)
		return
	}
	var ln net.Listener
	if served {
		if ln, err = net.Listen("tcp", net.JoinHostPort(h.ServeHost, "0")); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer ln.Close()
	}
	allow, err := serve.ParsePolicy(svc.AllowNet)
	if err != nil {
		http.Error(w, fmt.Sprintf("service %s: %v", svc.Name, err), http.StatusInternalServerError)
		return
	}
	ps, err := h.place(r.Context(), svc)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	id := make([]byte, 6)
	rand.Read(id)
	stream := svc.Name + "-" + hex.EncodeToString(id)
	defer h.release(ps, stream)
	remotes, err := h.remotes(ps)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h.mu.Lock()
	h.placed[stream] = map[string]string{}
	for i, p := range ps {
		h.placed[stream][fmt.Sprintf("replica-%d", i)] = p.ID
	}
	h.mu.Unlock()

	// The request body is read while the answer is written.
	if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-lockstep-frames")
	w.WriteHeader(http.StatusOK)
	fw := &frames{w: w, rc: http.NewResponseController(w)}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	in := &input{r: r.Body, gone: cancel}
	run := Run{Stream: stream, Service: svc.Name, Requestor: ID(Peer(r)), Started: time.Now(), State: "running"}
	for _, p := range ps {
		run.Providers = append(run.Providers, p.Name)
	}
	h.st.putRun(ctx, run)
	h.say("run %s of %s for %s on %s", stream, svc.Name, run.Requestor, sortedNames(ps))

	g := serve.New(ln, svc.Replicas)
	g.Allow = allow
	g.Log = func(s string) { fw.frame(frameMessage, []byte(s)) }
	o := replicate.Options{
		Providers: remotes, Image: svc.Image, Digest: svc.Digest, Args: append(append([]string(nil), svc.Args...), req.Args...),
		Replicas: svc.Replicas, Seed: req.Seed, Logd: h.Logd, Stream: stream, Require: svc.Require,
		TickEvery: h.Tick, Stdin: in, Stdout: fw, Checkpoint: req.Checkpoint,
		Entries: g.Entries(), Net: g,
	}
	var answers *tap
	if served {
		answers = &tap{cs: ebpf.NewChains(64 << 10)}
		g.Tap = answers.conn
		// The clients come to ln; the requestor's body is held open
		// while it keeps the service: its end (Ctrl-C) stops the
		// service at the log's stop entry, as lockstep serve's does.
		o.Stdin, o.Port = nil, svc.Port
		go g.Serve()
		go func() {
			io.Copy(io.Discard, in)
			g.Stop()
		}()
		fw.frame(frameServing, []byte(ln.Addr().String()))
	}
	if o.TickEvery == 0 {
		o.TickEvery = 10 * time.Millisecond
	}
	if o.Checkpoint == 0 {
		o.Checkpoint = 64 << 10
	}
	v, err := replicate.Run(ctx, o)
	g.Over()
	res := RunResult{Stream: stream, Status: g.Status()}
	if answers != nil {
		res.Answers = answers.finish()
	}
	run.Ended, run.In, run.Out = time.Now(), in.n.Load(), fw.out.Load()
	switch {
	case errors.Is(err, replicate.ErrInterrupted) || ctx.Err() != nil || fw.broken.Load():
		res.Error, res.Kind, run.State = "the requestor went away: the run was stopped and its replicas removed", "interrupted", "cancelled"
	case err != nil:
		res.Error, res.Kind, run.State = err.Error(), "setup", "failed"
	default:
		g.Judge(&v)
		res.Verdict = &v
		run.State, run.Detail = state(v), v.Detail
		if v.Log.State == "diverged" {
			run.Divergence = uint64(v.Log.Size)
		}
	}
	if run.Detail == "" {
		run.Detail = res.Error
	}
	h.st.putRun(context.WithoutCancel(ctx), run)
	h.say("run %s: %s: %s", stream, run.State, run.Detail)
	b, _ := json.Marshal(res)
	fw.frame(frameResult, b)
}

func state(v replicate.Verdict) string {
	switch {
	case v.HostLimited:
		return "host limited"
	case v.Agreed && len(v.Lost) == 0:
		return "agreed"
	case v.Agreed:
		return "agreed by a majority"
	}
	return "diverged"
}

// readHead reads the length-prefixed JSON head of a request body.
func readHead(r io.Reader, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	l := binary.BigEndian.Uint32(n[:])
	if l > maxHead {
		return fmt.Errorf("head of %d bytes", l)
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// input is the requestor's input: a body that breaks off (not a clean
// end) means the requestor went away, and the run is cancelled.
type input struct {
	r    io.Reader
	n    atomic.Int64
	gone func()
}

func (in *input) Read(p []byte) (int, error) {
	n, err := in.r.Read(p)
	in.n.Add(int64(n))
	if err != nil && err != io.EOF {
		in.gone()
	}
	return n, err
}

// frames writes the answer's frames; Write is verified output.
type frames struct {
	mu  sync.Mutex
	w   io.Writer
	rc  *http.ResponseController
	out atomic.Int64
	// broken: a write to the requestor failed (it went away).
	broken atomic.Bool
}

func (f *frames) frame(kind byte, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := replicate.WriteFrame(f.w, kind, p)
	if err == nil {
		err = f.rc.Flush()
	}
	if err != nil {
		f.broken.Store(true)
	}
	return err
}

func (f *frames) Write(p []byte) (int, error) {
	n0 := len(p)
	for len(p) > 0 {
		n := min(len(p), maxFrame)
		if err := f.frame(frameOutput, p[:n]); err != nil {
			return 0, err
		}
		f.out.Add(int64(n))
		p = p[n:]
	}
	return n0, nil
}

// tap digests a network service's answers, connection by connection, as
// the gateway sends them (from several goroutines).
type tap struct {
	mu sync.Mutex
	cs *ebpf.Chains
}

func (t *tap) conn(id uint64, p []byte) {
	t.mu.Lock()
	t.cs.Write(fmt.Sprintf("conn %d", id), p)
	t.mu.Unlock()
}

func (t *tap) finish() []ebpf.Checkpoint {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cs.Finish()
}
