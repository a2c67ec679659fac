package logd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// freePort returns a free loopback port for a daemon that a test starts
// with its address on the command line (a cluster's peers must know each
// other's). The port is released before the daemon binds it, so it is
// taken below the kernel's ephemeral range, which connect() draws from:
// an ephemeral port taken by any test's connection in between failed a
// bind in CI.
func freePort(t testing.TB) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &low)
	}
	for range 100 {
		port := 10000 + rand.IntN(max(low-10000, 1))
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			l.Close()
			return port
		}
	}
	t.Fatalf("no free port below %d", low)
	return 0
}

// startLogd runs one embedded etcd member and the API on loopback.
func startLogd(t testing.TB) *Client {
	t.Helper()
	m := Member{Dir: t.TempDir()}
	e, cl, err := StartEmbedded(m)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(NewStore(cl)))
	t.Cleanup(func() { srv.Close(); cl.Close(); e.Close() })
	return NewClient(srv.URL)
}

// newStream creates stream, signed by k, and opens its appender.
func newStream(t testing.TB, c *Client, stream string, k ed25519.PrivateKey) *Appender {
	t.Helper()
	ctx := context.Background()
	if err := c.Create(ctx, stream, k.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	a, err := c.OpenAppender(ctx, stream, k)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func inputs(n int, from int64) []Entry {
	es := make([]Entry, n)
	for i := range es {
		es[i] = Entry{Kind: KindInput, Time: from + int64(i), Payload: []byte(fmt.Sprintf("chunk %d", from+int64(i)))}
	}
	return es
}

func TestAppendFollowVerdict(t *testing.T) {
	c := startLogd(t)
	ctx := context.Background()
	k := key(t, 1)
	pub := k.Public().(ed25519.PublicKey)
	if err := c.Create(ctx, "svc", pub); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, "svc", pub); !errors.Is(err, ErrExists) {
		t.Errorf("second create: %v", err)
	}
	a, err := c.OpenAppender(ctx, "svc", k)
	if err != nil {
		t.Fatal(err)
	}
	for b := 0; b < 3; b++ {
		if _, err := a.Append(ctx, inputs(5, int64(b*5))); err != nil {
			t.Fatal(err)
		}
	}
	// A second appender that opened before is stale after the first moves on.
	stale, err := c.OpenAppender(ctx, "svc", k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Append(ctx, inputs(1, 15)); err != nil {
		t.Fatal(err)
	}
	if _, err := stale.Append(ctx, inputs(1, 16)); !errors.Is(err, ErrStale) {
		t.Errorf("stale writer: %v", err)
	}
	// A checkpoint signed by another key is refused.
	other := &Appender{c: c, stream: "svc", key: key(t, 2), tree: a.tree, last: a.last}
	if _, err := other.Append(ctx, inputs(1, 16)); err == nil {
		t.Error("an append signed by another key was accepted")
	}

	f, err := c.Follow(ctx, "svc", pub)
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.Next(ctx, 0)
	if err != nil || len(got) != 16 || string(got[15].Payload) != "chunk 15" {
		t.Fatalf("follow: %d entries, %v", len(got), err)
	}
	if _, err := c.Follow(ctx, "svc", key(t, 3).Public().(ed25519.PublicKey)); !errors.Is(err, ErrBadLog) {
		t.Errorf("follow with the wrong trusted key: %v", err)
	}
	// Subscribing: Next waits for the next append.
	go func() {
		time.Sleep(200 * time.Millisecond)
		a.Append(ctx, inputs(2, 16))
	}()
	got, err = f.Next(ctx, 5*time.Second)
	if err != nil || len(got) != 2 {
		t.Fatalf("subscription: %d entries, %v", len(got), err)
	}

	// Three replicas report digests; one differs at size 18.
	cp := f.Checkpoint()
	for i, d := range []string{"aa", "aa", "bb"} {
		r := Report{Stream: "svc", Replica: fmt.Sprintf("r%d", i), Size: cp.Size, Root: cp.Root, Digest: d}
		r.Sign(key(t, byte(10+i)))
		if err := c.Report(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	v, err := c.Verdict(ctx, "svc", 3)
	if err != nil || v.State != "diverged" || v.Size != 18 || len(v.Odd) != 1 || v.Odd[0] != "r2" {
		t.Errorf("verdict %+v, %v", v, err)
	}
	// A replica fed another log (another root) is refused.
	r := Report{Stream: "svc", Replica: "r0", Size: cp.Size, Digest: "aa"}
	r.Sign(key(t, 10))
	if err := c.Report(ctx, r); err == nil {
		t.Error("a report against another root was accepted")
	}
}

func TestVerdictStates(t *testing.T) {
	all := map[string]bool{"a": true, "b": true, "c": true}
	if v := judge(map[int64]map[string]string{4: {"a": "x", "b": "x", "c": "x"}, 8: {"a": "y", "b": "y"}}, nil, all, 3); v.State != "agree" || v.Size != 4 {
		t.Errorf("%+v", v)
	}
	if v := judge(map[int64]map[string]string{4: {"a": "x"}}, nil, all, 3); v.State != "pending" {
		t.Errorf("%+v", v)
	}
	if v := judge(map[int64]map[string]string{4: {"a": "x", "b": "y"}}, nil, all, 3); v.State != "diverged" || len(v.Odd) != 2 {
		t.Errorf("tie: %+v", v)
	}
	// Final reports are compared whatever the sizes they were made at.
	if v := judge(nil, map[string]string{"a": "x", "b": "x"}, all, 3); v.State != "pending" {
		t.Errorf("two final reports of three: %+v", v)
	}
	if v := judge(nil, map[string]string{"a": "x", "b": "x", "c": "x"}, all, 3); v.State != "agree" || !v.Final {
		t.Errorf("three equal final reports: %+v", v)
	}
	if v := judge(nil, map[string]string{"a": "x", "b": "z", "c": "x"}, all, 3); v.State != "diverged" || !v.Final || len(v.Odd) != 1 || v.Odd[0] != "b" {
		t.Errorf("one differing final report: %+v", v)
	}
	// A divergence at a size comes first.
	if v := judge(map[int64]map[string]string{4: {"a": "x", "b": "x", "c": "y"}}, map[string]string{"a": "x", "b": "x", "c": "x"}, all, 3); v.State != "diverged" || v.Final || v.Size != 4 {
		t.Errorf("a divergence before the final reports: %+v", v)
	}
}

// Replicas of a program that exits before the end of its input may have
// been handed different numbers of entries: their final reports, made at
// different sizes, are compared with each other.
func TestFinalReports(t *testing.T) {
	c := startLogd(t)
	ctx := context.Background()
	k := key(t, 1)
	a := newStream(t, c, "svc", k)
	if _, err := a.Append(ctx, inputs(6, 0)); err != nil {
		t.Fatal(err)
	}
	f, err := c.Follow(ctx, "svc", k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Next(ctx, 0); err != nil {
		t.Fatal(err)
	}
	report := func(i int, size int64, digest string) error {
		root, err := f.Root(size)
		if err != nil {
			t.Fatal(err)
		}
		r := Report{Stream: "svc", Replica: fmt.Sprintf("r%d", i), Size: size, Root: root, Digest: digest, Final: true}
		r.Sign(key(t, byte(10+i)))
		return c.Report(ctx, r)
	}
	for i, size := range []int64{2, 5, 6} {
		if err := report(i, size, "aa"); err != nil {
			t.Fatal(err)
		}
	}
	v, err := c.Verdict(ctx, "svc", 3)
	if err != nil || v.State != "agree" || !v.Final {
		t.Errorf("final reports at sizes 2, 5, 6: %+v, %v", v, err)
	}
	if err := report(1, 5, "aa"); err != nil {
		t.Errorf("the same final report again: %v", err)
	}
	if err := report(1, 6, "bb"); err == nil || !strings.Contains(err.Error(), "already made its final report") {
		t.Errorf("a second, different final report: %v", err)
	}
	// A final report's flag is signed: a log server cannot make a partial
	// report final.
	root, _ := f.Root(3)
	r := Report{Stream: "svc", Replica: "r3", Size: 3, Root: root, Digest: "aa"}
	r.Sign(key(t, 13))
	r.Final = true
	if err := c.Report(ctx, r); err == nil || !strings.Contains(err.Error(), "bad signature") {
		t.Errorf("a report made final after signing: %v", err)
	}
}

// TestTraces: a replica's signed trace is kept and given back; a forged,
// a re-keyed, a second different or an oversized trace is refused.
func TestTraces(t *testing.T) {
	c := startLogd(t)
	ctx := context.Background()
	newStream(t, c, "svc", key(t, 1))
	cps := json.RawMessage(`[{"stream":"stdout","index":0,"start":0,"end":3,"digest":"ab"}]`)
	tr := Trace{Stream: "svc", Replica: "r0", Checkpoints: cps}
	tr.Sign(key(t, 10))
	if err := c.Trace(ctx, tr); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetTrace(ctx, "svc", "r0")
	if err != nil || !bytes.Equal(got.Checkpoints, cps) || got.Key != tr.Key {
		t.Fatalf("got %+v, %v", got, err)
	}
	if err := c.Trace(ctx, tr); err != nil {
		t.Errorf("the same trace again: %v", err)
	}
	if _, err := c.GetTrace(ctx, "svc", "r9"); !errors.Is(err, ErrNoTrace) {
		t.Errorf("no trace: %v", err)
	}
	refused := func(what string, tr Trace, want string) {
		t.Helper()
		if err := c.Trace(ctx, tr); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", what, err, want)
		}
	}
	other := Trace{Stream: "svc", Replica: "r0", Checkpoints: json.RawMessage(`[]`)}
	other.Sign(key(t, 10))
	refused("a different second trace", other, "already reported its trace")
	other.Sign(key(t, 11))
	refused("another key", other, "reported before with key")
	forged := tr
	forged.Replica = "r1"
	refused("a trace signed for another replica", forged, "bad signature")
	big := Trace{Stream: "svc", Replica: "r2", Checkpoints: json.RawMessage(`"` + strings.Repeat("x", MaxTrace) + `"`)}
	big.Sign(key(t, 12))
	refused("an oversized trace", big, "more than logd keeps")
	nostream := Trace{Stream: "nosuch", Replica: "r0", Checkpoints: cps}
	nostream.Sign(key(t, 10))
	refused("a trace of no stream", nostream, "no such stream")

	// A replica's digest reports and its trace share one key.
	a := newStream(t, c, "svc2", key(t, 2))
	cp, err := a.Append(ctx, inputs(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	r := Report{Stream: "svc2", Replica: "r0", Size: cp.Size, Root: cp.Root, Digest: "aa"}
	r.Sign(key(t, 20))
	if err := c.Report(ctx, r); err != nil {
		t.Fatal(err)
	}
	tr2 := Trace{Stream: "svc2", Replica: "r0", Checkpoints: cps}
	tr2.Sign(key(t, 21))
	refused("a trace under another key than the reports'", tr2, "reported before with key")
	tr2.Sign(key(t, 20))
	if err := c.Trace(ctx, tr2); err != nil {
		t.Errorf("a trace under the reports' key: %v", err)
	}
}

// A report's leaks are signed with it and reach the verdict, whose detail
// says a divergence may be the hosts'.
func TestReportLeaks(t *testing.T) {
	r := Report{Stream: "s", Replica: "a", Size: 1, Digest: "x", Leaks: []string{"rdtsc"}}
	r.Sign(key(t, 3))
	plain := r
	plain.Leaks = nil
	if !ed25519.Verify(mustKey(t, r.Key), r.text(), r.Sig) || ed25519.Verify(mustKey(t, r.Key), plain.text(), r.Sig) {
		t.Error("the leaks are not part of the signed text")
	}
	if d := HostLimited(map[string][]string{"b": {"rdtsc", "cpuid"}, "a": {"rdtsc"}}); !strings.HasPrefix(d, "the hosts of a (rdtsc), b (rdtsc, cpuid) cannot") {
		t.Errorf("detail: %s", d)
	}
}

func mustKey(t *testing.T, s string) ed25519.PublicKey {
	k, err := DecodeKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
