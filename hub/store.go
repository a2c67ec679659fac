package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The hub's keys in etcd, beside logd's streams.
const (
	prefix          = "/lockstep/hub/"
	servicePrefix   = prefix + "services/"
	providerPrefix  = prefix + "providers/"
	runPrefix       = prefix + "runs/"
	keptRuns        = 200 // the newest runs kept for the status page
	providerTimeout = 30 * time.Second
)

// Provider is a provider host as it announced itself.
type Provider struct {
	ID    string   `json:"id"`              // its key: the one it presents over TLS
	Name  string   `json:"name"`            // for verdicts and the status page
	Addr  string   `json:"addr"`            // where it serves jobs (HOST:PORT, TLS)
	Leaks []string `json:"leaks,omitempty"` // sources its host cannot make deterministic (lockstep doctor)
	// Running is how many replicas it runs now, by its own count.
	Running int       `json:"running"`
	Seen    time.Time `json:"seen"` // when it last announced itself
}

// live says whether p announced itself lately.
func (p Provider) live(now time.Time) bool { return now.Sub(p.Seen) < providerTimeout }

// Run is a run the hub guarded, as the status page shows it.
type Run struct {
	Stream    string    `json:"stream"`
	Service   string    `json:"service"`
	Requestor string    `json:"requestor"`
	Providers []string  `json:"providers"`
	Started   time.Time `json:"started"`
	Ended     time.Time `json:"ended,omitempty"`
	State     string    `json:"state"` // running, agreed, diverged, host limited, failed
	Detail    string    `json:"detail,omitempty"`
	// Divergence is the first log size where the replicas' reports
	// differ (0: none).
	Divergence uint64 `json:"divergence,omitempty"`
	In         int64  `json:"in"`  // bytes of input from the requestor
	Out        int64  `json:"out"` // verified bytes sent to it
}

// store keeps the hub's state in etcd: restarting the hub loses none.
type store struct{ cl *clientv3.Client }

func (s store) put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = s.cl.Put(ctx, key, string(b))
	return err
}

// list decodes every value under p into a new T each.
func list[T any](ctx context.Context, s store, p string) ([]T, error) {
	resp, err := s.cl.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var out []T
	for _, kv := range resp.Kvs {
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// register stores svc if it is the first of its name, or replaces the
// one held as Service.replaces allows; the check and the write are one
// transaction.
func (s store) register(ctx context.Context, svc Service) error {
	if err := svc.Check(); err != nil {
		return err
	}
	key := servicePrefix + svc.Name
	b, _ := json.Marshal(svc)
	for {
		resp, err := s.cl.Get(ctx, key)
		if err != nil {
			return err
		}
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(resp.Kvs) > 0 {
			var old Service
			if err := json.Unmarshal(resp.Kvs[0].Value, &old); err != nil {
				return err
			}
			if err := svc.replaces(old); err != nil {
				return err
			}
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)
		}
		t, err := s.cl.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return err
		}
		if t.Succeeded {
			return nil
		}
	}
}

// service is the service called name.
func (s store) service(ctx context.Context, name string) (Service, error) {
	resp, err := s.cl.Get(ctx, servicePrefix+name)
	if err != nil {
		return Service{}, err
	}
	if len(resp.Kvs) == 0 {
		all, err := s.services(ctx)
		if err != nil {
			return Service{}, err
		}
		var names []string
		for _, a := range all {
			names = append(names, a.Name)
		}
		return Service{}, unknown(name, names)
	}
	var svc Service
	err = json.Unmarshal(resp.Kvs[0].Value, &svc)
	return svc, err
}

func (s store) services(ctx context.Context) ([]Service, error) {
	return list[Service](ctx, s, servicePrefix)
}

func (s store) providers(ctx context.Context) ([]Provider, error) {
	return list[Provider](ctx, s, providerPrefix)
}

func (s store) announce(ctx context.Context, p Provider) error {
	return s.put(ctx, providerPrefix+p.ID, p)
}

// putRun stores r; a new run past keptRuns drops the oldest.
func (s store) putRun(ctx context.Context, r Run) error {
	if err := s.put(ctx, runPrefix+r.Started.UTC().Format("20060102T150405.000000000Z")+"-"+r.Stream, r); err != nil {
		return err
	}
	resp, err := s.cl.Get(ctx, runPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil || len(resp.Kvs) <= keptRuns {
		return err
	}
	_, err = s.cl.Delete(ctx, string(resp.Kvs[0].Key))
	return err
}

// runs are the kept runs, newest first.
func (s store) runs(ctx context.Context) ([]Run, error) {
	rs, err := list[Run](ctx, s, runPrefix)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Started.After(rs[j].Started) })
	return rs, err
}

// orphaned marks the runs a previous hub process left running: their
// guard is gone, so they ended when it did.
func (s store) orphaned(ctx context.Context) error {
	resp, err := s.cl.Get(ctx, runPrefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		var r Run
		if json.Unmarshal(kv.Value, &r) != nil || r.State != "running" {
			continue
		}
		r.State, r.Detail = "lost", "the hub stopped while it ran (its guard): the run ended with it"
		if err := s.put(ctx, string(kv.Key), r); err != nil {
			return err
		}
	}
	return nil
}
