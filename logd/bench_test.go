package logd

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkAppend measures durable appends through lockstep-logd (HTTP,
// tree hashes, checkpoint check, one etcd transaction) against the bare
// etcd client writing the same bytes (one transaction of the same puts),
// in the same run, on one member and on three (processes on loopback).
// Each op is one batch of 64 entries of 128 bytes. It reports entries/s
// and the p99 latency of a batch. `make bench-logd`.
func BenchmarkAppend(b *testing.B) {
	bin := buildDaemon(b)
	for _, members := range []int{1, 3} {
		ds, clientURLs := startCluster(b, bin, members)
		const batch, size = 64, 128
		b.Run(fmt.Sprintf("logd/members=%d", members), func(b *testing.B) {
			ctx := context.Background()
			c := NewClient(ds[0].addr)
			k := key(b, 1)
			stream := fmt.Sprintf("bench%d", b.N)
			if err := c.Create(ctx, stream, k.Public().(ed25519.PublicKey)); err != nil {
				b.Fatal(err)
			}
			a, err := c.OpenAppender(ctx, stream, k)
			if err != nil {
				b.Fatal(err)
			}
			payload := []byte(strings.Repeat("x", size))
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				es := make([]Entry, batch)
				for j := range es {
					es[j] = Entry{Kind: KindInput, Time: int64(i), Payload: payload}
				}
				t0 := time.Now()
				if _, err := a.Append(ctx, es); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			report(b, lat, batch)
		})
		b.Run(fmt.Sprintf("etcd/members=%d", members), func(b *testing.B) {
			cl, err := clientv3.New(clientv3.Config{Endpoints: clientURLs, DialTimeout: 5 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			ctx := context.Background()
			val := strings.Repeat("x", size+8)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				// The same operations as an append: the entries, their
				// hashes packed in one key, the head and its checkpoint copy.
				ops := make([]clientv3.Op, 0, batch+3)
				for j := 0; j < batch; j++ {
					ops = append(ops, clientv3.OpPut(fmt.Sprintf("/bare/%d/e/%016x", b.N, i*batch+j), val))
				}
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("/bare/%d/h/%016x", b.N, i), strings.Repeat("h", 32*2*batch)),
					clientv3.OpPut(fmt.Sprintf("/bare/%d/head", b.N), val),
					clientv3.OpPut(fmt.Sprintf("/bare/%d/c/%016x", b.N, i), val))
				t0 := time.Now()
				if _, err := cl.Txn(ctx).Then(ops...).Commit(); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			report(b, lat, batch)
		})
		for _, d := range ds {
			d.kill9()
		}
	}
}

func report(b *testing.B, lat []time.Duration, batch int) {
	var total time.Duration
	for _, l := range lat {
		total += l
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p99 := lat[len(lat)*99/100]
	b.ReportMetric(float64(len(lat)*batch)/total.Seconds(), "entries/s")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
}

func startCluster(b *testing.B, bin string, n int) ([]*daemon, []string) {
	dir := b.TempDir()
	var cluster, clients, peers []string
	for i := 0; i < n; i++ {
		c, p := fmt.Sprintf("http://127.0.0.1:%d", freePort(b)), fmt.Sprintf("http://127.0.0.1:%d", freePort(b))
		clients, peers = append(clients, c), append(peers, p)
		cluster = append(cluster, fmt.Sprintf("m%d=%s", i, p))
	}
	ds := make([]*daemon, n)
	errs := make(chan error, n)
	for i := range ds {
		ds[i] = newDaemon(b, "--name", fmt.Sprintf("m%d", i), "--data-dir", filepath.Join(dir, fmt.Sprint(i)),
			"--client-url", clients[i], "--peer-url", peers[i], "--initial-cluster", strings.Join(cluster, ","))
		go func() { errs <- ds[i].start(b, bin) }()
	}
	for range ds {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	return ds, clients
}
