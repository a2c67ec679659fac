package serve

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
)

// Egress: the run's program connects out of the run (docs/egress.md).
// Each replica's runtime asks for connection N (logd.EgressConn set) to
// an address; once a majority of the replicas asked for the same one, the
// guard dials it, once, if the policy allows it, and appends the result
// (an open entry), every read of the remote's bytes (data entries) and
// its close to the log: every replica, and every replay, sees the same
// connection. What the replicas send on it is voted as a served
// connection's answers are, and only what a majority sent alike goes to
// the remote.

// dialVote is the replicas' requests for one outbound connection.
type dialVote struct {
	to     []string // per replica: the address it asked for, or ""
	chosen string   // the address dialed, once a majority asked for it
}

// MaxOutbound is how many outbound connections a run may have open at
// once; past it, a connect is refused (the log says so, as for any dial).
const MaxOutbound = 256

// DialTimeout bounds the guard's dial: past it, the replicas' connect
// fails with ETIMEDOUT.
const DialTimeout = 10 * time.Second

// Dial is a replica's request to connect out of the run
// (replicate.Responder).
func (g *Gateway) Dial(r int, id uint64, to string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if id&logd.EgressConn == 0 || !g.v.in(r) || g.stopped || g.before[id] {
		return
	}
	d := g.dials[id]
	if d == nil {
		d = &dialVote{to: make([]string, len(g.v.odd))}
		g.dials[id] = d
	}
	d.to[r] = to
	g.decide(id, d)
	if d.chosen != "" && d.asked(g.v.in) {
		delete(g.dials, id) // every replica in the vote asked: nothing more to check
	}
}

// asked reports whether every replica in the vote has asked.
func (d *dialVote) asked(in func(int) bool) bool {
	for r, to := range d.to {
		if to == "" && in(r) {
			return false
		}
	}
	return true
}

// decide dials once a majority asked for the same address, and names
// the replicas that asked for another; g.mu is held.
func (g *Gateway) decide(id uint64, d *dialVote) {
	if d.chosen != "" {
		g.checkDial(id, d)
		return
	}
	count := map[string]int{}
	for r, to := range d.to {
		if to != "" && g.v.in(r) {
			count[to]++
		}
	}
	for to, n := range count {
		if n < g.v.need {
			continue
		}
		d.chosen = to
		g.checkDial(id, d)
		g.dialed++
		go g.dial(id, to)
		return
	}
}

// checkDial names the replicas that asked for another address than the
// one dialed; g.mu is held.
func (g *Gateway) checkDial(id uint64, d *dialVote) {
	odd := map[int]string{}
	for r, to := range d.to {
		if to != "" && to != d.chosen && g.v.in(r) {
			odd[r] = fmt.Sprintf("outbound connection %d: it connected to %s, the majority to %s", id&^logd.EgressConn, to, d.chosen)
		}
	}
	if len(odd) > 0 {
		g.markOdd(odd)
		g.revote()
	}
}

// dial makes the real connection, and appends its result and then the
// remote's bytes and close.
func (g *Gateway) dial(id uint64, to string) {
	f := strings.Fields(to)
	switch {
	case len(f) == 3 && f[0] == "icmp":
		g.ping(id, to, f[1])
		return
	case len(f) == 2 && f[0] == "udp":
		g.flow(id, to, f[1])
		return
	}
	if len(g.Fetch) > 0 {
		g.fetchEach(id, to)
		return
	}
	if !g.admit(id, to, to, "connected to "+to) {
		return
	}
	c, err := net.DialTimeout("tcp", to, DialTimeout)
	if err != nil {
		g.emit(egressOpen(id, replicate.DialErrno(err), to))
		return
	}
	if !g.keep(id, c, nil) {
		return
	}
	g.emit(egressOpen(id, 0, to))
	buf := make([]byte, egressRead)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			g.emit(logd.ConnEntry(logd.KindData, 0, id, buf[:n]))
		}
		if err != nil {
			var why []byte
			if errors.Is(err, syscall.ECONNRESET) {
				why = errnoBytes(syscall.ECONNRESET)
			}
			g.emit(logd.ConnEntry(logd.KindClose, 0, id, why))
			break
		}
	}
	c.(*net.TCPConn).CloseRead()
	g.mu.Lock()
	delete(g.remotes, c)
	g.mu.Unlock()
}

