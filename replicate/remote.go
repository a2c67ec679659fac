package replicate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
)

// The provider protocol: POST /v1/replicas with a Job as JSON; the answer
// is a stream of frames, each a kind byte, a 4-byte big-endian length and
// the payload, until a result or error frame. See docs/run.md.
const (
	frameOutput   = 'o' // the container's stdout bytes
	frameConsumed = 'c' // 8 bytes: entries of the stream the container has read
	frameLeaks    = 'l' // the sources the host cannot make deterministic, comma-separated
	frameWaiting  = 'w' // 8 bytes: a deadline (Unix ns) the replica waits for the log's time to reach
	frameStderr   = 's' // the container's stderr bytes
	frameResponse = 'n' // 8 bytes of a served connection's number, then bytes its service sent
	frameFinished = 'f' // 8 bytes: the service closed that connection
	frameDial     = 'a' // 8 bytes of an outbound connection's number, then the address the program connected to
	frameResult   = 'r' // the Result as JSON; the last frame
	frameError    = 'e' // why the replica failed; the last frame

	maxFrame = 1 << 20
)

// Handler serves p's replicas over HTTP (lockstep provider, over TLS
// with both parties' keys). allow, if set, says whether the client of a
// job may run it (an error is its answer: 403). fetch, if set, says
// whether this host makes a run's outbound connection to an address for
// its guard (POST /v1/fetch; an error is its answer: 403); unset, it
// makes none.
func Handler(p Provider, allow func(*http.Request) error, fetch func(to string) error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/replicas", func(w http.ResponseWriter, r *http.Request) {
		if allow != nil {
			if err := allow(r); err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
		}
		var j Job
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&j); err != nil {
			http.Error(w, "bad job: "+err.Error(), http.StatusBadRequest)
			return
		}
		// Read the body to its end: only then does the server watch the
		// connection, so that a client that goes away cancels the job
		// (r.Context) even while its container writes nothing.
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		w.Header().Set("Content-Type", "application/x-lockstep-frames")
		w.WriteHeader(http.StatusOK)
		fw := &frameWriter{w: w, rc: http.NewResponseController(w)}
		res, err := p.Run(r.Context(), j, fw)
		if err != nil {
			fw.frame(frameError, []byte(err.Error()))
			return
		}
		b, _ := json.Marshal(res)
		fw.frame(frameResult, b)
	})
	mux.HandleFunc("POST /v1/fetch", func(w http.ResponseWriter, r *http.Request) {
		// The request's body streams while the answer does: an answer
		// goes out without waiting for its end.
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		err := errors.New("this provider makes no connections for runs (lockstep provider --allow-fetch HOST:PORT,... lets it)")
		if fetch != nil {
			err = fetch(r.URL.Query().Get("to"))
		}
		if allow != nil && err == nil {
			err = allow(r)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			rc.Flush()
			return
		}
		serveFetch(w, r)
	})
	mux.HandleFunc("GET /v1/provider", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"name": p.Name()})
	})
	return mux
}

// frameWriter is the Sink of a replica served over HTTP: a slow client
// blocks Write (TCP's back-pressure reaches the container's stdout).
type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
	rc *http.ResponseController
}

func (f *frameWriter) frame(kind byte, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := WriteFrame(f.w, kind, p); err != nil {
		return err
	}
	return f.rc.Flush()
}

// WriteFrame writes one frame of the provider protocol's form: a kind
// byte, a 4-byte big-endian length, the payload. The hub's protocol
// (package hub) has the same form.
func WriteFrame(w io.Writer, kind byte, p []byte) error {
	var h [5]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:], uint32(len(p)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

// FrameReader reads frames of WriteFrame's form.
type FrameReader struct {
	r   *bufio.Reader
	buf []byte
}

// NewFrameReader reads frames from r.
func NewFrameReader(r io.Reader) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, 64<<10), buf: make([]byte, 64<<10)}
}

// Next returns the next frame's kind and payload (valid until the next
// call). A stream that ends, at a frame's start or inside it, is
// io.ErrUnexpectedEOF: every stream of frames ends with a last frame.
func (fr *FrameReader) Next() (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(fr.r, h[:]); err != nil {
		return 0, nil, unexpected(err)
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("a frame of %d bytes (at most %d)", n, maxFrame)
	}
	if int(n) > len(fr.buf) {
		fr.buf = make([]byte, n)
	}
	b := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		return 0, nil, unexpected(err)
	}
	return h[0], b, nil
}

