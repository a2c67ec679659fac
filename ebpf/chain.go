package ebpf

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"

	"github.com/zeebo/blake3"
)

// Checkpoint is one link of a stream's digest chain: the digest of
// everything before it and of bytes [Start, End) of the stream.
type Checkpoint struct {
	Stream string `json:"stream"`
	Index  int    `json:"index"`
	Start  int64  `json:"start"`
	End    int64  `json:"end"`
	Digest string `json:"digest"`             // hex BLAKE3-256(previous digest || segment)
	Counts int64  `json:"uncopied,omitempty"` // bytes moved that the tracer could not copy
}

// Chains builds a digest chain per output stream with a checkpoint every K
// bytes and at the end.
type Chains struct {
	K       int64
	streams map[string]*chain
}

type chain struct {
	h      hash.Hash // BLAKE3 of the previous digest and the segment so far
	segLen int64     // bytes in the segment so far
	dirty  bool      // the segment has bytes or markers
	start  int64
	n      int64
	counts int64
	done   []Checkpoint
}

// NewChains makes chains with checkpoints every k bytes.
func NewChains(k int64) *Chains { return &Chains{K: k, streams: map[string]*chain{}} }

func (cs *Chains) get(stream string) *chain {
	c := cs.streams[stream]
	if c == nil {
		c = &chain{h: blake3.New()}
		c.h.Write(make([]byte, c.h.Size())) // the digest before the first
		cs.streams[stream] = c
	}
	return c
}

// Write adds bytes written to stream.
func (cs *Chains) Write(stream string, b []byte) {
	c := cs.get(stream)
	for len(b) > 0 {
		take := min(cs.K-c.segLen, int64(len(b)))
		c.h.Write(b[:take])
		c.segLen += take
		c.n += take
		c.dirty = true
		b = b[take:]
		if c.segLen == cs.K {
			c.checkpoint(stream)
		}
	}
}

// Uncopied records n bytes moved on stream that were not copied: they
// enter the chain as a marker, so two runs agree only if both moved the
// same number at the same place.
func (cs *Chains) Uncopied(stream string, n int64) {
	c := cs.get(stream)
	fmt.Fprintf(c.h, "\x00lockstep:uncopied:%d\x00", n)
	c.counts += n
	c.dirty = true
}

func (c *chain) checkpoint(stream string) {
	sum := c.h.Sum(nil)
	c.done = append(c.done, Checkpoint{Stream: stream, Index: len(c.done), Start: c.start, End: c.n,
		Digest: hex.EncodeToString(sum), Counts: c.counts})
	c.h.Reset()
	c.h.Write(sum)
	c.start, c.segLen, c.counts, c.dirty = c.n, 0, 0, false
}

// Finish closes every chain and returns all checkpoints, by stream name
// and index.
func (cs *Chains) Finish() []Checkpoint {
	names := make([]string, 0, len(cs.streams))
	for n := range cs.streams {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []Checkpoint
	for _, n := range names {
		c := cs.streams[n]
		if c.dirty || len(c.done) == 0 {
			c.checkpoint(n)
		}
		out = append(out, c.done...)
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
