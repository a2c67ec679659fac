package serve

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
)

// UDP through the guard (docs/egress.md, "UDP and DNS"). A replica's
// connect of a UDP socket to an address out of the run asks for a flow
// ("udp ADDR:PORT"), dialed as a connection is: once, when a majority
// asked for the same address. Each datagram the remote sends is one data
// entry; the datagrams the program sends are voted as a connection's
// bytes are, framed by the replica's runtime (a 2-byte length, then the
// datagram), and only those a majority sent alike reach the remote. UDP
// has no close: a flow with no datagram either way for udpIdle ends with
// a close entry, at the guard's time, and on every replica alike.

// udpIdle is how long a UDP flow may carry nothing before the guard
// closes it.
var udpIdle = 30 * time.Second

// flow opens UDP flow id to addr (to is "udp ADDR"), appends its open
// entry and then every datagram the remote sends, and its close.
func (g *Gateway) flow(id uint64, to, addr string) {
	if !g.admit(id, to, addr, "sent UDP to "+addr) {
		return
	}
	c, err := net.Dial("udp", addr)
	if err != nil {
		g.emit(egressOpen(id, replicate.DialErrno(err), to))
		return
	}
	d := &datagrams{Conn: c}
	d.touch()
	if !g.keep(id, c, d) {
		return
	}
	g.emit(egressOpen(id, 0, to))
	buf := make([]byte, 1<<16)
	for {
		c.SetReadDeadline(time.Unix(0, d.last.Load()).Add(udpIdle))
		n, err := c.Read(buf)
		switch {
		case err == nil:
			d.touch()
			g.emit(logd.ConnEntry(logd.KindData, 0, id, buf[:n]))
			continue
		case errors.Is(err, syscall.ECONNREFUSED):
			// The remote's port is closed (an ICMP error for a datagram
			// sent): the program hears nothing, as from a remote that does
			// not answer.
			continue
		case errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, d.last.Load())) < udpIdle:
			continue // the program sent meanwhile
		}
		break
	}
	g.emit(logd.ConnEntry(logd.KindClose, 0, id, nil))
	c.Close()
	g.mu.Lock()
	delete(g.remotes, c)
	g.mu.Unlock()
}

// datagrams writes a UDP flow's voted bytes as the datagrams they frame:
// each is a 2-byte length and then its bytes. last is when a datagram
// last went either way (Unix ns).
type datagrams struct {
	net.Conn
	buf     []byte
	last    atomic.Int64
	evicted bool // closed to make room (Gateway.mu)
}

func (d *datagrams) touch() { d.last.Store(time.Now().UnixNano()) }

func (d *datagrams) Write(p []byte) (int, error) {
	d.buf = append(d.buf, p...)
	for len(d.buf) >= 2 {
		n := int(binary.BigEndian.Uint16(d.buf))
		if len(d.buf) < 2+n {
			break
		}
		_, err := d.Conn.Write(d.buf[2 : 2+n])
		if errors.Is(err, syscall.ECONNREFUSED) { // an earlier datagram's ICMP error, not this one's
			_, err = d.Conn.Write(d.buf[2 : 2+n])
		}
		if err != nil {
			return len(p), err
		}
		d.touch()
		d.buf = d.buf[2+n:]
	}
	return len(p), nil
}

// evictFlow closes the UDP flow that has been idle longest, if one has
// been for a second, to make room for another outbound connection (its
// read loop appends its close); g.mu is held.
func (g *Gateway) evictFlow() bool {
	var oldest *datagrams
	for _, d := range g.remotes {
		if d != nil && !d.evicted && (oldest == nil || d.last.Load() < oldest.last.Load()) {
			oldest = d
		}
	}
	if oldest == nil || time.Since(time.Unix(0, oldest.last.Load())) < time.Second {
		return false
	}
	oldest.evicted = true
	oldest.Conn.Close()
	return true
}
