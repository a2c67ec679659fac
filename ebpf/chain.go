package ebpf

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"sync"

	"github.com/zeebo/blake3"
)

// Checkpoint is one link of a stream's digest chain: the digest of
// everything before it and of bytes [Start, End) of the stream.
type Checkpoint struct {
	Stream string `json:"stream"`
	Index  int    `json:"index"`
	Start  int64  `json:"start"`
	End    int64  `json:"end"`
	Digest string `json:"digest"`             // hex BLAKE3-256(previous digest || BLAKE3-256(segment))
	Counts int64  `json:"uncopied,omitempty"` // bytes moved that the tracer could not copy
}

// Chains builds a digest chain per output stream with a checkpoint every K
// bytes and at the end. A checkpoint's digest is BLAKE3-256 of the
// previous one's (32 zero bytes before the first) and of the BLAKE3-256
// of its segment, so that segments can be hashed apart: their bytes are
// collected and hashed by a pool of goroutines, one per CPU, while Write
// goes on (the hash, ~1.5 GB/s a CPU here, is what bounds a traced
// writer). The chain is linked in Finish. Write, Uncopied and Finish are
// called from one goroutine.
type Chains struct {
	K       int64
	streams map[string]*chain
	work    chan *segment // to the hashers
	hashing sync.WaitGroup
	started bool
	free    sync.Pool // segment buffers, of capacity K
}

// A segment is K bytes of a stream (fewer for the last), with the markers
// of uncopied bytes among them.
type segment struct {
	buf                []byte         // the bytes, to hash whole
	hash               *blake3.Hasher // or the hash so far, beyond maxBuffered
	sum                [32]byte       // BLAKE3-256 of the segment, once hashed
	start, end, counts int64
}

type chain struct {
	cur   *segment   // being filled, or nil
	n     int64      // bytes of the stream so far
	dirty bool       // cur has bytes or markers
	segs  []*segment // full or finished, in order
}

// maxBuffered bounds the segments collected whole: a chain with longer
// segments hashes them as they come, on Write's goroutine.
const maxBuffered = 4 << 20

// NewChains makes chains with checkpoints every k bytes.
func NewChains(k int64) *Chains { return &Chains{K: k, streams: map[string]*chain{}} }

func (cs *Chains) get(stream string) *chain {
	c := cs.streams[stream]
	if c == nil {
		c = &chain{}
		cs.streams[stream] = c
	}
	if c.cur == nil {
		c.cur = &segment{start: c.n, end: c.n}
		// A stream's first segment grows as bytes come (most streams are
		// short, and there can be thousands); later ones take a whole
		// buffer from those the hashers are done with.
		if len(c.segs) > 0 && cs.K <= maxBuffered {
			if b, ok := cs.free.Get().([]byte); ok {
				c.cur.buf = b[:0]
			} else {
				c.cur.buf = make([]byte, 0, cs.K)
			}
		}
	}
	return c
}

// Write adds bytes written to stream.
func (cs *Chains) Write(stream string, b []byte) {
	c := cs.get(stream)
	for len(b) > 0 {
		take := min(cs.K-(c.cur.end-c.cur.start), int64(len(b)))
		cs.add(c, b[:take])
		c.cur.end += take
		c.n += take
		b = b[take:]
		if c.cur.end-c.cur.start == cs.K {
			cs.seal(c)
			c = cs.get(stream)
		}
	}
}

// Uncopied records n bytes moved on stream that were not copied: they
// enter the chain as a marker, so two runs agree only if both moved the
// same number at the same place.
func (cs *Chains) Uncopied(stream string, n int64) {
	c := cs.get(stream)
	cs.add(c, fmt.Appendf(nil, "\x00lockstep:uncopied:%d\x00", n))
	c.cur.counts += n
}

