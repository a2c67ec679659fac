package hub

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"crypto/tls"
	"github.com/lockstep-run/lockstep/logd"
)

type testHub struct {
	*Hub
	addr string // ID@HOST:PORT
	stop func()
}

// startHub runs a hub over an embedded etcd member in dir, served with
// TLS on loopback.
func startHub(t *testing.T, dir string, key ed25519.PrivateKey) *testHub {
	t.Helper()
	e, cl, err := logd.StartEmbedded(logd.Member{Dir: dir, Quiet: true})
	if err != nil {
		t.Fatal(err)
	}
	api := logd.NewServer(logd.NewStore(cl))
	own := httptest.NewServer(api)
	h := New(key, cl, logd.NewClient(own.URL), api)
	srv := httptest.NewUnstartedServer(h.Handler())
	if srv.TLS, err = ServerTLS(key, nil); err != nil {
		t.Fatal(err)
	}
	srv.StartTLS()
	th := &testHub{Hub: h, addr: h.ID() + "@" + srv.Listener.Addr().String()}
	var once sync.Once
	th.stop = func() { once.Do(func() { srv.Close(); own.Close(); cl.Close(); e.Close() }) }
	t.Cleanup(th.stop)
	return th
}

func newKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func dial(t *testing.T, h *testHub, k ed25519.PrivateKey) *Client {
	c, err := Dial(h.addr, k)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var digest = "sha256:" + strings.Repeat("ab", 32)

// TestRegister: a signed registration is kept across a restart of the
// hub; a forged, replayed or foreign one is refused with the reason.
func TestRegister(t *testing.T) {
	dir, hubKey, owner := t.TempDir(), newKey(t), newKey(t)
	h := startHub(t, dir, hubKey)
	c := dial(t, h, owner)
	ctx := context.Background()
	reg := Registration{Name: "upper", Image: "docker.io/library/probe:1", Digest: digest, Args: []string{"tr", "a-z", "A-Z"}, Replicas: 3}
	first := Sign(reg, owner)
	if err := c.Register(ctx, first); err != nil {
		t.Fatal(err)
	}
	refused := func(what string, s Service, want string) {
		t.Helper()
		err := c.Register(ctx, s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error with %q", what, err, want)
		}
	}
	refused("replayed", first, "not newer")
	forged := Sign(reg, owner)
	forged.Args = []string{"rm", "-rf", "/"}
	refused("altered", forged, "forged or altered")
	refused("another owner", Sign(reg, newKey(t)), "owned by "+first.Owner)
	bad := reg
	bad.Digest = "latest"
	refused("no digest", Sign(bad, owner), "want sha256:")
	time.Sleep(time.Millisecond)
	reg.Replicas = 5
	if err := c.Register(ctx, Sign(reg, owner)); err != nil {
		t.Fatalf("the owner's newer registration: %v", err)
	}

	// A run in flight when the hub stops is lost with it.
	if err := h.st.putRun(ctx, Run{Stream: "upper-1", Service: "upper", Started: time.Now(), State: "running"}); err != nil {
		t.Fatal(err)
	}
	h.stop()
	h = startHub(t, dir, hubKey)
	if err := h.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if rs, err := h.st.runs(ctx); err != nil || len(rs) != 1 || rs[0].State != "lost" {
		t.Errorf("the run in flight after a restart: %+v, %v", rs, err)
	}
	c = dial(t, h, newKey(t))
	ss, err := c.Services(ctx)
	if err != nil || len(ss) != 1 || ss[0].Replicas != 5 || ss[0].Check() != nil {
		t.Fatalf("after a restart: %+v, %v", ss, err)
	}
	_, err = c.Service(ctx, "uper")
	if !IsUnknown(err) || !strings.Contains(err.Error(), "did you mean upper?") {
		t.Errorf("a misspelt name: %v", err)
	}
}

// TestPinned: a party that presents another key than the pinned one is
// refused, both ways.
func TestPinned(t *testing.T) {
	h := startHub(t, t.TempDir(), newKey(t))
	_, addr, _ := ParseAddr(h.addr)
	c, err := Dial(ID(newKey(t).Public().(ed25519.PublicKey))+"@"+addr, newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Services(context.Background()); err == nil || !strings.Contains(err.Error(), "not the pinned") {
		t.Errorf("a hub with another key: %v", err)
	}
	// A client without a key gets no answer.
	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure()}}
	if _, err := plain.Get("https://" + addr + "/v1/services"); err == nil {
		t.Error("a client without a certificate was served")
	}
	// A provider's server takes only the guard's key.
	guard, other := newKey(t), newKey(t)
	cfg, _ := ServerTLS(newKey(t), func(k ed25519.PublicKey) error {
		if !k.Equal(guard.Public().(ed25519.PublicKey)) {
			return fmt.Errorf("not the guard")
		}
		return nil
	})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, ID(Peer(r))) }))
	srv.TLS = cfg
	srv.StartTLS()
	defer srv.Close()
	providerKey := cfg.Certificates[0].PrivateKey.(ed25519.PrivateKey).Public().(ed25519.PublicKey)
	for _, k := range []ed25519.PrivateKey{guard, other} {
		hc, _ := HTTPClient(k, providerKey)
		resp, err := hc.Get(srv.URL)
		ok := err == nil && resp.StatusCode == 200
		if ok != k.Equal(guard) {
			t.Errorf("key %s: served %v (%v)", ID(k.Public().(ed25519.PublicKey)), ok, err)
		}
	}
}

