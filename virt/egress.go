package virt

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"
	"time"

	"github.com/lockstep-run/lockstep/logd"
)

// Outbound is a Network that also carries the program's own connections
// out of the run (egress, docs/egress.md). Ask sends the guard the
// request for outbound connection conn to to ("ADDR:PORT", or "icmp ADDR
// ..." for an echo); Join, once the log says the guard connected, makes
// sock (the agent's copy of the program's socket) a connection to the
// runtime's end of conn, whose bytes the log's data entries for conn are.
// Local makes every IPv4 address local in the run's network namespace
// (its kernel answers an echo the guard's was answered for).
//
// A UDP socket that sends out of the run without being connected (sendto
// with an address) has a flow per destination: Flowing reports whether
// sock already has one to to, and Flow makes conn that flow without
// connecting sock, so that what it sends to to reaches the runtime.
type Outbound interface {
	Network
	Ask(conn uint64, to string)
	Join(conn uint64, sock int, to netip.AddrPort) error
	Flow(conn uint64, sock int, to netip.AddrPort) error
	Flowing(sock int, to netip.AddrPort) bool
	Local() error
}

// Flowing reports whether UDP socket sock (the agent's copy of the
// program's) has a flow out of the run to to already (Outbound.Flowing).
func (tl *Timeline) Flowing(sock int, to netip.AddrPort) bool {
	out, ok := tl.net.(Outbound)
	return ok && out.Flowing(sock, to)
}

// ErrNoEgress says the run has no guard to connect out through (its time
// is not its log's, or its runtime delivers no connections).
var ErrNoEgress = errors.New("virt: the run has no egress")

// dial is a thread waiting for the log's answer to its outbound
// connection.
type dial struct {
	tid  int32
	done chan syscall.Errno
}

// Dial asks the guard for outbound connection (or echo) to on behalf of
// thread tid, holds the thread (it waits: the run may be still) until the
// stream's open entry for it gives the guard's result, and then calls
// join with the run's egress and the connection's number if the guard
// succeeded. errno is the
// guard's result (0: connected, or answered). valid is polled meanwhile;
// its error (the caller was interrupted) ends the wait.
func (tl *Timeline) Dial(tid int32, to string, join func(out Outbound, conn uint64) error, valid func() error) (syscall.Errno, error) {
	out, ok := tl.net.(Outbound)
	if !ok {
		return 0, ErrNoEgress
	}
	d := &dial{tid: tid, done: make(chan syscall.Errno, 1)}
	tl.mu.Lock()
	tl.dialed++
	conn := logd.EgressConn | tl.dialed
	tl.dials[conn] = d
	tl.w.quiet.Hold(tid)
	tl.mu.Unlock()
	out.Ask(conn, to)
	tl.kick()
	t := time.NewTicker(sleepPoll)
	defer t.Stop()
	for {
		select {
		case errno := <-d.done:
			if errno != 0 {
				return errno, nil
			}
			return 0, join(out, conn)
		case <-t.C:
			if err := valid(); err != nil {
				tl.mu.Lock()
				if tl.dials[conn] == d {
					d.done = nil // the answer, when it comes, is dropped
				}
				tl.mu.Unlock()
				tl.w.quiet.Unhold(tid)
				return 0, err
			}
		}
	}
}

// answer hands an outbound connection's open entry to the thread that
// waits for it: from here it runs, and joins its socket to the connection.
func (tl *Timeline) answer(conn uint64, p []byte) {
	tl.mu.Lock()
	d := tl.dials[conn]
	delete(tl.dials, conn)
	var done chan syscall.Errno
	if d != nil {
		done = d.done
	}
	tl.mu.Unlock()
	if done == nil || len(p) < 4 {
		return
	}
	tl.w.quiet.Unhold(d.tid)
	done <- syscall.Errno(binary.BigEndian.Uint32(p))
}
