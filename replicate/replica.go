package replicate

import (
	"sync"
)

// replica is one replica's output as it arrives. Only what is not yet
// checked against the majority is kept; Write blocks while limit bytes wait for the vote (the
// back-pressure on the container's stdout), unless the replica is out of
// the vote (odd, or the run is over), when its output is only digested.
type replica struct {
	name, provider string
	index          int
	net            Responder // or nil
	limit          int
	changed        func()
	wait           func(deadline int64) // voter.waiting

	mu       sync.Mutex
	cond     *sync.Cond
	buf      []byte // output from base on; output before base is checked and dropped
	mem      []byte // the whole array buf is the tail of
	base     int64
	digest   *Digest
	total    int64
	consumed int64
	odd      string   // why it is out of the vote
	leaks    []string // what its provider's host cannot make deterministic
	stderr   []byte   // the first MaxStderr bytes of its stderr
	errCut   bool     // its stderr was longer
	closed   bool     // the vote is over
	done     bool
	res      Result
	err      error
}

func (r *replica) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.digest.Write(p)
	r.total += int64(len(p))
	for len(r.buf) >= r.limit && r.odd == "" && !r.closed {
		r.cond.Wait()
	}
	if r.odd == "" && !r.closed {
		was := cap(r.buf)
		if r.buf = append(r.buf, p...); cap(r.buf) != was { // a new array
			r.mem = r.buf[:cap(r.buf)]
		}
	}
	r.mu.Unlock()
	r.changed()
	return len(p), nil
}

// Digest is the digest of everything written to r (digestingSink).
func (r *replica) Digest() *Digest { return r.digest }

func (r *replica) Consumed(n int64) {
	r.mu.Lock()
	r.consumed = max(r.consumed, n)
	r.mu.Unlock()
	r.changed()
}

// MaxStderr is how much of each replica's stderr a run keeps.
const MaxStderr = 64 << 10

func (r *replica) Stderr(p []byte) {
	r.mu.Lock()
	n := min(len(p), MaxStderr-len(r.stderr))
	r.stderr = append(r.stderr, p[:n]...)
	r.errCut = r.errCut || n < len(p)
	r.mu.Unlock()
}

func (r *replica) Waiting(deadline int64) { r.wait(deadline) }

func (r *replica) Response(conn uint64, p []byte) {
	r.digest.Conn(conn, p)
	if r.net != nil {
		r.net.Response(r.index, conn, p)
	}
}

func (r *replica) Finished(conn uint64) {
	if r.net != nil {
		r.net.Finished(r.index, conn)
	}
}

func (r *replica) Dial(conn uint64, to string) {
	if r.net != nil {
		r.net.Dial(r.index, conn, to)
	}
}

func (r *replica) HostLeaks(sources []string) {
	r.mu.Lock()
	r.leaks = sources
	r.mu.Unlock()
}

func (r *replica) finish(res Result, err error) {
	r.mu.Lock()
	r.res, r.err, r.done = res, err, true
	r.mu.Unlock()
}

// vote is the replica's output in [from, to): ok is false while it has
// not produced all of it and runs on, or is behind and its output before
// from is not checked yet (checkLate). A replica that ended votes with
// what it has (nothing past its end).
func (r *replica) vote(from, to int64) (seg []byte, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	have := r.base + int64(len(r.buf))
	if (have < to && !r.done) || r.base < from {
		return nil, false
	}
	if have <= from {
		return []byte{}, true
	}
	return r.buf[from-r.base : min(to, have)-r.base], true
}

// release drops the output up to to: it was checked against the
// majority's (in the vote, or late by checkLate) and released to stdout.
func (r *replica) release(to int64) {
	r.mu.Lock()
	if drop := min(to-r.base, int64(len(r.buf))); drop > 0 {
		r.buf = r.buf[drop:]
		r.base += drop
		// What is left moves to the front of the array once more of the
		// array is dropped than left: each byte moves about once. Only
		// the voter's loop calls release, never while it reads a vote.
		if dropped := cap(r.mem) - cap(r.buf); dropped > len(r.buf) {
			r.buf = r.mem[:copy(r.mem, r.buf)]
		}
	}
	r.mu.Unlock()
	r.cond.Broadcast()
}

// drop takes the replica out of the vote.
func (r *replica) drop(why string) {
	r.mu.Lock()
	if r.odd == "" {
		r.odd = why
	}
	r.buf, r.mem = nil, nil
	r.mu.Unlock()
	r.cond.Broadcast()
}

func (r *replica) close() {
	r.mu.Lock()
	r.closed, r.buf, r.mem = true, nil, nil
	r.mu.Unlock()
	r.cond.Broadcast()
}
