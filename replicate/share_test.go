package replicate

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/logd"
)

// served counts the entry fetches a logd served, and the lowest entry
// asked for since minFrom was last set.
type served struct {
	fetches, minFrom atomic.Int64
}

// sharedLog starts an embedded logd, appends n entries of size bytes each
// to a new stream, and returns a client, the stream, its key, what logd
// has served, and a function that appends more.
func sharedLog(t *testing.T, n, size int) (*logd.Client, string, ed25519.PublicKey, *served, func(n int)) {
	t.Helper()
	m := logd.Member{Dir: t.TempDir()}
	e, cl, err := logd.StartEmbedded(m)
	if err != nil {
		t.Fatal(err)
	}
	var sv served
	api := logd.NewServer(logd.NewStore(cl))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/entries") {
			sv.fetches.Add(1)
			from, _ := strconv.ParseInt(r.URL.Query().Get("from"), 10, 64)
			for low := sv.minFrom.Load(); from < low && !sv.minFrom.CompareAndSwap(low, from); low = sv.minFrom.Load() {
			}
		}
		api.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { srv.Close(); cl.Close(); e.Close() })
	c := logd.NewClient(srv.URL)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ctx := context.Background()
	if err := c.Create(ctx, "s", pub); err != nil {
		t.Fatal(err)
	}
	a, err := c.OpenAppender(ctx, "s", priv)
	if err != nil {
		t.Fatal(err)
	}
	appendN := func(n int) {
		for range n {
			i := a.Size()
			p := bytes.Repeat([]byte{byte(i)}, size)
			if _, err := a.Append(ctx, []logd.Entry{{Kind: logd.KindInput, Time: i, Payload: p}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(n)
	return c, "s", pub, &sv, appendN
}

// readAll reads n entries from r, after pause.
func readAll(ctx context.Context, r entrySource, n int, pause time.Duration) ([]logd.Entry, error) {
	time.Sleep(pause)
	var out []logd.Entry
	for len(out) < n {
		es, err := r.Next(ctx, time.Second)
		if err != nil {
			return out, err
		}
		out = append(out, es...)
	}
	return out, nil
}

// Three replicas of one stream on one provider fetch it once between them,
// each gets every entry in order, and each reports the same root as a
// follower of its own.
func TestSharedStream(t *testing.T) {
	const n, size = 60, 16 << 10
	c, stream, key, sv, _ := sharedLog(t, n, size)
	ctx := context.Background()

	alone, err := c.Follow(ctx, stream, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(ctx, alone, n, 0); err != nil {
		t.Fatal(err)
	}
	want, _ := alone.Root(n)
	one := sv.fetches.Load()

	p := &Local{Logd: c}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		r, err := p.follow(ctx, stream, key)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.unfollow(r)
			es, err := readAll(ctx, r, n, time.Duration(i)*10*time.Millisecond)
			if err == nil {
				for k, e := range es {
					if e.Seq != uint64(k) || len(e.Payload) != size || e.Payload[0] != byte(k) {
						err = fmt.Errorf("entry %d: seq %d, %d bytes of %d", k, e.Seq, len(e.Payload), e.Payload[0])
						break
					}
				}
			}
			if err == nil {
				var root [32]byte
				if root, err = r.Root(ctx, n); err == nil && root != want {
					err = fmt.Errorf("root %x, a follower of its own has %x", root, want)
				}
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	three := sv.fetches.Load() - one
	if three > one+2 {
		t.Errorf("three shared readers made %d fetches; one follower alone made %d", three, one)
	}
	if len(p.streams) != 0 {
		t.Errorf("%d shared streams left after their readers ended", len(p.streams))
	}
}

// A replica that falls more than maxSharedBytes behind reads on from its
// own follower, from where it was; the stream keeps no more than that for
// it.
func TestSharedStreamFallsBehind(t *testing.T) {
	const n, size = 96, 256 << 10 // 24 MiB, three times maxSharedBytes
	c, stream, key, sv, appendN := sharedLog(t, 16, size)
	ctx := context.Background()
	p := &Local{Logd: c}
	fast, _ := p.follow(ctx, stream, key)
	slow, _ := p.follow(ctx, stream, key)
	first, err := slow.Next(ctx, time.Second)
	if err != nil || len(first) != 16 {
		t.Fatalf("%d entries, %v", len(first), err)
	}
	appendN(n - 16)
	if _, err := readAll(ctx, fast, n, 0); err != nil {
		t.Fatal(err)
	}
	s := fast.s
	s.mu.Lock()
	kept := s.bytes
	s.mu.Unlock()
	if kept > maxSharedBytes+16*size {
		t.Errorf("the stream keeps %d bytes for its slow reader", kept)
	}
	sv.minFrom.Store(math.MaxInt64)
	rest, err := readAll(ctx, slow, n-len(first), 0)
	if err != nil {
		t.Fatal(err)
	}
	if slow.own == nil {
		t.Error("the slow reader still reads the shared stream")
	}
	if low := sv.minFrom.Load(); low < int64(len(first)) {
		t.Errorf("the slow reader's own follower fetched from entry %d: it fetched again what it had read (from %d on)", low, len(first))
	}
	for k, e := range append(first, rest...) {
		if e.Seq != uint64(k) || e.Payload[0] != byte(k) {
			t.Fatalf("entry %d: seq %d payload %d", k, e.Seq, e.Payload[0])
		}
	}
	root, err := slow.Root(ctx, n)
	want, _ := fast.Root(ctx, n)
	if err != nil || root != want {
		t.Errorf("root %x %v, want %x", root, err, want)
	}
}
