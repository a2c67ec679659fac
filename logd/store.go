package logd

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/mod/sumdb/tlog"
)

// Store keeps streams in etcd (embedded or a cluster). Keys, under
// /lockstep/streams/NAME/ (docs/log-d.md):
//
//	meta            {"key": appender public key}
//	head            the latest signed checkpoint (JSON)
//	e/%016x         entry SEQ, encoded (the record)
//	h/%016x         tlog stored hash INDEX (32 bytes)
//	c/%016x         the signed checkpoint of each append, by tree size
//	d/REPLICA/%016x a replica's signed digest report at a tree size
//
// An append is one etcd transaction, conditional on the head's revision:
// entries, their hashes and the new head are durable together (etcd
// fsyncs before it acknowledges), and a writer that is not at the head is
// refused.
type Store struct {
	kv clientv3.KV
	cl *clientv3.Client

	mu    sync.Mutex
	cache map[string]*streamCache // hashes of streams this process appended to or read
}

type streamCache struct {
	hashes []tlog.Hash
	rev    int64 // head revision the cache is at
	size   int64
}

// NewStore uses the etcd client c.
func NewStore(c *clientv3.Client) *Store {
	return &Store{kv: c, cl: c, cache: map[string]*streamCache{}}
}

// Errors a client can act on.
var (
	ErrNoStream = errors.New("no such stream")
	ErrExists   = errors.New("stream exists")
	ErrStale    = errors.New("stale writer: the stream has moved on")
)

func validName(s string) error {
	if s == "" || len(s) > 128 || strings.ContainsAny(s, "/ \n\t") {
		return fmt.Errorf("stream name %q: want 1 to 128 characters, no '/' or spaces", s)
	}
	return nil
}

func prefix(stream string) string { return "/lockstep/streams/" + stream + "/" }

type meta struct {
	Key string `json:"key"`
}

// Create makes an empty stream whose checkpoints key signs.
func (s *Store) Create(ctx context.Context, stream string, key ed25519.PublicKey) error {
	if err := validName(stream); err != nil {
		return err
	}
	m, _ := json.Marshal(meta{Key: EncodeKey(key)})
	p := prefix(stream)
	resp, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(p+"meta"), "=", 0)).
		Then(clientv3.OpPut(p+"meta", string(m))).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %s", ErrExists, stream)
	}
	return nil
}

// Key returns the stream's appender key.
func (s *Store) Key(ctx context.Context, stream string) (ed25519.PublicKey, error) {
	resp, err := s.kv.Get(ctx, prefix(stream)+"meta")
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoStream, stream)
	}
	var m meta
	if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil {
		return nil, err
	}
	return DecodeKey(m.Key)
}

// Head returns the stream's latest checkpoint (size 0 with a zero root for
// an empty stream) and the head key's revision.
func (s *Store) Head(ctx context.Context, stream string) (Checkpoint, int64, error) {
	p := prefix(stream)
	resp, err := s.kv.Txn(ctx).Then(clientv3.OpGet(p+"meta"), clientv3.OpGet(p+"head")).Commit()
	if err != nil {
		return Checkpoint{}, 0, err
	}
	if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		return Checkpoint{}, 0, fmt.Errorf("%w: %s", ErrNoStream, stream)
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return Checkpoint{Stream: stream}, 0, nil
	}
	var c Checkpoint
	if err := json.Unmarshal(kvs[0].Value, &c); err != nil {
		return Checkpoint{}, 0, fmt.Errorf("stream %s: head: %w", stream, err)
	}
	return c, kvs[0].ModRevision, nil
}

// hashes returns the stream's stored hashes at its head, from the cache
// when it is current.
func (s *Store) hashes(ctx context.Context, stream string) (*streamCache, error) {
	head, rev, err := s.Head(ctx, stream)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	c := s.cache[stream]
	s.mu.Unlock()
	if c != nil && c.rev == rev {
		return c, nil
	}
	n := tlog.StoredHashCount(head.Size)
	c = &streamCache{rev: rev, size: head.Size, hashes: make([]tlog.Hash, 0, n)}
	p := prefix(stream) + "h/"
	resp, err := s.kv.Get(ctx, p, clientv3.WithRange(p+fmt.Sprintf("%016x", n)), clientv3.WithRev(rev))
	if err != nil && rev != 0 {
		return nil, err
	}
	if resp != nil {
		for _, kv := range resp.Kvs {
			var h tlog.Hash
			copy(h[:], kv.Value)
			c.hashes = append(c.hashes, h)
		}
	}
	if int64(len(c.hashes)) != n {
		return nil, fmt.Errorf("stream %s: %d stored hashes for size %d, want %d", stream, len(c.hashes), head.Size, n)
	}
	s.mu.Lock()
	s.cache[stream] = c
	s.mu.Unlock()
	return c, nil
}

func (c *streamCache) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(c.hashes)) {
			return nil, fmt.Errorf("hash %d not stored", x)
		}
		out[i] = c.hashes[x]
	}
	return out, nil
}

