package serve

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
)

// Gateway is the guard's side of a served stream: it accepts clients,
// turns each connection's open, bytes and close into log entries
// (Entries), and answers each client with what a majority of the
// replicas sent on its connection (it is the run's replicate.Responder).
type Gateway struct {
	// Tap, if set before Serve, sees every released byte, connection by
	// connection, in order (lockstep serve --record digests them).
	Tap func(conn uint64, p []byte)

	// Allow is the egress policy (--allow-net): nil allows no outbound
	// connection. Log, if set, gets a line for the user (a refused one).
	Allow *Policy
	Log   func(string)

	// Fetch, if set (one per replica: its provider's), makes each
	// outbound TCP connection: every fetcher makes it, and the replicas
	// get what a majority of them got (the providers' fetch mode,
	// docs/egress.md). Unset, the guard makes it, once.
	Fetch []replicate.Fetcher

	ln       net.Listener
	entries  chan logd.Entry
	quit     chan struct{} // the run is over: nothing reads entries
	stopping chan struct{} // Stop was called
	failed   chan struct{} // no majority can form any more
	clients  sync.WaitGroup
	quitOnce sync.Once

	emitMu sync.Mutex
	last   int64 // the time of the last entry made
	closed bool  // entries is closed

	mu      sync.Mutex
	next    uint64
	v       votes
	conns   map[uint64]*conn
	open    map[net.Conn]bool
	served  int64 // connections whose response completed
	silent  int64 // of them, those answered with no byte at all
	splits  int64 // of them, those cut short: no majority answered alike
	stopped bool
	failure string

	dials    map[uint64]*dialVote     // outbound connections asked for
	remotes  map[io.Closer]*datagrams // outbound connections open (a UDP flow's: with its datagrams)
	refused  map[string]bool          // addresses the policy refused, said once
	dialed   int64
	fetchOdd []string        // fetches that differed from the majority's, and why
	before   map[uint64]bool // outbound connections a resumed stream's log already has

	nameFrom int // the replicas' names count from replica-nameFrom
}

// Resume makes the gateway go on with a stream an earlier guard appended
// to (replicate.Resumed): client connections are numbered after lastConn,
// entries are stamped no earlier than last, and the outbound connections
// in dialed, which the log already holds, are not dialed again when the
// replicas, replaying, ask for them. Replicas are named from
// replica-nameFrom. Call it before Serve.
func (g *Gateway) Resume(lastConn uint64, last int64, dialed map[uint64]bool, nameFrom int) {
	g.next, g.last, g.before, g.nameFrom = lastConn, last, dialed, nameFrom
}

// New makes a gateway for replicas replicas, accepting on ln; with ln
// nil, it is the guard of a run's outbound connections only (lockstep
// run --allow-net): Serve is not called, and Over ends it.
func New(ln net.Listener, replicas int) *Gateway {
	return &Gateway{
		ln: ln, entries: make(chan logd.Entry, 64),
		quit: make(chan struct{}), stopping: make(chan struct{}), failed: make(chan struct{}),
		v:     votes{need: replicas/2 + 1, odd: make([]string, replicas), gone: make([]bool, replicas)},
		conns: map[uint64]*conn{}, open: map[net.Conn]bool{},
		dials: map[uint64]*dialVote{}, remotes: map[io.Closer]*datagrams{}, refused: map[string]bool{},
	}
}

// Entries are the served stream's entries, in order of their times; the
// channel closes after the stop entry.
func (g *Gateway) Entries() <-chan logd.Entry { return g.entries }

// Failed is closed when no majority of the replicas can answer any more.
func (g *Gateway) Failed() <-chan struct{} { return g.failed }

// Serve accepts clients until Stop.
func (g *Gateway) Serve() error {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			select {
			case <-g.stopping:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		g.mu.Lock()
		if g.stopped || g.failure != "" {
			g.mu.Unlock()
			c.Close()
			continue
		}
		g.next++
		id := g.next
		g.conns[id] = newConn(id, len(g.v.odd), newWriter(c))
		g.conns[id].tap = g.Tap
		g.open[c] = true
		g.clients.Add(1)
		g.mu.Unlock()
		go g.client(id, c)
	}
}

// client makes the entries of one connection: its open, each read of
// its bytes, its close.
func (g *Gateway) client(id uint64, c net.Conn) {
	defer g.clients.Done()
	g.emit(logd.ConnEntry(logd.KindOpen, 0, id, nil))
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			g.emit(logd.ConnEntry(logd.KindData, 0, id, buf[:n]))
		}
		if err != nil {
			break
		}
	}
	g.emit(logd.ConnEntry(logd.KindClose, 0, id, nil))
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseRead()
	}
	g.mu.Lock()
	delete(g.open, c)
	g.mu.Unlock()
}

// emit appends e to the stream, stamped with the guard's clock (never
// before the entry ahead of it).
func (g *Gateway) emit(e logd.Entry) {
	g.emitMu.Lock()
	defer g.emitMu.Unlock()
	if g.closed {
		return
	}
	g.last = max(g.last, time.Now().UnixNano())
	e.Time = g.last
	select {
	case g.entries <- e:
	case <-g.quit:
	}
}

// Stop stops accepting, ends the open connections (their close entries
// are appended), then appends the stop entry: the replicas stop there.
func (g *Gateway) Stop() {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	g.stopped = true
	close(g.stopping)
	for c := range g.open {
		c.Close()
	}
	g.mu.Unlock()
	if g.ln == nil {
		g.closeEntries() // a run's guard: the run is over, no stop entry
		return
	}
	g.ln.Close()
	g.clients.Wait()
	g.emit(logd.Entry{Kind: logd.KindStop})
	g.closeEntries()
}

