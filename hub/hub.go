package hub

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-run/lockstep/hostcap"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Hub is the hub's server: the registry of services and providers and
// the guard of the runs of named services.
type Hub struct {
	Key  ed25519.PrivateKey
	Logd *logd.Client // the guard's own client of the logs (in process)
	// LogAPI serves the logs to the providers (logd.NewServer over the
	// same etcd): reads to every party, digest reports only to the
	// provider a replica was placed on.
	LogAPI http.Handler
	Tick   time.Duration // the log clock's resolution (default 10 ms)
	// ServeHost is the host whose ports the hub listens on for its
	// network services' clients (lockstep serve NAME).
	ServeHost string
	Log       func(string) // the hub's own messages

	st store

	mu       sync.Mutex
	assigned map[string]int               // provider ID -> replicas of runs in flight placed on it
	placed   map[string]map[string]string // stream -> replica -> the provider ID that runs it
}

// New is a hub keeping its state in cl.
func New(key ed25519.PrivateKey, cl *clientv3.Client, logs *logd.Client, api http.Handler) *Hub {
	return &Hub{Key: key, Logd: logs, LogAPI: api, st: store{cl}, assigned: map[string]int{}, placed: map[string]map[string]string{}}
}

// Recover marks the runs an earlier hub process left running as lost:
// call it once at start, before serving.
func (h *Hub) Recover(ctx context.Context) error { return h.st.orphaned(ctx) }

// ID is the hub's ID.
func (h *Hub) ID() string { return ID(h.Key.Public().(ed25519.PublicKey)) }

// Handler is the hub's API (served with ServerTLS: every client has a
// key). docs/hub.md lists it.
func (h *Hub) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/providers", h.announce)
	mux.HandleFunc("GET /v1/providers", func(w http.ResponseWriter, r *http.Request) { reply(w, r, h.st.providers) })
	mux.HandleFunc("POST /v1/services", h.register)
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) { reply(w, r, h.st.services) })
	mux.HandleFunc("GET /v1/services/{name}", h.service)
	mux.HandleFunc("GET /v1/runs", func(w http.ResponseWriter, r *http.Request) { reply(w, r, h.st.runs) })
	mux.HandleFunc("POST /v1/runs/{name}", h.run)
	mux.HandleFunc("POST /v1/serve/{name}", h.run)
	mux.Handle("GET /v1/streams/", h.LogAPI)
	mux.HandleFunc("POST /v1/streams/{stream}/digests", h.report)
	mux.HandleFunc("POST /v1/streams/{stream}/traces", h.report)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "the hub has no "+r.Method+" "+r.URL.Path+" (docs/hub.md)", http.StatusNotFound)
	})
	return mux
}