// TestPlace: replicas go to distinct live providers that can run the
// service, the least loaded first; a provider reports only for its own
// replicas.
func TestPlace(t *testing.T) {
	h := startHub(t, t.TempDir(), newKey(t))
	ctx := context.Background()
	keys := map[string]ed25519.PrivateKey{}
	for i, leaks := range [][]string{nil, nil, {"rdtsc"}, nil} {
		k := newKey(t)
		name := fmt.Sprintf("p%d", i)
		keys[name] = k
		if err := dial(t, h, k).Announce(ctx, Provider{Name: name, Addr: fmt.Sprintf("10.0.0.%d:7440", i), Leaks: leaks, Running: i}); err != nil {
			t.Fatal(err)
		}
	}
	// p3 falls silent.
	old := Provider{ID: ID(keys["p3"].Public().(ed25519.PublicKey)), Name: "p3", Addr: "x", Seen: time.Now().Add(-time.Hour)}
	if err := h.st.announce(ctx, old); err != nil {
		t.Fatal(err)
	}
	names := func(ps []Provider) string {
		var n []string
		for _, p := range ps {
			n = append(n, p.Name)
		}
		return strings.Join(n, " ")
	}
	svc := Service{Registration: Registration{Name: "s", Replicas: 3}}
	ps, err := h.place(ctx, svc)
	if err != nil || names(ps) != "p0 p1 p2" {
		t.Errorf("3 replicas: %s, %v", names(ps), err)
	}
	h.release(ps, "")
	svc.Replicas = 5
	if ps, _ = h.place(ctx, svc); names(ps) != "p0 p1 p2 p0 p1" {
		t.Errorf("5 replicas on 3 providers: %s", names(ps))
	}
	h.release(ps, "")
	svc.Replicas, svc.Require = 3, []string{"rdtsc"}
	if ps, _ = h.place(ctx, svc); names(ps) != "p0 p1 p0" {
		t.Errorf("requiring rdtsc: %s", names(ps))
	}
	h.release(ps, "")
	svc.Require = []string{"cpuid"}
	if _, err := h.place(ctx, svc); err != nil {
		t.Errorf("cpuid: %v", err)
	}

	// Reports: only the placed provider, for its own replica.
	h.placed["s-1"] = map[string]string{"replica-0": ID(keys["p0"].Public().(ed25519.PublicKey))}
	post := func(k ed25519.PrivateKey, stream, replica string) error {
		c := dial(t, h, k)
		body := fmt.Sprintf(`{"stream":%q,"replica":%q,"key":%q}`, stream, replica, logd.EncodeKey(k.Public().(ed25519.PublicKey)))
		req, _ := http.NewRequest("POST", "https://"+c.Addr+"/v1/streams/"+stream+"/digests", bytes.NewReader([]byte(body)))
		resp, err := c.HTTP.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusForbidden {
			return answer(resp)
		}
		return nil
	}
	if err := post(keys["p1"], "s-1", "replica-0"); err == nil || !strings.Contains(err.Error(), "reports only for its own") {
		t.Errorf("p1 reporting for p0's replica: %v", err)
	}
	if err := post(keys["p0"], "s-2", "replica-0"); err == nil || !strings.Contains(err.Error(), "no replica the hub placed") {
		t.Errorf("a report for no run: %v", err)
	}
	if err := post(keys["p0"], "s-1", "replica-0"); err != nil {
		t.Errorf("p0 for its replica: refused: %v", err)
	}
}

func insecure() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }
