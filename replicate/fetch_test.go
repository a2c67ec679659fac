package replicate

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lineServer is a real TCP server: it reads a line, answers "got: LINE"
// and then everything else it reads, upper-cased, until the client shuts
// its side; then it closes.
func lineServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				l, _ := r.ReadString('\n')
				c.Write([]byte("got: " + l))
				rest, _ := io.ReadAll(r)
				c.Write([]byte(strings.ToUpper(string(rest))))
			}()
		}
	}()
	return ln.Addr().String()
}

// TestRemoteFetch: a provider makes a connection for the guard over the
// provider protocol, both ways at once: the guard's bytes reach the
// remote as they are written (the remote answers the first line before
// the guard's side is shut), the remote's come back, and its close ends
// the stream. A refused dial is the errno; an untrusted client is refused.
func TestRemoteFetch(t *testing.T) {
	addr := lineServer(t)
	srv := httptest.NewServer(Handler(echo{}, func(r *http.Request) error {
		if r.Header.Get("X-Test-Client") != "trusted" {
			return errors.New("not trusted")
		}
		return nil
	}, func(string) error { return nil }))
	defer srv.Close()
	p := &Remote{Addr: srv.URL, HTTP: &http.Client{Transport: header{"X-Test-Client", "trusted"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := p.Fetch(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cancel() // it bounds the dial only
	s.Write([]byte("hello\n"))
	r := bufio.NewReader(s)
	if l, err := r.ReadString('\n'); l != "got: hello\n" {
		t.Fatalf("first answer %q, %v", l, err)
	}
	s.Write([]byte("more"))
	s.CloseWrite()
	rest, err := io.ReadAll(r)
	if string(rest) != "MORE" || err != nil {
		t.Fatalf("rest %q, %v", rest, err)
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	if _, err := p.Fetch(context.Background(), closed); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("fetch of a closed port: %v, want ECONNREFUSED", err)
	}
	stranger := &Remote{Addr: srv.URL}
	if _, err := stranger.Fetch(context.Background(), addr); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("an untrusted client's fetch: %v", err)
	}
	// A provider not told to fetch makes no connection, and says so.
	none := httptest.NewServer(Handler(echo{}, nil, nil))
	defer none.Close()
	if _, err := (&Remote{Addr: none.URL}).Fetch(context.Background(), addr); err == nil || !strings.Contains(err.Error(), "--allow-fetch") {
		t.Errorf("a fetch from a provider without --allow-fetch: %v", err)
	}
}