// keep takes c, dialed for outbound connection id (with d, a UDP flow's
// datagrams, or nil), as open: what a majority of the replicas send on it
// is written to it (through d). It is false, and c closed, if the guard
// stopped meanwhile.
func (g *Gateway) keep(id uint64, c io.WriteCloser, d *datagrams) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		c.Close()
		return false
	}
	var w io.WriteCloser = c
	if d != nil {
		w = d
	}
	oc := newConn(id, len(g.v.odd), newWriter(w))
	oc.out.half = true // the remote may still answer once the program is done
	g.conns[id] = oc
	g.remotes[c] = d
	return true
}

// admit reports whether the policy allows outbound connection id to
// addr, and the guard has room for it; if not, it appends the refusal
// (ECONNREFUSED) and says why (did: what the program did).
func (g *Gateway) admit(id uint64, to, addr, did string) bool {
	if !g.Allow.Allows(addr) {
		g.refuse(did, addr, "refused (ECONNREFUSED)")
		g.emit(egressOpen(id, syscall.ECONNREFUSED, to))
		return false
	}
	g.mu.Lock()
	open := 0
	for _, d := range g.remotes {
		if d == nil || !d.evicted {
			open++
		}
	}
	if open >= MaxOutbound && g.evictFlow() {
		open--
	}
	g.mu.Unlock()
	if open >= MaxOutbound {
		if g.Log != nil {
			g.Log(fmt.Sprintf("the program has %d connections out of the run open, the most the guard keeps: %s refused (ECONNREFUSED)", open, to))
		}
		g.emit(egressOpen(id, syscall.ECONNREFUSED, to))
		return false
	}
	return true
}

// egressRead is the most one data entry of an outbound connection
// carries: a read of what the remote sent (an entry's payload holds 1 MiB,
// with the connection's number).
const egressRead = logd.MaxPayload - 8

// EchoTimeout is how long the guard waits for an echo reply: a later one
// is lost.
const EchoTimeout = time.Second

// ping sends the echo request a majority of the replicas asked for, and
// appends whether a reply came (errno 0) or not (ETIMEDOUT), at the
// time it came or the wait ended.
func (g *Gateway) ping(id uint64, to, host string) {
	addr, err := netip.ParseAddr(host)
	if err != nil || !g.Allow.Allows(netip.AddrPortFrom(addr, 0).String()) {
		allow := host + ":*"
		if addr.Is6() {
			allow = "[" + host + "]:*"
		}
		g.refuse("pinged "+host, allow, "no reply comes")
		g.emit(egressOpen(id, syscall.ETIMEDOUT, to))
		return
	}
	ok, err := echo(addr, EchoTimeout)
	if err != nil && g.Log != nil {
		g.Log(fmt.Sprintf("ICMP echo to %s: %v (counted as lost)", addr, err))
	}
	errno := syscall.ETIMEDOUT
	if ok {
		errno = 0
	}
	g.emit(egressOpen(id, errno, to))
}

// refuse says, once per address, that the policy refused what the
// program did (did), what the program sees instead (so), and the
// --allow-net value that allows it.
func (g *Gateway) refuse(did, allow, so string) {
	g.mu.Lock()
	first := !g.refused[did]
	g.refused[did] = true
	g.mu.Unlock()
	if first && g.Log != nil {
		if g.Allow.Empty() {
			g.Log(fmt.Sprintf("the program %s; egress is off, so %s: allow it with --allow-net %s", did, so, allow))
		} else {
			g.Log(fmt.Sprintf("the program %s, which --allow-net does not allow: %s", did, so))
		}
	}
}

// egressOpen is the open entry of outbound connection id: the dial's
// result (0: connected) and the address.
func egressOpen(id uint64, errno syscall.Errno, to string) logd.Entry {
	return logd.ConnEntry(logd.KindOpen, 0, id, append(errnoBytes(errno), to...))
}