// add puts b into the segment being filled.
func (cs *Chains) add(c *chain, b []byte) {
	c.dirty = true
	if cs.K <= maxBuffered {
		c.cur.buf = append(c.cur.buf, b...)
		return
	}
	if c.cur.hash == nil {
		c.cur.hash = blake3.New()
	}
	c.cur.hash.Write(b)
}

// seal ends the segment being filled and has it hashed.
func (cs *Chains) seal(c *chain) {
	s := c.cur
	c.segs = append(c.segs, s)
	c.cur, c.dirty = nil, false
	if cs.K > maxBuffered { // hashed as it came
		if s.hash == nil {
			s.hash = blake3.New()
		}
		s.hash.Sum(s.sum[:0])
		s.hash = nil
		return
	}
	if !cs.started {
		cs.started = true
		cs.work = make(chan *segment, 2*runtime.GOMAXPROCS(0))
		for range runtime.GOMAXPROCS(0) {
			go func() {
				for s := range cs.work {
					s.sum = blake3.Sum256(s.buf)
					if int64(cap(s.buf)) == cs.K {
						cs.free.Put(s.buf[:0])
					}
					s.buf = nil
					cs.hashing.Done()
				}
			}()
		}
	}
	cs.hashing.Add(1)
	cs.work <- s
}

// Finish closes every chain and returns all checkpoints, by stream name
// and index. The chains can take no more bytes.
func (cs *Chains) Finish() []Checkpoint {
	names := make([]string, 0, len(cs.streams))
	for n := range cs.streams {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if c := cs.streams[n]; c.dirty || len(c.segs) == 0 {
			cs.seal(c) // c.cur is there: a stream is made with one
		}
	}
	cs.hashing.Wait()
	if cs.started {
		close(cs.work)
		cs.started = false
	}
	var out []Checkpoint
	for _, n := range names {
		prev := make([]byte, 32)
		for i, s := range cs.streams[n].segs {
			d := blake3.Sum256(append(prev[:32:32], s.sum[:]...))
			prev = d[:]
			out = append(out, Checkpoint{Stream: n, Index: i, Start: s.start, End: s.end, Digest: hex.EncodeToString(d[:]), Counts: s.counts})
		}
	}
	return out
}

// Difference is where two runs' chains first differ.
type Difference struct {
	Stream string
	Index  int         // the first differing checkpoint of Stream
	A, B   *Checkpoint // nil where a run has no such checkpoint
}

// Diff returns the first differing checkpoint of each stream, in stream
// order, or nil when the chains agree.
func Diff(a, b []Checkpoint) []Difference {
	group := func(cs []Checkpoint) map[string][]Checkpoint {
		m := map[string][]Checkpoint{}
		for _, c := range cs {
			m[c.Stream] = append(m[c.Stream], c)
		}
		return m
	}
	ga, gb := group(a), group(b)
	names := map[string]bool{}
	for n := range ga {
		names[n] = true
	}
	for n := range gb {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	var out []Difference
	for _, n := range sorted {
		ca, cb := ga[n], gb[n]
		for i := 0; i < len(ca) || i < len(cb); i++ {
			var pa, pb *Checkpoint
			if i < len(ca) {
				pa = &ca[i]
			}
			if i < len(cb) {
				pb = &cb[i]
			}
			if pa == nil || pb == nil || pa.Digest != pb.Digest || pa.End != pb.End {
				out = append(out, Difference{Stream: n, Index: i, A: pa, B: pb})
				break
			}
		}
	}
	return out
}

// WriteCheckpoints writes checkpoints to path as JSON lines.
func WriteCheckpoints(path string, cps []Checkpoint) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, c := range cps {
		enc.Encode(c)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadCheckpoints reads what WriteCheckpoints wrote.
func ReadCheckpoints(path string) ([]Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Checkpoint
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	for {
		var c Checkpoint
		if err := dec.Decode(&c); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: checkpoint %d: %v (want the digests of lockstep exec --digests or io.lockstep.digests)", path, len(out)+1, err)
		}
		out = append(out, c)
	}
}