func (f *frameWriter) Write(p []byte) (int, error) {
	n0 := len(p)
	for len(p) > 0 {
		n := min(len(p), maxFrame)
		if err := f.frame(frameOutput, p[:n]); err != nil {
			return 0, err
		}
		p = p[n:]
	}
	return n0, nil
}

func (f *frameWriter) Consumed(n int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	f.frame(frameConsumed, b[:])
}

func (f *frameWriter) Waiting(deadline int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(deadline))
	f.frame(frameWaiting, b[:])
}

func (f *frameWriter) Stderr(p []byte) {
	for len(p) > 0 {
		n := min(len(p), maxFrame)
		if f.frame(frameStderr, p[:n]) != nil {
			return
		}
		p = p[n:]
	}
}

func (f *frameWriter) Response(conn uint64, p []byte) {
	f.frame(frameResponse, append(binary.BigEndian.AppendUint64(nil, conn), p...))
}

func (f *frameWriter) Dial(conn uint64, to string) {
	f.frame(frameDial, append(binary.BigEndian.AppendUint64(nil, conn), to...))
}

func (f *frameWriter) Finished(conn uint64) {
	f.frame(frameFinished, binary.BigEndian.AppendUint64(nil, conn))
}

func (f *frameWriter) HostLeaks(sources []string) {
	f.frame(frameLeaks, []byte(strings.Join(sources, ",")))
}

// Remote is a provider host running `lockstep provider`.
type Remote struct {
	Addr  string       // host:port or URL
	HTTP  *http.Client // over TLS, pinned to the provider's key (hub.HTTPClient)
	Label string       // its name in verdicts (default: Addr)
}

func (p *Remote) Name() string {
	if p.Label != "" {
		return p.Label
	}
	return strings.TrimPrefix(strings.TrimPrefix(p.Addr, "http://"), "https://")
}

func (p *Remote) base() string {
	if strings.Contains(p.Addr, "://") {
		return strings.TrimSuffix(p.Addr, "/")
	}
	return "http://" + p.Addr
}

// Run starts the job on the provider and passes its frames to out.
func (p *Remote) Run(ctx context.Context, j Job, out Sink) (Result, error) {
	body, _ := json.Marshal(j)
	req, err := http.NewRequestWithContext(ctx, "POST", p.base()+"/v1/replicas", bytes.NewReader(body))
	if err != nil {
		return Result{}, err
	}
	hc := p.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("provider %s: %w", p.Name(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return Result{}, fmt.Errorf("provider %s: %s: %s", p.Name(), resp.Status, strings.TrimSpace(string(msg)))
	}
	fr := NewFrameReader(resp.Body)
	for {
		kind, b, err := fr.Next()
		if err != nil {
			return Result{}, fmt.Errorf("provider %s: its connection broke off mid-run (%w): the provider process died, or the network to it failed", p.Name(), err)
		}
		n := len(b)
		switch kind {
		case frameOutput:
			if _, err := out.Write(b); err != nil {
				return Result{}, err
			}
		case frameConsumed:
			if n == 8 {
				out.Consumed(int64(binary.BigEndian.Uint64(b)))
			}
		case frameWaiting:
			if n == 8 {
				out.Waiting(int64(binary.BigEndian.Uint64(b)))
			}
		case frameStderr:
			out.Stderr(b)
		case frameResponse:
			if n >= 8 {
				out.Response(binary.BigEndian.Uint64(b), b[8:])
			}
		case frameFinished:
			if n == 8 {
				out.Finished(binary.BigEndian.Uint64(b))
			}
		case frameDial:
			if n >= 8 {
				out.Dial(binary.BigEndian.Uint64(b), string(b[8:]))
			}
		case frameLeaks:
			out.HostLeaks(strings.Split(string(b), ","))
		case frameResult:
			var res Result
			if err := json.Unmarshal(b, &res); err != nil {
				return Result{}, fmt.Errorf("provider %s: result: %w", p.Name(), err)
			}
			return res, nil
		case frameError:
			return Result{}, fmt.Errorf("provider %s: %s", p.Name(), b)
		default:
			return Result{}, fmt.Errorf("provider %s: unknown frame %q", p.Name(), kind)
		}
	}
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
