package serve

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/lockstep-run/lockstep/logd"
)

// conn is one client connection's responses from the replicas, and the
// vote on them: the client gets each byte once a majority of the replicas
// sent it identically (it is released). Bytes a replica sent are kept
// until they are checked: a replica ahead of the majority keeps its bytes
// past what is released (pend), and a replica behind it is checked
// against what was released (kept from trim on, while one is behind).
type conn struct {
	id       uint64
	released []byte  // the released bytes from trim on
	trim     int64   // the offset of released[0]
	sent     int64   // bytes released
	ok       []int64 // per replica: how far its bytes are checked
	pend     [][]byte
	fin      []bool
	ended    bool // a majority finished: the response is complete at sent
	split    bool // no majority can agree on the next byte: the response ends at sent
	told     bool // the gateway counted the split
	out      *writer
	tap      func(id uint64, p []byte) // or nil
}

// String names the connection in a replica's odd-one-out reason.
func (c *conn) String() string {
	if c.id&logd.EgressConn != 0 {
		return fmt.Sprintf("outbound connection %d", c.id&^logd.EgressConn)
	}
	return fmt.Sprintf("connection %d", c.id)
}

func newConn(id uint64, n int, out *writer) *conn {
	return &conn{id: id, ok: make([]int64, n), pend: make([][]byte, n), fin: make([]bool, n), out: out}
}

// votes is the state of all replicas the vote needs: which are out of it
// and why (odd), and which ended (gone). need is a majority of all of
// them.
type votes struct {
	need int
	odd  []string
	gone []bool
}

func (v *votes) in(r int) bool { return v.odd[r] == "" && !v.gone[r] }

// add takes bytes replica r sent on c, checks what it can and releases
// what a majority agrees on. It returns the replicas found odd, with why.
func (c *conn) add(v *votes, r int, p []byte) map[int]string {
	if c.split {
		return nil // nothing more goes to the client: no vote
	}
	if c.ended && c.ok[r]+int64(len(c.pend[r]))+int64(len(p)) > c.sent {
		return map[int]string{r: fmt.Sprintf("%s: it sent more than the majority's %d-byte response", c, c.sent)}
	}
	c.pend[r] = append(c.pend[r], p...)
	return c.vote(v)
}

// finish notes that replica r closed c.
func (c *conn) finish(v *votes, r int) map[int]string {
	c.fin[r] = true
	return c.vote(v)
}

// vote checks replicas behind against the released bytes, releases the
// longest prefix a majority of those caught up agrees on, and ends the
// response when a majority closed the connection at the same length.
func (c *conn) vote(v *votes) map[int]string {
	odd := map[int]string{}
	c.checkBehind(v, odd)
	for {
		var up []int // in the vote, caught up, with bytes past sent
		for r := range c.ok {
			if v.in(r) && odd[r] == "" && c.ok[r] == c.sent {
				up = append(up, r)
			}
		}
		best, ref := 0, -1
		for _, r := range up {
			var lens []int
			for _, s := range up {
				lens = append(lens, lcp(c.pend[r], c.pend[s]))
			}
			sort.Sort(sort.Reverse(sort.IntSlice(lens)))
			if len(lens) >= v.need && lens[v.need-1] > best {
				best, ref = lens[v.need-1], r
			}
		}
		if ref < 0 {
			break
		}
		seg := append([]byte(nil), c.pend[ref][:best]...)
		c.out.push(seg)
		if c.tap != nil {
			c.tap(c.id, seg)
		}
		c.released = append(c.released, seg...)
		for _, s := range up {
			n := lcp(seg, c.pend[s])
			if n < len(seg) && n < len(c.pend[s]) {
				odd[s] = fmt.Sprintf("%s: its response differs from the majority's at byte %d", c, c.sent+int64(n))
				continue
			}
			c.pend[s] = c.pend[s][n:]
			c.ok[s] += int64(n)
		}
		c.sent += int64(best)
	}
	if !c.ended && c.splits(v, odd) {
		c.split, c.ended = true, true
		c.out.end()
		return odd
	}
	// The response is complete when a majority closed the connection
	// with all of its bytes released.
	done := 0
	for r := range c.ok {
		if v.in(r) && odd[r] == "" && c.fin[r] && c.ok[r] == c.sent && len(c.pend[r]) == 0 {
			done++
		}
	}
	if done >= v.need && !c.ended {
		c.ended = true
		c.out.end()
	}
	for r := range c.ok {
		if !v.in(r) || odd[r] != "" {
			continue
		}
		switch got := c.ok[r] + int64(len(c.pend[r])); {
		case c.fin[r] && got < c.sent:
			odd[r] = fmt.Sprintf("%s: its response ended after %d bytes, the majority's went on", c, got)
		case c.ended && got > c.sent:
			odd[r] = fmt.Sprintf("%s: it sent more than the majority's %d-byte response", c, c.sent)
		}
	}
	c.drop(v, odd)
	return odd
}

// splits reports whether the replicas in the vote can no longer form a
// majority on c: each has said what comes after the released bytes (a
// next byte, or its close), and no majority says the same. Waiting would
// hold the client forever; the connection ends at the released bytes.
func (c *conn) splits(v *votes, odd map[int]string) bool {
	next := map[int]int{} // the next byte (-1: closed) -> replicas
	for r := range c.ok {
		if !v.in(r) || odd[r] != "" {
			continue
		}
		switch {
		case c.ok[r] != c.sent:
			return false // behind: still to be checked
		case len(c.pend[r]) > 0:
			next[int(c.pend[r][0])]++
		case c.fin[r]:
			next[-1]++
		default:
			return false // yet to say
		}
	}
	for _, n := range next {
		if n >= v.need {
			return false
		}
	}
	return len(next) > 0
}

// drop forgets the released bytes every replica in the vote has passed.
func (c *conn) drop(v *votes, odd map[int]string) {
	low := c.sent
	for r := range c.ok {
		if v.in(r) && odd[r] == "" {
			low = min(low, c.ok[r])
		}
	}
	if low > c.trim {
		c.released = c.released[low-c.trim:]
		c.trim = low
	}
}

// checkBehind checks the bytes of replicas behind the released ones.
func (c *conn) checkBehind(v *votes, odd map[int]string) {
	for r := range c.ok {
		if !v.in(r) || c.ok[r] >= c.sent || len(c.pend[r]) == 0 {
			continue
		}
		from := c.ok[r] - c.trim
		n := int(min(int64(len(c.pend[r])), c.sent-c.ok[r]))
		if m := lcp(c.pend[r][:n], c.released[from:]); m < n {
			odd[r] = fmt.Sprintf("%s: its response differs from the majority's at byte %d", c, c.ok[r]+int64(m))
			continue
		}
		c.pend[r] = c.pend[r][n:]
		c.ok[r] += int64(n)
	}
}

// settled reports whether every replica in the vote is done with c: the
// connection's state can go.
func (c *conn) settled(v *votes) bool {
	if !c.ended {
		return false
	}
	for r := range c.ok {
		if v.in(r) && (!c.fin[r] || c.ok[r] < c.sent) {
			return false
		}
	}
	return true
}

func lcp(a, b []byte) int {
	n := min(len(a), len(b))
	if bytes.Equal(a[:n], b[:n]) {
		return n
	}
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}
