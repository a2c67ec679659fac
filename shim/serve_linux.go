//go:build linux

package shim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/lockstep-run/lockstep/feed"
	"github.com/lockstep-run/lockstep/tracer"
	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// served delivers a served stream's connections to the container's
// service (virt.Network): an open entry becomes a real TCP connection to
// the service's port on the container's loopback, made in the container's
// network namespace; a data entry's bytes are written to it, and a close
// entry shuts its write side. So the service reads the same bytes, in the
// same order, at the same points, on every replica: the log delivers at
// the socket, not as packets. What the service sends back goes to the
// provider as response frames, and its close as a finished frame.
type served struct {
	a    *containerAgent
	port int
	send func(feed.Frame)

	mu       sync.Mutex
	conns    map[uint64]*servedConn
	listened bool // a connection to the port succeeded once
	out      outbound
}

type servedConn struct {
	c            net.Conn // a *net.TCPConn, or a *net.UDPConn for a UDP flow out of the run
	udp          bool
	flow         [2]netip.AddrPort // a UDP flow's addresses: the program's and the remote's
	fd           int               // c's, for the queue sizes
	clientClosed bool              // its close entry came
	serviceDone  bool              // the service closed it (or it failed)
}

func (a *containerAgent) newServed(port int, send func(feed.Frame)) *served {
	return &served{a: a, port: port, send: send, conns: map[uint64]*servedConn{}}
}

// Deliver is called by the timeline's writer, one entry at a time.
func (s *served) Deliver(op virt.NetOp, id uint64, p []byte) {
	switch op {
	case virt.NetOpen:
		c, err := s.dialReady()
		if err != nil {
			// Nothing listens at this point of the run (or the
			// connection failed): the client gets no bytes, on every
			// replica alike.
			s.send(feed.Frame{Kind: feed.Finished, Payload: connID(id)})
			return
		}
		s.take(id, c)
	case virt.NetData:
		sc := s.conn(id)
		if sc == nil {
			return
		}
		if _, err := sc.c.Write(p); err != nil && !sc.udp {
			return // the service closed it: it reads nothing more
		}
		s.landed(sc)
	case virt.NetClose:
		sc := s.conn(id)
		if sc == nil {
			return
		}
		tc, ok := sc.c.(*net.TCPConn)
		switch {
		case !ok: // a UDP flow ended: nothing answers at its address any more
			sc.c.Close()
		case len(p) >= 4 && syscall.Errno(binary.BigEndian.Uint32(p)) == syscall.ECONNRESET:
			tc.SetLinger(0) // the remote reset it: so does the program's side
			tc.Close()
		default:
			tc.CloseWrite()
		}
		s.mu.Lock()
		sc.clientClosed = true
		if sc.udp {
			s.flowClosed(id, sc)
		}
		s.forget(id, sc)
		s.mu.Unlock()
	}
}

// take makes c connection id: the agent's end of it, whose bytes from
// the program go to the guard.
func (s *served) take(id uint64, c net.Conn) {
	_, udp := c.(*net.UDPConn)
	sc := &servedConn{c: c, udp: udp, fd: connFD(c.(syscall.Conn))}
	s.mu.Lock()
	s.conns[id] = sc
	s.mu.Unlock()
	go s.read(id, sc)
}

func (s *served) conn(id uint64) *servedConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[id]
}

// forget closes a connection both sides are done with; s.mu is held.
func (s *served) forget(id uint64, sc *servedConn) {
	if sc.clientClosed && sc.serviceDone {
		sc.c.Close()
		delete(s.conns, id)
	}
}

// read passes what the service sends on a connection to the provider.
func (s *served) read(id uint64, sc *servedConn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := sc.c.Read(buf)
		switch {
		case sc.udp && err == nil: // one datagram, framed by its length (serve.datagrams)
			p := binary.BigEndian.AppendUint16(connID(id), uint16(n))
			s.send(feed.Frame{Kind: feed.Response, Payload: append(p, buf[:n]...)})
			continue
		case sc.udp && errors.Is(err, syscall.ECONNREFUSED):
			continue // a datagram delivered after the program closed its socket
		case n > 0:
			s.send(feed.Frame{Kind: feed.Response, Payload: append(connID(id), buf[:n]...)})
		}
		if err != nil {
			break
		}
	}
	s.send(feed.Frame{Kind: feed.Finished, Payload: connID(id)})
	s.mu.Lock()
	sc.serviceDone = true
	s.forget(id, sc)
	s.mu.Unlock()
}

