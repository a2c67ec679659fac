package replicate

import (
	"context"
	"crypto/ed25519"
	"sync"
	"time"

	"github.com/lockstep-run/lockstep/logd"
	"golang.org/x/mod/sumdb/tlog"
)

// A provider that runs several replicas of one stream (all of them, for
// lockstep run on one host) fetches and verifies the stream once and
// hands the verified entries to each: a shared stream. Verification is the
// provider's, whichever replica it feeds, so sharing it trusts nothing
// more. A replica that falls more than maxSharedBytes behind the fastest
// reads on from its own follower.
type sharedStream struct {
	key     string // in its provider's streams
	c       *logd.Client
	stream  string
	trusted ed25519.PublicKey

	fetching chan struct{} // held (full) while one reader fetches for all

	mu      sync.Mutex
	f       *logd.Follower
	base    int64        // the sequence number of entries[0]
	entries []logd.Entry // verified, from base on
	bytes   int          // payload bytes in entries
	readers map[*streamReader]bool
}

// maxSharedBytes bounds the entries a shared stream keeps for its slowest
// reader.
const maxSharedBytes = 8 << 20

// streamReader is one replica's place in a shared stream.
type streamReader struct {
	s   *sharedStream
	pos int64 // the next entry to hand out

	own *logd.Follower // once it fell behind: its own, handing out from pos
}

// Next returns the next verified entries, waiting up to wait for more
// (logd.Follower.Next).
func (r *streamReader) Next(ctx context.Context, wait time.Duration) ([]logd.Entry, error) {
	if r.own != nil {
		return r.ownNext(ctx, wait)
	}
	s := r.s
	for {
		if es, behind := r.cached(); behind {
			return r.fallBehind(ctx, wait)
		} else if len(es) > 0 {
			return es, nil
		}
		if err := s.lockFetch(ctx); err != nil {
			return nil, err
		}
		s.mu.Lock()
		fresh := r.pos < s.base+int64(len(s.entries)) // or r is behind
		s.mu.Unlock()
		if fresh { // another reader fetched meanwhile
			<-s.fetching
			continue
		}
		// At most a second's wait while holding the fetch: Root waits
		// for it.
		es, err := s.f.Next(ctx, min(wait, time.Second))
		s.mu.Lock()
		s.entries = append(s.entries, es...)
		for _, e := range es {
			s.bytes += len(e.Payload)
		}
		s.mu.Unlock()
		<-s.fetching
		if err != nil || len(es) == 0 {
			return nil, err
		}
	}
}

// cached hands out the entries the stream holds from r's place on, and
// drops those every reader has passed, or those of readers too far behind.
func (r *streamReader) cached() (es []logd.Entry, behind bool) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.pos < s.base {
		return nil, true
	}
	es = s.entries[r.pos-s.base:]
	es = es[:len(es):len(es)]
	r.pos += int64(len(es))
	low := r.pos
	for o := range s.readers {
		if o.own == nil && o.pos < low && o != r {
			low = o.pos
		}
	}
	for s.base < low || s.bytes > maxSharedBytes && s.base < r.pos {
		// Not cleared: readers may hold the slots handed out. The array
		// goes when append moves the entries to a new one.
		s.bytes -= len(s.entries[0].Payload)
		s.entries = s.entries[1:]
		s.base++
	}
	return es, false
}

// fallBehind gives r its own follower, which starts from what the shared
// one has verified and fetches the entries from r's place on again.
func (r *streamReader) fallBehind(ctx context.Context, wait time.Duration) ([]logd.Entry, error) {
	s := r.s
	if err := s.lockFetch(ctx); err != nil {
		return nil, err
	}
	f, err := s.f.From(r.pos)
	<-s.fetching
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	r.own = f
	s.mu.Unlock()
	return r.ownNext(ctx, wait)
}

func (r *streamReader) ownNext(ctx context.Context, wait time.Duration) ([]logd.Entry, error) {
	es, err := r.own.Next(ctx, wait)
	r.pos += int64(len(es))
	return es, err
}

// Root is the tree hash over the stream's first n entries, n at most the
// verified size (logd.Follower.Root).
func (r *streamReader) Root(ctx context.Context, n int64) (tlog.Hash, error) {
	if r.own != nil {
		return r.own.Root(n)
	}
	if err := r.s.lockFetch(ctx); err != nil {
		return tlog.Hash{}, err
	}
	defer func() { <-r.s.fetching }()
	return r.s.f.Root(n)
}

// lockFetch takes the stream's follower (release: <-s.fetching).
func (s *sharedStream) lockFetch(ctx context.Context) error {
	select {
	case s.fetching <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// follow opens a reader of stream for one replica, sharing the stream
// with the provider's other replicas of it. unfollow ends the reader.
func (p *Local) follow(ctx context.Context, stream string, trusted ed25519.PublicKey) (*streamReader, error) {
	key := stream + " " + logd.EncodeKey(trusted)
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.streams[key]
	if s == nil {
		f, err := p.Logd.Follow(ctx, stream, trusted)
		if err != nil {
			return nil, err
		}
		s = &sharedStream{key: key, c: p.Logd, stream: stream, trusted: trusted, f: f,
			fetching: make(chan struct{}, 1), readers: map[*streamReader]bool{}}
		if p.streams == nil {
			p.streams = map[string]*sharedStream{}
		}
		p.streams[key] = s
	}
	r := &streamReader{s: s} // if s has dropped its first entries, r starts behind
	s.mu.Lock()
	s.readers[r] = true
	s.mu.Unlock()
	return r, nil
}

// unfollow ends r's reading: the stream no longer keeps entries for it,
// and is dropped with its last reader. r.Root still answers.
func (p *Local) unfollow(r *streamReader) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := r.s
	s.mu.Lock()
	delete(s.readers, r)
	empty := len(s.readers) == 0
	s.mu.Unlock()
	if empty && p.streams[s.key] == s {
		delete(p.streams, s.key)
	}
}
