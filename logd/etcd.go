package logd

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// Member describes this process's embedded etcd member.
type Member struct {
	Name    string // member name (default "logd")
	Dir     string // data directory
	Client  string // client URL, e.g. http://127.0.0.1:2379; "" for any free loopback port
	Peer    string // peer URL, e.g. http://127.0.0.1:2380; "" for any free loopback port
	Cluster string // initial cluster "n1=http://...:2380,n2=..."; "" for one member
	Join    bool   // join an existing cluster instead of starting a new one
	Quiet   bool   // log only fatal errors (an embedded member of a command-line run)
}

// StartEmbedded starts one etcd member in this process (one member per
// process: DESIGN.md) and returns it with a client to it.
func StartEmbedded(m Member) (*embed.Etcd, *clientv3.Client, error) {
	cfg := embed.NewConfig()
	if m.Name != "" {
		cfg.Name = m.Name
	}
	cfg.Dir = m.Dir
	// Raft keeps the entries since its last snapshot in memory: snapshot
	// often, so that a long stream of large entries stays on disk.
	cfg.SnapshotCount, cfg.SnapshotCatchUpEntries = 25, 25
	cfg.LogLevel = "error"
	if m.Quiet {
		cfg.LogLevel = "fatal"
	}
	for _, u := range []struct {
		s   string
		dst *[]url.URL
	}{{m.Client, &cfg.ListenClientUrls}, {m.Client, &cfg.AdvertiseClientUrls}, {m.Peer, &cfg.ListenPeerUrls}, {m.Peer, &cfg.AdvertisePeerUrls}} {
		if u.s == "" {
			// etcd binds port 0 itself: a port picked and released
			// beforehand can be taken by any socket in between.
			u.s = "http://127.0.0.1:0"
		}
		parsed, err := url.Parse(u.s)
		if err != nil {
			return nil, nil, fmt.Errorf("url %q: %w", u.s, err)
		}
		*u.dst = []url.URL{*parsed}
	}
	if m.Cluster != "" {
		cfg.InitialCluster = m.Cluster
	} else {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		// A member alone has no peers to hear from: tick fast, so that it
		// elects itself in tens of milliseconds, not most of a second.
		cfg.TickMs, cfg.ElectionMs = 10, 100
	}
	if m.Join {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	cfg.InitialClusterToken = "lockstep-logd"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("start etcd in %s: %w", m.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, nil, fmt.Errorf("etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, nil, fmt.Errorf("etcd in %s did not become ready in 60 s (a cluster waits for a quorum of members)", m.Dir)
	}
	// The client calls the member's server in this process: no gRPC
	// encoding, HTTP/2 framing or loopback socket on the way.
	return e, v3client.New(e.Server), nil
}

// OpenEtcd connects to the etcd cluster at external (comma-separated
// endpoints) or, if that is "", starts member m in this process. close
// ends what it started.
func OpenEtcd(external string, m Member) (cl *clientv3.Client, close func(), err error) {
	if external != "" {
		cl, err = clientv3.New(clientv3.Config{Endpoints: strings.Split(external, ","), DialTimeout: 5 * time.Second})
		if err != nil {
			return nil, nil, err
		}
		return cl, func() { cl.Close() }, nil
	}
	e, cl, err := StartEmbedded(m)
	if err != nil {
		return nil, nil, err
	}
	return cl, func() { cl.Close(); e.Close() }, nil
}
