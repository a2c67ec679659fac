package replicate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The providers' fetch mode (docs/egress.md): instead of the guard making
// a run's outbound connection once, every replica's provider makes it, and
// a majority of their replies decides what the replicas read. A provider
// fetches for the guard over the provider protocol: POST /v1/fetch?to=
// HOST:PORT, whose request body is what the majority of the replicas sent
// (streamed; its end shuts the connection's write side), and whose answer
// is frames: the dial's errno first, then the remote's bytes, then its end.
const (
	frameFetchOpen = 'o' // 4 bytes: the dial's errno (0: connected); with one that is not 0, the last frame
	frameFetchData = 'd' // bytes the remote sent
	frameFetchEnd  = 'x' // the remote closed its side: 4 bytes of errno (ECONNRESET) or none; the last frame
)

// Stream is a connection a provider made for the guard: Read gives what
// the remote sent (io.EOF at its close; syscall.ECONNRESET if it reset),
// Write sends to it, CloseWrite shuts the write side.
type Stream interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// A Fetcher makes a run's outbound connection to to (HOST:PORT, TCP) on
// its provider's host. ctx bounds the dial only.
type Fetcher interface {
	Name() string
	Fetch(ctx context.Context, to string) (Stream, error)
}

// Fetch dials to from this host.
func (p *Local) Fetch(ctx context.Context, to string) (Stream, error) {
	return dialTCP(ctx, to)
}

func dialTCP(ctx context.Context, to string) (Stream, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", to)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// serveFetch is the provider's side of POST /v1/fetch.
func serveFetch(w http.ResponseWriter, r *http.Request) {
	to := r.URL.Query().Get("to")
	if _, _, err := net.SplitHostPort(to); err != nil {
		http.Error(w, "bad fetch: to="+to+": "+err.Error(), http.StatusBadRequest)
		http.NewResponseController(w).Flush()
		return
	}
	w.Header().Set("Content-Type", "application/x-lockstep-frames")
	w.WriteHeader(http.StatusOK)
	fw := &frameWriter{w: w, rc: http.NewResponseController(w)}
	ctx, cancel := context.WithTimeout(r.Context(), FetchDialTimeout)
	c, err := dialTCP(ctx, to)
	cancel()
	if err != nil {
		fw.frame(frameFetchOpen, errnoBytes(DialErrno(err)))
		return
	}
	defer c.Close()
	if fw.frame(frameFetchOpen, errnoBytes(0)) != nil {
		return
	}
	go func() {
		io.Copy(c, r.Body) // what the replicas' majority sent
		c.CloseWrite()
	}()
	buf := make([]byte, 256<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 && fw.frame(frameFetchData, buf[:n]) != nil {
			return // the guard went away
		}
		if err != nil {
			var end []byte
			if errors.Is(err, syscall.ECONNRESET) {
				end = errnoBytes(syscall.ECONNRESET)
			}
			fw.frame(frameFetchEnd, end)
			return
		}
	}
}

// FetchDialTimeout bounds a provider's dial for the guard: past it the
// dial's result is ETIMEDOUT.
const FetchDialTimeout = 10 * time.Second

func errnoBytes(e syscall.Errno) []byte { return binary.BigEndian.AppendUint32(nil, uint32(e)) }

// DialErrno is what a failed dial says to the program's connect: its
// errno, ETIMEDOUT for a timeout, else ECONNREFUSED.
func DialErrno(err error) syscall.Errno {
	var ne net.Error
	var errno syscall.Errno
	switch {
	case errors.As(err, &errno):
		return errno
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return syscall.ETIMEDOUT
	}
	return syscall.ECONNREFUSED
}

// Fetch asks the provider to dial to and relay the connection.
func (p *Remote) Fetch(ctx context.Context, to string) (Stream, error) {
	pr, pw := io.Pipe()
	life, cancel := context.WithCancel(context.Background()) // the stream's, past ctx
	req, err := http.NewRequestWithContext(life, "POST", p.base()+"/v1/fetch?to="+url.QueryEscape(to), pr)
	if err != nil {
		cancel()
		return nil, err
	}
	stop := context.AfterFunc(ctx, cancel) // ctx bounds the dial
	hc := p.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("provider %s: %w", p.Name(), err)
	}
	s := &remoteStream{body: resp.Body, fr: NewFrameReader(resp.Body), w: pw, cancel: cancel}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		s.Close()
		return nil, fmt.Errorf("provider %s: fetch: %s: %s", p.Name(), resp.Status, strings.TrimSpace(string(msg)))
	}
	kind, b, err := s.fr.Next()
	if !stop() || err != nil || kind != frameFetchOpen || len(b) != 4 {
		s.Close()
		if err == nil {
			err = fmt.Errorf("frame %q", kind)
		}
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("provider %s: fetch: %w", p.Name(), err)
	}
	if errno := syscall.Errno(binary.BigEndian.Uint32(b)); errno != 0 {
		s.Close()
		return nil, errno
	}
	return s, nil
}

// remoteStream is a connection a remote provider made: its frames are
// read, and writes go to the request's body.
type remoteStream struct {
	body   io.Closer
	fr     *FrameReader
	w      *io.PipeWriter
	cancel func()
	rest   []byte
	err    error
	once   sync.Once
}

func (s *remoteStream) Read(p []byte) (int, error) {
	for len(s.rest) == 0 && s.err == nil {
		kind, b, err := s.fr.Next()
		switch {
		case err != nil:
			s.err = fmt.Errorf("the provider's connection broke off: %w", err)
		case kind == frameFetchData:
			s.rest = b
		case kind == frameFetchEnd && len(b) == 4:
			s.err = syscall.Errno(binary.BigEndian.Uint32(b))
		case kind == frameFetchEnd:
			s.err = io.EOF
		default:
			s.err = fmt.Errorf("the provider sent frame %q in a fetch", kind)
		}
	}
	if len(s.rest) > 0 {
		n := copy(p, s.rest)
		s.rest = s.rest[n:]
		return n, nil
	}
	return 0, s.err
}

func (s *remoteStream) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *remoteStream) CloseWrite() error           { return s.w.Close() }

func (s *remoteStream) Close() error {
	s.once.Do(func() {
		s.w.Close()
		s.cancel()
		s.body.Close()
	})
	return nil
}
