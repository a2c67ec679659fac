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
//	h/%016x         the tlog stored hashes an append added, from INDEX on
//	                (32 bytes each, concatenated: one key per append)
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
	mu     sync.Mutex // serializes appends to the stream through this process
	key    ed25519.PublicKey
	hashes []tlog.Hash
	rev    int64  // head revision the cache is at
	size   int64  // entries
	last   *Entry // entry size-1, nil for an empty stream
}

// NewStore uses the etcd client c.
func NewStore(c *clientv3.Client) *Store {
	return &Store{kv: c, cl: c, cache: map[string]*streamCache{}}
}

// MaxBatch is the most entries one append may carry: etcd allows 128
// operations in a transaction, and an append adds three to its entries.
const MaxBatch = 120

// Errors a client can act on.
var (
	ErrNoStream = errors.New("no such stream")
	ErrNoTrace  = errors.New("no such trace")
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

// hashes returns the stream's cached tree. It is reloaded from etcd when
// it does not hold need entries, or when reload is set (another process
// may have appended: the append transaction's revision check finds out).
func (s *Store) hashes(ctx context.Context, stream string, need int64, reload bool) (*streamCache, error) {
	s.mu.Lock()
	c := s.cache[stream]
	s.mu.Unlock()
	if c != nil && !reload && c.size >= need {
		return c, nil
	}
	key, err := s.Key(ctx, stream)
	if err != nil {
		return nil, err
	}
	head, rev, err := s.Head(ctx, stream)
	if err != nil {
		return nil, err
	}
	n := tlog.StoredHashCount(head.Size)
	c = &streamCache{key: key, rev: rev, size: head.Size, hashes: make([]tlog.Hash, 0, n)}
	p := prefix(stream) + "h/"
	if rev != 0 {
		resp, err := s.kv.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.Kvs {
			for v := kv.Value; len(v) >= tlog.HashSize; v = v[tlog.HashSize:] {
				c.hashes = append(c.hashes, tlog.Hash(v[:tlog.HashSize]))
			}
		}
	}
	if int64(len(c.hashes)) != n {
		return nil, fmt.Errorf("stream %s: %d stored hashes for size %d, want %d", stream, len(c.hashes), head.Size, n)
	}
	if head.Size > 0 {
		prev, err := s.Entries(ctx, stream, head.Size-1, 1)
		if err != nil || len(prev) != 1 {
			return nil, fmt.Errorf("stream %s: read entry %d: %v", stream, head.Size-1, err)
		}
		c.last = &prev[0]
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
	if len(records) == 0 {
		return Checkpoint{}, errors.New("append: no entries")
	}
	if len(records) > MaxBatch {
		return Checkpoint{}, fmt.Errorf("append: %d entries in one batch; at most %d (etcd's operations per transaction)", len(records), MaxBatch)
	}
	c, err := s.hashes(ctx, stream, 0, false)
	if err != nil {
		return Checkpoint{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.size != expect {
		// The cache may be behind another logd member's appends.
		if c, err = s.hashes(ctx, stream, 0, true); err != nil {
			return Checkpoint{}, err
		}
		if c.size != expect {
			return Checkpoint{}, fmt.Errorf("%w: it has %d entries, the writer expected %d", ErrStale, c.size, expect)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
	}
	// Extend the cached tree in place; undo on any failure.
	oldHashes, oldSize, oldLast := len(c.hashes), c.size, c.last
	undo := func() { c.hashes, c.size, c.last = c.hashes[:oldHashes], oldSize, oldLast }
	ops := make([]clientv3.Op, 0, len(records)+3)
	p := prefix(stream)
	for _, rec := range records {
		e, err := DecodeEntry(rec)
		if err == nil && e.Seq != uint64(c.size) {
			err = fmt.Errorf("sequence number %d", e.Seq)
		}
		if err == nil {
			err = checkOrder(c.last, &e)
		}
		var hs []tlog.Hash
		if err == nil {
			hs, err = tlog.StoredHashes(c.size, rec, c)
		}
		if err != nil {
			undo()
			return Checkpoint{}, fmt.Errorf("append: entry %d: %w", c.size, err)
		}
		c.hashes = append(c.hashes, hs...)
		ops = append(ops, clientv3.OpPut(p+fmt.Sprintf("e/%016x", c.size), string(rec)))
		c.size++
		c.last = &e
	}
	root, err := tlog.TreeHash(c.size, c)
	if err == nil && (cp.Stream != stream || cp.Size != c.size || cp.Root != root) {
		err = fmt.Errorf("append: the checkpoint (size %d, root %s) does not match the tree after the append (size %d, root %s)", cp.Size, cp.Root, c.size, root)
	}
	if err == nil {
		if err = cp.Verify(c.key); err != nil {
			err = fmt.Errorf("append: %w", err)
		}
	}
	if err == nil {
		if err = CheckTimes(Checkpoint{}, cp, []Entry{*c.last}); err != nil {
			err = fmt.Errorf("append: %w", err)
		}
	}
	if err != nil {
		undo()
		return Checkpoint{}, err
	}
	packed := make([]byte, 0, (len(c.hashes)-oldHashes)*tlog.HashSize)
	for _, h := range c.hashes[oldHashes:] {
		packed = append(packed, h[:]...)
	}
	head, _ := json.Marshal(cp)
	ops = append(ops, clientv3.OpPut(p+fmt.Sprintf("h/%016x", oldHashes), string(packed)),
		clientv3.OpPut(p+"head", string(head)), clientv3.OpPut(p+fmt.Sprintf("c/%016x", cp.Size), string(head)))
	resp, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(p+"head"), "=", c.rev)).Then(ops...).Commit()
	if err != nil {
		// Unknown outcome (the member may have died after committing):
		// forget the cache; the next append reloads it.
		undo()
		s.forget(stream)
		return Checkpoint{}, err
	}
	if !resp.Succeeded {
		undo()
		s.forget(stream)
		return Checkpoint{}, fmt.Errorf("%w: another writer appended first", ErrStale)
	}
	c.rev = resp.Header.Revision
	return cp, nil
}

func (s *Store) forget(stream string) {
	s.mu.Lock()
	delete(s.cache, stream)
	s.mu.Unlock()
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
	c, err := s.hashes(ctx, stream, size, false)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if size > c.size || i >= size || i < 0 {
		return nil, fmt.Errorf("no entry %d in a tree of size %d (the stream has %d)", i, size, c.size)
	}
	return tlog.ProveRecord(size, i, c)
}

// ConsistencyProof proves the tree of size old is a prefix of size.
func (s *Store) ConsistencyProof(ctx context.Context, stream string, old, size int64) (tlog.TreeProof, error) {
	c, err := s.hashes(ctx, stream, size, false)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
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