// Append appends records (encoded entries) to a stream at size expect,
// with the appender's checkpoint of the new tree. It checks the records
// (sequence, order), recomputes the tree and refuses a checkpoint that
// does not match it or is not signed by the stream's key.
func (s *Store) Append(ctx context.Context, stream string, expect int64, records [][]byte, cp Checkpoint) (Checkpoint, error) {
	key, err := s.Key(ctx, stream)
	if err != nil {
		return Checkpoint{}, err
	}
	c, err := s.hashes(ctx, stream)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.size != expect {
		return Checkpoint{}, fmt.Errorf("%w: it has %d entries, the writer expected %d", ErrStale, c.size, expect)
	}
	if len(records) == 0 {
		return Checkpoint{}, errors.New("append: no entries")
	}
	var last *Entry
	if c.size > 0 {
		prev, err := s.Entries(ctx, stream, c.size-1, 1)
		if err != nil || len(prev) != 1 {
			return Checkpoint{}, fmt.Errorf("append: read entry %d: %v", c.size-1, err)
		}
		last = &prev[0]
	}
	// Extend a copy of the hashes; the cache changes only on success.
	next := &streamCache{hashes: append([]tlog.Hash(nil), c.hashes...), size: c.size}
	ops := make([]clientv3.Op, 0, 3*len(records)+1)
	p := prefix(stream)
	for _, rec := range records {
		e, err := DecodeEntry(rec)
		if err != nil {
			return Checkpoint{}, fmt.Errorf("append: entry %d: %w", next.size, err)
		}
		if e.Seq != uint64(next.size) {
			return Checkpoint{}, fmt.Errorf("append: entry %d has sequence number %d", next.size, e.Seq)
		}
		if err := checkOrder(last, &e); err != nil {
			return Checkpoint{}, fmt.Errorf("append: %w", err)
		}
		last = &e
		hs, err := tlog.StoredHashes(next.size, rec, next)
		if err != nil {
			return Checkpoint{}, err
		}
		for _, h := range hs {
			ops = append(ops, clientv3.OpPut(p+fmt.Sprintf("h/%016x", len(next.hashes)), string(h[:])))
			next.hashes = append(next.hashes, h)
		}
		ops = append(ops, clientv3.OpPut(p+fmt.Sprintf("e/%016x", next.size), string(rec)))
		next.size++
	}
	root, err := tlog.TreeHash(next.size, next)
	if err != nil {
		return Checkpoint{}, err
	}
	if cp.Stream != stream || cp.Size != next.size || cp.Root != root {
		return Checkpoint{}, fmt.Errorf("append: the checkpoint (size %d, root %s) does not match the tree after the append (size %d, root %s)", cp.Size, cp.Root, next.size, root)
	}
	if err := cp.Verify(key); err != nil {
		return Checkpoint{}, fmt.Errorf("append: %w", err)
	}
	head, _ := json.Marshal(cp)
	ops = append(ops, clientv3.OpPut(p+"head", string(head)), clientv3.OpPut(p+fmt.Sprintf("c/%016x", cp.Size), string(head)))
	resp, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(p+"head"), "=", c.rev)).Then(ops...).Commit()
	if err != nil {
		return Checkpoint{}, err
	}
	if !resp.Succeeded {
		return Checkpoint{}, fmt.Errorf("%w: another writer appended first", ErrStale)
	}
	next.rev = resp.Header.Revision
	s.mu.Lock()
	s.cache[stream] = next
	s.mu.Unlock()
	return cp, nil
}

// Entries returns up to n entries from seq on.
func (s *Store) Entries(ctx context.Context, stream string, seq, n int64) ([]Entry, error) {
	recs, err := s.Records(ctx, stream, seq, n)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, len(recs))
	for i, r := range recs {
		if out[i], err = DecodeEntry(r); err != nil {
			return nil, fmt.Errorf("stream %s: stored entry %d: %w", stream, seq+int64(i), err)
		}
	}
	return out, nil
}

// Records returns up to n encoded entries from seq on.
func (s *Store) Records(ctx context.Context, stream string, seq, n int64) ([][]byte, error) {
	p := prefix(stream) + "e/"
	resp, err := s.kv.Get(ctx, p+fmt.Sprintf("%016x", seq), clientv3.WithRange(p+fmt.Sprintf("%016x", seq+n)))
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		out[i] = kv.Value
	}
	return out, nil
}

// InclusionProof proves entry i is in the tree of the given size.
func (s *Store) InclusionProof(ctx context.Context, stream string, i, size int64) (tlog.RecordProof, error) {
	c, err := s.hashes(ctx, stream)
	if err != nil {
		return nil, err
	}
	if size > c.size || i >= size || i < 0 {
		return nil, fmt.Errorf("no entry %d in a tree of size %d (the stream has %d)", i, size, c.size)
	}
	return tlog.ProveRecord(size, i, c)
}

// ConsistencyProof proves the tree of size old is a prefix of size.
func (s *Store) ConsistencyProof(ctx context.Context, stream string, old, size int64) (tlog.TreeProof, error) {
	c, err := s.hashes(ctx, stream)
	if err != nil {
		return nil, err
	}
	if size > c.size || old > size || old < 0 {
		return nil, fmt.Errorf("no consistency proof from %d to %d (the stream has %d)", old, size, c.size)
	}
	return tlog.ProveTree(size, old, c)
}

// Wait blocks until the stream has more than size entries or ctx ends.
func (s *Store) Wait(ctx context.Context, stream string, size int64) error {
	head, rev, err := s.Head(ctx, stream)
	if err != nil || head.Size > size {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range s.cl.Watch(wctx, prefix(stream)+"head", clientv3.WithRev(rev+1)) {
		head, _, err := s.Head(ctx, stream)
		if err != nil || head.Size > size {
			return err
		}
	}
	return ctx.Err()
}

// Checkpoints returns every signed checkpoint of the stream, by size.
func (s *Store) Checkpoints(ctx context.Context, stream string) ([]Checkpoint, error) {
	p := prefix(stream) + "c/"
	resp, err := s.kv.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]Checkpoint, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		if err := json.Unmarshal(kv.Value, &out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}
