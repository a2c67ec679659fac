package replicate

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// echo is a provider for the protocol's own test: it streams the job's
// arguments back as output.
type echo struct{}

func (echo) Name() string { return "echo" }
func (echo) Run(ctx context.Context, j Job, out Sink) (Result, error) {
	out.HostLeaks(j.Require)
	out.Stderr([]byte("to stderr"))
	out.Write([]byte(strings.Join(j.Args, " ")))
	out.Consumed(2)
	out.Waiting(1735689600e9)
	out.Response(7, []byte("HTTP/1.0 200 OK\r\n"))
	out.Finished(7)
	return Result{Exit: 4, Digest: "d"}, nil
}

type sink struct {
	bytes.Buffer
	consumed int64
	leaks    []string
	stderr   []byte
	waiting  int64
	conns    map[uint64]string // responses, and "$" once finished
}

func (s *sink) Response(conn uint64, p []byte) {
	if s.conns == nil {
		s.conns = map[uint64]string{}
	}
	s.conns[conn] += string(p)
}

func (s *sink) Finished(conn uint64)        { s.Response(conn, []byte("$")) }
func (s *sink) Dial(conn uint64, to string) { s.Response(conn, []byte("@"+to)) }

func (s *sink) Consumed(n int64) { s.consumed = n }

func (s *sink) HostLeaks(l []string) { s.leaks = l }

func (s *sink) Waiting(deadline int64) { s.waiting = deadline }

func (s *sink) Stderr(p []byte) { s.stderr = append(s.stderr, p...) }

// A provider runs jobs only for the clients allow lets through, and
// streams every kind of frame back.
func TestRemoteProtocol(t *testing.T) {
	srv := httptest.NewServer(Handler(echo{}, func(r *http.Request) error {
		if r.Header.Get("X-Test-Client") != "trusted" {
			return errors.New("not a client this provider trusts")
		}
		return nil
	}, func(string) error { return nil }))
	defer srv.Close()
	var out sink
	_, err := (&Remote{Addr: srv.URL}).Run(context.Background(), Job{Args: []string{"hi"}}, &out)
	if err == nil || !strings.Contains(err.Error(), "403 Forbidden: not a client this provider trusts") || out.Len() != 0 {
		t.Errorf("an untrusted client: %v, output %q", err, out.String())
	}
	trusted := &http.Client{Transport: header{"X-Test-Client", "trusted"}}
	res, err := (&Remote{Addr: srv.URL, HTTP: trusted}).Run(context.Background(), Job{Args: []string{"hi", "there"}, Require: []string{"rdtsc", "cpuid"}}, &out)
	if err != nil || res.Exit != 4 || out.String() != "hi there" || out.consumed != 2 || strings.Join(out.leaks, " ") != "rdtsc cpuid" || string(out.stderr) != "to stderr" || out.waiting != 1735689600e9 || out.conns[7] != "HTTP/1.0 200 OK\r\n$" {
		t.Errorf("a trusted client: %+v, %v, output %q, consumed %d, host leaks %q, responses %v", res, err, out.String(), out.consumed, out.leaks, out.conns)
	}
}

// header is a transport that adds one header.
type header [2]string

func (h header) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h[0], h[1])
	return http.DefaultTransport.RoundTrip(r)
}