// Busy reports whether the service sent bytes the agent has not read
// yet: until it has, a service blocked on a full socket is about to run.
func (s *served) Busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sc := range s.conns {
		if !sc.serviceDone {
			if n, err := unix.IoctlGetInt(sc.fd, unix.SIOCINQ); err == nil && n > 0 {
				return true
			}
		}
	}
	return false
}

// landed waits until the bytes written to a connection have left its
// send queue: on the loopback, they are then in the service's receive
// queue. A service that does not read (its window is full) leaves them
// queued; the wait ends after landWait.
func (s *served) landed(sc *servedConn) {
	unsent := uint(unix.SIOCOUTQNSD)
	if sc.udp {
		unsent = unix.SIOCOUTQ // a UDP socket's: what is still its own
	}
	for i := time.Duration(0); i < landWait/landPoll; i++ {
		if n, err := unix.IoctlGetInt(sc.fd, unsent); err != nil || n == 0 {
			return
		}
		virt.Pause(landPoll)
	}
}

const (
	landWait = 10 * time.Millisecond
	landPoll = 20 * time.Microsecond
)

// dialReady dials the service's port, and until the service has
// listened on it once, waits for it to (up to startWait): a client that
// comes while the service starts is held, as a readiness probe would
// hold it, and reaches it on every replica at the same point, once it
// listens, whatever each host's start-up took. Meanwhile the delivery is
// under way, so the run's time stands still. After the service first
// listened, a refused connection is the service's doing, refused at once.
func (s *served) dialReady() (*net.TCPConn, error) {
	deadline := time.Now().Add(startWait)
	for {
		c, err := s.dial()
		s.mu.Lock()
		waiting := !s.listened
		s.listened = s.listened || err == nil
		s.mu.Unlock()
		if err == nil || !waiting || !errors.Is(err, unix.ECONNREFUSED) || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(startPoll)
	}
}

const (
	startWait = 10 * time.Second
	startPoll = 5 * time.Millisecond
)

// dial connects to the service's port on the container's loopback.
func (s *served) dial() (*net.TCPConn, error) {
	fd, err := s.a.inNetns(func() (int, error) {
		return unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	})
	if err != nil {
		return nil, err
	}
	sa := &unix.SockaddrInet4{Port: s.port, Addr: [4]byte{127, 0, 0, 1}}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "served")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

var errNoWayBack = fmt.Errorf("could not return to the agent's network namespace")

// inNetns runs fn on a thread that enters the container's network
// namespace and leaves it after: a socket fn makes stays in the
// namespace it was made in.
func (a *containerAgent) inNetns(fn func() (int, error)) (int, error) {
	pid := a.initPID()
	if pid == 0 {
		return -1, fmt.Errorf("the container has not started")
	}
	type made struct {
		fd  int
		err error
	}
	ch := make(chan made, 1)
	go func() {
		runtime.LockOSThread() // not unlocked if it cannot go back: the thread then ends with this goroutine
		fd, err := enterNetns(pid, fn)
		ch <- made{fd, err}
		if err != errNoWayBack {
			runtime.UnlockOSThread()
		}
	}()
	m := <-ch
	return m.fd, m.err
}

// enterNetns runs fn in pid's network namespace; the calling thread is
// locked.
func enterNetns(pid int, fn func() (int, error)) (int, error) {
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(self)
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("the container's network namespace: %w", err)
	}
	defer unix.Close(ns)
	if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
		return -1, fmt.Errorf("enter the container's network namespace: %w", err)
	}
	fd, err := fn()
	if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, errNoWayBack
	}
	return fd, err
}

func connFD(c syscall.Conn) int {
	fd := -1
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}

func connID(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

// initPID is the container's init (host PID), or 0 before it started.
func (a *containerAgent) initPID() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nsPid
}

// stop kills the container's processes: at a stop entry (the run ends at
// that point of the log, the same on every replica), or when the agent
// fails.
func (a *containerAgent) stop() {
	if pid := a.initPID(); pid != 0 {
		tracer.KillNamespace(pid)
	}
}