func (g *Gateway) closeEntries() {
	g.emitMu.Lock()
	g.closed = true
	close(g.entries)
	g.emitMu.Unlock()
}

// Over says the run ended: nothing reads the entries any more, and the
// clients still open get no more answers.
func (g *Gateway) Over() {
	g.quitOnce.Do(func() { close(g.quit) })
	g.Stop()
	g.mu.Lock()
	for _, c := range g.conns {
		c.out.end()
	}
	for c := range g.remotes {
		c.Close()
	}
	g.mu.Unlock()
}

// Response is a replica's bytes on a connection (replicate.Responder).
func (g *Gateway) Response(r int, id uint64, p []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.conns[id]
	if c == nil || !g.v.in(r) {
		return
	}
	g.settle(c, c.add(&g.v, r, p))
}

// Finished is a replica's close of a connection.
func (g *Gateway) Finished(r int, id uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.conns[id]
	if c == nil || !g.v.in(r) {
		return
	}
	g.settle(c, c.finish(&g.v, r))
}

// Gone is a replica's end: the others answer without it.
func (g *Gateway) Gone(r int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.v.gone[r] = true
	g.revote()
}

// settle takes the replicas the vote on c found odd out of every vote,
// and forgets c once every replica is done with it; g.mu is held.
func (g *Gateway) settle(c *conn, odd map[int]string) {
	if c.split && !c.told {
		c.told = true
		g.splits++
	}
	if len(odd) > 0 {
		g.markOdd(odd)
		g.revote()
	}
	g.forget(c)
}

func (g *Gateway) markOdd(odd map[int]string) {
	for r, why := range odd {
		g.v.odd[r] = why
		for _, c := range g.conns {
			c.pend[r] = nil
		}
	}
}

func (g *Gateway) forget(c *conn) {
	if g.conns[c.id] == c && c.settled(&g.v) {
		delete(g.conns, c.id)
		if c.id&logd.EgressConn != 0 {
			return
		}
		g.served++
		if c.sent == 0 {
			g.silent++
		}
	}
}

// revote votes again on every connection after a replica left the vote
// (its bytes no longer hold back a majority), and fails the gateway when
// no majority can form; g.mu is held.
func (g *Gateway) revote() {
	for again := true; again; {
		again = false
		in := 0
		for r := range g.v.odd {
			if g.v.in(r) {
				in++
			}
		}
		if in < g.v.need && g.ln == nil {
			for _, c := range g.conns { // a run's guard: the run's voter says why
				c.out.end()
			}
			return
		}
		if in < g.v.need {
			if g.failure == "" && !g.stopped { // not the replicas' end at the stop entry
				g.failure = fmt.Sprintf("%d of %d replicas are left to answer, fewer than the %d a majority needs", in, len(g.v.odd), g.v.need)
				close(g.failed)
				for _, c := range g.conns {
					c.out.end()
				}
			}
			return
		}
		for _, c := range g.conns {
			if odd := c.vote(&g.v); len(odd) > 0 {
				g.markOdd(odd)
				again = true
				break
			}
			g.forget(c)
		}
	}
}

// Odd names the replicas whose responses differed from the majority's,
// with why: replica number to reason.
func (g *Gateway) Odd() map[int]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := map[int]string{}
	for r, why := range g.v.odd {
		if why != "" {
			m[r] = why
		}
	}
	return m
}

// Judge adds to a run's verdict the replicas whose answers differed from
// the majority's. Where the replicas' hosts cannot make a source
// deterministic (v.HostLimited), they differ and none is named odd, as in
// the rest of the verdict.
func (g *Gateway) Judge(v *replicate.Verdict) {
	for r, why := range g.Odd() {
		if r >= len(v.Replicas) {
			continue
		}
		rep := &v.Replicas[r]
		v.Agreed = false
		rep.Why = "its answers differ from the majority's: " + why
		if v.HostLimited {
			rep.State = "differs"
			continue
		}
		if rep.State != "odd" {
			rep.State = "odd"
			v.Odd = append(v.Odd, rep.Name)
		}
		v.Detail = fmt.Sprintf("%s on %s: %s", rep.Name, rep.Provider, rep.Why)
	}
	if f := g.Failure(); f != "" {
		v.Agreed = false
		v.Detail = "no majority could answer: " + f
	}
	v.Egress = g.egress()
}

// egress says how the run's outbound connections were made, if there
// were any.
func (g *Gateway) egress() *replicate.Egress {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dialed == 0 {
		return nil
	}
	e := &replicate.Egress{Mode: "guard", Connections: g.dialed, Odd: g.fetchOdd}
	if len(g.Fetch) > 0 {
		e.Mode = "providers"
	}
	return e
}

// Failure says why no majority could answer, or "".
func (g *Gateway) Failure() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failure
}

// Status is a line about the gateway's connections.
func (g *Gateway) Status() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var odd []string
	for r, why := range g.v.odd {
		if why != "" {
			odd = append(odd, fmt.Sprintf("replica-%d", g.nameFrom+r))
		}
	}
	sort.Strings(odd)
	s := fmt.Sprintf("%d connections, %d open, %d answered", g.next, len(g.open), g.served)
	if g.silent > 0 && g.silent == g.served {
		// A refused connection is closed at once on every replica alike.
		s += ", every one closed without a byte: does the service listen on --port inside the container?"
	}
	if g.splits > 0 {
		s += fmt.Sprintf(", %d cut short where no majority of the replicas answered alike", g.splits)
	}
	if g.dialed > 0 {
		s += fmt.Sprintf(", %d outbound", g.dialed)
	}
	if len(odd) > 0 {
		s += "; odd: " + strings.Join(odd, ", ")
	}
	return s
}
