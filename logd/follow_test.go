package logd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// bigStream starts a logd with stream "big": 96 entries of 256 KiB (24
// MiB, three times maxHeld), each filled with its number, appended 4 at a
// time. It returns the client and the stream's key.
func bigStream(t *testing.T) (*Client, ed25519.PrivateKey) {
	t.Helper()
	c := startLogd(t)
	k := key(t, 1)
	a := newStream(t, c, "big", k)
	for b := 0; b < bigN; b += 4 {
		es := make([]Entry, 4)
		for i := range es {
			es[i] = Entry{Kind: KindInput, Time: int64(b + i), Payload: bytes.Repeat([]byte{byte(b + i)}, bigSize)}
		}
		if _, err := a.Append(context.Background(), es); err != nil {
			t.Fatal(err)
		}
	}
	return c, k
}

const bigN, bigSize = 96, 256 << 10

// A follower that starts far behind the head (here: 24 MiB of entries, all
// covered by the head's checkpoint) holds no more than maxHeld of them at
// once, and still hands out every entry, in order.
func TestFollowerMemoryBounded(t *testing.T) {
	c, k := bigStream(t)
	ctx := context.Background()
	const n, size = bigN, bigSize
	f, err := c.Follow(ctx, "big", k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	for next < n {
		es, err := f.Next(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if f.held+len(es)*size > maxHeld+followBatch*size {
			t.Fatalf("the follower holds %d bytes (and hands out %d): more than its bound %d", f.held, len(es)*size, maxHeld+followBatch*size)
		}
		if len(es) == 0 {
			t.Fatalf("no entries after %d of %d", next, n)
		}
		for _, e := range es {
			if e.Seq != uint64(next) || len(e.Payload) != size || e.Payload[0] != byte(next) {
				t.Fatalf("entry %d: seq %d, %d bytes of %d", next, e.Seq, len(e.Payload), e.Payload[0])
			}
			next++
		}
	}
}

// An entry fetched again (after it was verified but not kept) must be the
// one verified: a log server that changes it is caught.
func TestFollowerRefetchVerified(t *testing.T) {
	c, k := bigStream(t)
	ctx := context.Background()
	const n, size = bigN, bigSize
	// A proxy that serves the entries from 48 on with a changed last
	// byte the second time they are asked for (the first time, they are
	// received and hashed; the second, fetched again to be handed out).
	var mu sync.Mutex
	asked := map[string]int{}
	target := strings.TrimPrefix(c.Base, "http://")
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from := r.URL.Query().Get("from")
		mu.Lock()
		asked[from]++
		tamper := strings.HasSuffix(r.URL.Path, "/entries") && from == "48" && asked[from] == 2
		mu.Unlock()
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, "http://"+target+r.URL.RequestURI(), r.Body)
		req.Header = r.Header
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		b := body.Bytes()
		if tamper {
			b[len(b)-1] ^= 1
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(b)
	}))
	defer proxy.Close()
	f, err := NewClient(proxy.URL).Follow(ctx, "big", k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	handed := 0
	for {
		es, err := f.Next(ctx, 0)
		if err != nil {
			if !errors.Is(err, ErrBadLog) || !strings.Contains(err.Error(), "differs from the one verified") {
				t.Fatalf("after %d entries: %v; want the changed entry refused", handed, err)
			}
			if handed < 48 {
				t.Fatalf("refused after %d entries: before the changed ones", handed)
			}
			return
		}
		if len(es) == 0 {
			t.Fatalf("all %d entries handed out: the changed entry was not fetched again, or not caught", handed)
		}
		handed += len(es)
	}
}

// A follower made with From while its origin has received entries past
// its last verified checkpoint verifies them with the next checkpoint
// (it panicked: it lacked their times).
func TestFollowerFromUnverified(t *testing.T) {
	c := startLogd(t)
	k := key(t, 1)
	a := newStream(t, c, "s", k)
	ctx := context.Background()
	appendN := func(from, n int) {
		es := make([]Entry, n)
		for i := range es {
			es[i] = Entry{Kind: KindInput, Time: int64(from + i), Payload: []byte{byte(from + i)}}
		}
		if _, err := a.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
	}
	appendN(0, 3)
	f, err := c.Follow(ctx, "s", k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Next(ctx, 0); err != nil {
		t.Fatal(err)
	}
	appendN(3, 2)
	if err := f.receive(ctx, 0); err != nil { // received, not yet verified
		t.Fatal(err)
	}
	if f.tree.Size() != 5 || f.verified != 3 {
		t.Fatalf("the origin has %d entries, %d verified: want 5 and 3", f.tree.Size(), f.verified)
	}
	g, err := f.From(1)
	if err != nil {
		t.Fatal(err)
	}
	appendN(5, 1)
	var got []uint64
	for len(got) < 5 {
		es, err := g.Next(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			t.Fatalf("entries %v, then none", got)
		}
		for _, e := range es {
			got = append(got, e.Seq)
		}
	}
	if got[0] != 1 || got[4] != 5 {
		t.Errorf("entries %v: want 1 to 5", got)
	}
}
