package serve

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
)

// elsewhere is a provider whose network takes every address to another
// server (it lies, or its network does): it dials to instead.
type elsewhere struct{ to string }

func (e elsewhere) Name() string { return "elsewhere" }
func (e elsewhere) Fetch(ctx context.Context, _ string) (replicate.Stream, error) {
	return (&replicate.Local{}).Fetch(ctx, e.to)
}

// until collects the gateway's entries up to outbound connection id's
// close entry and the end of each of its n fetches.
func until(t *testing.T, g *Gateway, id uint64, n int) (data string, fetches map[byte]int, close logd.Entry) {
	t.Helper()
	fetches = map[byte]int{}
	for close.Kind == 0 || fetches['c'] < n {
		e := next(t, g)
		switch {
		case e.Kind == logd.KindFetch && logd.ConnID(e.Payload) == id:
			fetches[e.Payload[9]]++
		case e.Kind == logd.KindOpen && logd.ConnID(e.Payload) == id:
		case e.Kind == logd.KindData && logd.ConnID(e.Payload) == id:
			data += string(e.Payload[8:])
		case e.Kind == logd.KindClose && logd.ConnID(e.Payload) == id:
			close = e
		default:
			t.Fatalf("entry %v %q", e.Kind, e.Payload)
		}
	}
	return data, fetches, close
}

// TestFetchEach: with fetchers, every one makes the outbound connection,
// the log records each fetch, the replicas read what a majority of the
// fetches read, and the remote gets what a majority of the replicas
// sent, once per fetch; a fetch that read something else is named.
func TestFetchEach(t *testing.T) {
	addr, got := remote(t)       // "welcome\n"
	other, gotOther := remote(t) // the same greeting: the bytes differ after it
	g := New(nil, 3)
	defer g.Over()
	g.Allow, _ = ParsePolicy("127.0.0.1:*")
	g.Fetch = []replicate.Fetcher{&replicate.Local{ProviderName: "a"}, &replicate.Local{ProviderName: "b"}, elsewhere{other}}
	id := logd.EgressConn | 1
	for r := range 3 {
		g.Dial(r, id, addr)
	}
	for range 3 {
		if e := next(t, g); e.Kind != logd.KindFetch || e.Payload[9] != 'o' || binary.BigEndian.Uint32(e.Payload[10:]) != 0 {
			t.Fatalf("fetch entry %v %q", e.Kind, e.Payload)
		}
	}
	if e := next(t, g); e.Kind != logd.KindOpen || binary.BigEndian.Uint32(e.Payload[8:]) != 0 || string(e.Payload[12:]) != addr {
		t.Fatalf("open entry %v %q", e.Kind, e.Payload)
	}
	for r := range 3 {
		g.Response(r, id, []byte("GET /a\n"))
		g.Finished(r, id)
	}
	for _, ch := range []chan string{got, got, gotOther} {
		select {
		case p := <-ch:
			if p != "GET /a\n" {
				t.Errorf("a remote got %q", p)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a fetch's connection was not shut")
		}
	}
	data, fetches, close := until(t, g, id, 3)
	if data != "welcome\n" || len(close.Payload) != 8 || fetches['d'] != 3 || fetches['c'] != 3 {
		t.Errorf("data %q, close %q, fetch entries %v", data, close.Payload, fetches)
	}
	if e := g.egress(); e == nil || e.Mode != "providers" || e.Connections != 1 || len(e.Odd) != 0 {
		t.Errorf("egress %+v", e)
	}
}

// TestFetchEachDisagree: a fetch that reads other bytes is named and the
// replicas read the majority's; where the dials' results differ, the
// majority's result is the connect's.
func TestFetchEachDisagree(t *testing.T) {
	addr, _ := remote(t)
	other, _ := remoteSaying(t, "welcome, but elsewhere\n")
	closedLn, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := closedLn.Addr().String()
	closedLn.Close()

	g := New(nil, 3)
	defer g.Over()
	g.Allow, _ = ParsePolicy("127.0.0.1:*")
	g.Fetch = []replicate.Fetcher{&replicate.Local{}, elsewhere{other}, &replicate.Local{}}
	id := logd.EgressConn | 1
	for r := range 3 {
		g.Dial(r, id, addr)
	}
	for e := next(t, g); e.Kind != logd.KindOpen; e = next(t, g) {
	}
	for r := range 3 {
		g.Finished(r, id)
	}
	data, _, _ := until(t, g, id, 3)
	if data != "welcome\n" {
		t.Errorf("data %q, want the majority's", data)
	}
	if e := g.egress(); len(e.Odd) != 1 || !strings.HasPrefix(e.Odd[0], "elsewhere: it read other bytes than the majority of the fetches: outbound connection 1: ") {
		t.Errorf("odd fetches %q", e.Odd)
	}

	// Two of three fetches find the port closed: the connect is refused.
	g.Fetch[1] = elsewhere{addr}
	g.Fetch[0], g.Fetch[2] = elsewhere{closed}, elsewhere{closed}
	id++
	for r := range 3 {
		g.Dial(r, id, addr)
	}
	for {
		e := next(t, g)
		if e.Kind == logd.KindOpen {
			if syscall.Errno(binary.BigEndian.Uint32(e.Payload[8:])) != syscall.ECONNREFUSED {
				t.Errorf("open %q, want ECONNREFUSED", e.Payload)
			}
			break
		}
	}
	if e := g.egress(); len(e.Odd) != 2 || !strings.Contains(e.Odd[1], "its dial got a connection, the majority's connection refused") {
		t.Errorf("odd fetches %q", e.Odd)
	}
}