// reply writes what get returns as JSON.
func reply[T any](w http.ResponseWriter, r *http.Request, get func(context.Context) (T, error)) {
	v, err := get(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// announce takes a provider's announcement: it is known by the key it
// presented, so no provider can announce for another.
func (h *Hub) announce(w http.ResponseWriter, r *http.Request) {
	var p Provider
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&p); err != nil || p.Addr == "" {
		http.Error(w, fmt.Sprintf("bad announcement (want JSON with addr): %v", err), http.StatusBadRequest)
		return
	}
	p.ID, p.Seen = ID(Peer(r)), time.Now()
	if p.Name == "" {
		p.Name = p.ID[:8]
	}
	if err := h.st.announce(r.Context(), p); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Hub) register(w http.ResponseWriter, r *http.Request) {
	var s Service
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&s); err != nil {
		http.Error(w, "bad registration: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := h.st.register(r.Context(), s); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	h.say("service %s registered by %s: %s@%s, %d replicas", s.Name, s.Owner, s.Image, s.Digest, s.Replicas)
	w.WriteHeader(http.StatusCreated)
}

func (h *Hub) service(w http.ResponseWriter, r *http.Request) {
	s, err := h.st.service(r.Context(), r.PathValue("name"))
	if errors.Is(err, ErrUnknown) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	reply(w, r, func(context.Context) (Service, error) { return s, err })
}

// report passes a digest report or trace to the log API if the client
// is the provider its replica was placed on, reporting with its own key.
func (h *Hub) report(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var rep struct {
		Replica string `json:"replica"`
		Key     string `json:"key"`
	}
	json.Unmarshal(body, &rep)
	peer := Peer(r)
	h.mu.Lock()
	want, ok := h.placed[r.PathValue("stream")][rep.Replica]
	h.mu.Unlock()
	switch {
	case !ok:
		http.Error(w, fmt.Sprintf("%s of stream %s is no replica the hub placed in a run in flight", rep.Replica, r.PathValue("stream")), http.StatusForbidden)
		return
	case want != ID(peer):
		http.Error(w, fmt.Sprintf("%s runs on provider %s, not on %s: a provider reports only for its own replicas", rep.Replica, want, ID(peer)), http.StatusForbidden)
		return
	case strings.HasSuffix(r.URL.Path, "/digests") && rep.Key != logd.EncodeKey(peer):
		http.Error(w, "a digest report is signed with the key the provider presents", http.StatusForbidden)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	h.LogAPI.ServeHTTP(w, r)
}

// place chooses n providers for svc: live ones whose hosts make its
// required sources deterministic, never two replicas on one provider
// while another is free, the least loaded first.
func (h *Hub) place(ctx context.Context, svc Service) ([]Provider, error) {
	all, err := h.st.providers(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var ok []Provider
	var why []string
	for _, p := range all {
		switch err := hostcap.Require(svc.Require, p.Leaks); {
		case !p.live(now):
			why = append(why, fmt.Sprintf("%s last announced itself %s ago", p.Name, now.Sub(p.Seen).Round(time.Second)))
		case err != nil:
			why = append(why, fmt.Sprintf("%s: %v", p.Name, err))
		default:
			ok = append(ok, p)
		}
	}
	if len(ok) == 0 {
		if len(all) == 0 {
			return nil, errors.New("no provider has announced itself to the hub (lockstep provider --hub)")
		}
		return nil, fmt.Errorf("no provider can run %s: %s", svc.Name, strings.Join(why, "; "))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	load := func(p Provider) int { return p.Running + h.assigned[p.ID] }
	here := map[string]int{}
	var out []Provider
	for range svc.Replicas {
		slices.SortStableFunc(ok, func(a, b Provider) int {
			if c := here[a.ID] - here[b.ID]; c != 0 {
				return c
			}
			if c := load(a) - load(b); c != 0 {
				return c
			}
			return strings.Compare(a.Name, b.Name)
		})
		here[ok[0].ID]++
		h.assigned[ok[0].ID]++
		out = append(out, ok[0])
	}
	return out, nil
}

// release undoes place's count once the run ended.
func (h *Hub) release(ps []Provider, stream string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range ps {
		if h.assigned[p.ID]--; h.assigned[p.ID] <= 0 {
			delete(h.assigned, p.ID)
		}
	}
	delete(h.placed, stream)
}

// remotes are the providers as the guard reaches them: over TLS, each
// pinned to the key it announced.
func (h *Hub) remotes(ps []Provider) ([]replicate.Provider, error) {
	var out []replicate.Provider
	for _, p := range ps {
		k, err := ParseID(p.ID)
		if err != nil {
			return nil, err
		}
		c, err := HTTPClient(h.Key, k)
		if err != nil {
			return nil, err
		}
		out = append(out, &replicate.Remote{Addr: "https://" + p.Addr, HTTP: c, Label: p.Name})
	}
	return out, nil
}

func (h *Hub) say(format string, args ...any) {
	if h.Log != nil {
		h.Log(fmt.Sprintf(format, args...))
	}
}

// sortedNames is for messages.
func sortedNames(ps []Provider) string {
	var n []string
	for _, p := range ps {
		n = append(n, p.Name)
	}
	sort.Strings(n)
	return strings.Join(n, ", ")
}
