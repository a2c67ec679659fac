//go:build linux

package shim

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/lockstep-run/lockstep/feed"
	"github.com/lockstep-run/lockstep/logd"
	"golang.org/x/sys/unix"
)

// Egress (docs/egress.md): the program's connections out of the run
// reach a listener of the agent's, in the container's network namespace,
// at the address the program asked for; the guard made the real
// connection once, and the log carries its bytes. Every IPv4 address is
// local in the namespace (a local route for 0.0.0.0/0 on lo), so the
// program's socket is connected to the address it named (getpeername
// says so) over the loopback, whose TCP never reaches the program as
// packets: the bytes are delivered at the socket, as a served
// connection's are (virt.Outbound).

// outbound is the agent's state of the program's outbound connections.
type outbound struct {
	routed    bool
	listeners map[netip.AddrPort]*egressListener
	flows     map[[2]netip.AddrPort]uint64 // UDP flows open: the program's address and the remote's -> the flow
	sources   map[netip.Addr]netip.Addr    // the address datagrams to a remote come from (served.sender)
}

// egressListener is the agent's listener at one address; one connection
// is joined at a time.
type egressListener struct {
	mu sync.Mutex
	ln *net.TCPListener
}

// Ask sends the guard the request for outbound connection conn.
func (s *served) Ask(conn uint64, to string) {
	s.send(feed.Frame{Kind: feed.Dial, Payload: append(connID(conn), to...)})
}

// Local makes every IPv4 address local in the container's network
// namespace (once).
func (s *served) Local() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.local()
}

// local is Local with s.mu held.
func (s *served) local() error {
	if s.out.routed {
		return nil
	}
	if _, err := s.a.inNetns(func() (int, error) { return -1, addLocalRoute(unix.AF_INET) }); err != nil {
		return fmt.Errorf("make every address local in the container's network namespace: %w", err)
	}
	// IPv6 too, where the namespace has it (an IPv6 destination is
	// unreachable otherwise, on every replica alike).
	s.a.inNetns(func() (int, error) { return -1, addLocalRoute(unix.AF_INET6) })
	s.out.routed = true
	return nil
}

// Join connects sock (the agent's copy of the program's socket) to the
// agent's listener at to, and takes the connection as conn: the log's
// data entries for conn are written to it, and what the program sends on
// it goes to the guard.
func (s *served) Join(conn uint64, sock int, to netip.AddrPort) error {
	if typ, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_TYPE); err == nil && typ == unix.SOCK_DGRAM {
		return s.joinFlow(conn, sock, to, true)
	}
	l, err := s.listener(to)
	if err != nil {
		return fmt.Errorf("egress to %s: %w", to, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	bindPort(sock, conn)
	// Room for a whole data entry (1 MiB) in the program's receive queue,
	// so that each lands before the program reads it (served.landed).
	unix.SetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf)
	if err := connectWait(sock, to); err != nil {
		return fmt.Errorf("egress to %s: connect the program's socket: %w", to, err)
	}
	local, err := unix.Getsockname(sock)
	if err != nil {
		return fmt.Errorf("egress to %s: %w", to, err)
	}
	want := sockaddrPort(local)
	l.ln.SetDeadline(time.Now().Add(joinWait))
	for {
		c, err := l.ln.AcceptTCP()
		if err != nil {
			return fmt.Errorf("egress to %s: the program's connection did not arrive: %w", to, err)
		}
		if c.RemoteAddr().(*net.TCPAddr).AddrPort() != want {
			c.Close() // not the program's socket
			continue
		}
		s.take(conn, c)
		return nil
	}
}

const (
	joinWait = 5 * time.Second
	rcvBuf   = 2 << 20
)

// listener is the agent's listener at to, made on first use (and the
// namespace's local route with the first).
func (s *served) listener(to netip.AddrPort) (*egressListener, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.out.listeners[to]; l != nil {
		return l, nil
	}
	if err := s.local(); err != nil {
		return nil, err
	}
	fd, err := s.a.inNetns(func() (int, error) {
		fd, err := boundSocket(unix.SOCK_STREAM, to)
		if err != nil {
			return -1, err
		}
		return fd, unix.Listen(fd, 64)
	})
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "egress")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	l := &egressListener{ln: ln.(*net.TCPListener)}
	if s.out.listeners == nil {
		s.out.listeners = map[netip.AddrPort]*egressListener{}
	}
	s.out.listeners[to] = l
	return l, nil
}

// bindPort binds an unbound socket to a port that depends only on the
// connection's number, so that getsockname says the same on every
// replica; where it is taken, the kernel picks one.
func bindPort(sock int, conn uint64) {
	sa, err := unix.Getsockname(sock)
	if err != nil || sockaddrPort(sa).Port() != 0 {
		return
	}
	port := egressPorts + int((conn&^logd.EgressConn-1)%egressPortCount)
	switch sa.(type) {
	case *unix.SockaddrInet4:
		unix.Bind(sock, &unix.SockaddrInet4{Port: port})
	case *unix.SockaddrInet6:
		unix.Bind(sock, &unix.SockaddrInet6{Port: port})
	}
}

// The ports outbound connections are bound to: the kernel's default
// ephemeral range's upper part.
const (
	egressPorts     = 49152
	egressPortCount = 16384
)

// Flow makes conn a UDP flow from sock, the program's socket, to to
// without connecting sock: the program sends to to with sendto.
func (s *served) Flow(conn uint64, sock int, to netip.AddrPort) error {
	return s.joinFlow(conn, sock, to, false)
}

// Flowing reports whether the program's UDP socket sock has a flow to to
// open.
func (s *served) Flowing(sock int, to netip.AddrPort) bool {
	from, err := s.sender(sock, to)
	if err != nil || from.Port() == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.out.flows[[2]netip.AddrPort{from, to}]
	return ok
}

// joinFlow takes as flow conn a UDP socket of the agent's bound at to and
// connected to sock, the program's UDP socket (connected to to first, if
// connect: the program's connect): the log's data entries for conn are
// the datagrams it sends the program, and the datagrams the program sends
// to to reach it (and go to the guard).
func (s *served) joinFlow(conn uint64, sock int, to netip.AddrPort, connect bool) error {
	if err := s.Local(); err != nil {
		return err
	}
	bindPort(sock, conn)
	unix.SetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf)
	if connect {
		if err := unix.Connect(sock, sockaddr(sock, to)); err != nil {
			return fmt.Errorf("egress to udp %s: connect the program's socket: %w", to, err)
		}
	}
	program, err := s.sender(sock, to)
	if err != nil {
		return fmt.Errorf("egress to udp %s: %w", to, err)
	}
	fd, err := s.a.inNetns(func() (int, error) {
		// Several flows may come from one address (a resolver's queries,
		// each from a socket of its own; SO_REUSEPORT): each of the
		// agent's sockets there is connected to one of the program's.
		fd, err := boundSocket(unix.SOCK_DGRAM, to)
		if err != nil {
			return -1, err
		}
		if err := unix.Connect(fd, sockaddr(fd, program)); err != nil {
			unix.Close(fd)
			return -1, err
		}
		return fd, nil
	})
	if err != nil {
		return fmt.Errorf("egress to udp %s: %w", to, err)
	}
	f := os.NewFile(uintptr(fd), "egress")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return fmt.Errorf("egress to udp %s: %w", to, err)
	}
	s.take(conn, c)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out.flows == nil {
		s.out.flows = map[[2]netip.AddrPort]uint64{}
	}
	s.conns[conn].flow = [2]netip.AddrPort{program, to}
	s.out.flows[s.conns[conn].flow] = conn
	return nil
}

// flowClosed forgets flow conn; s.mu is held.
func (s *served) flowClosed(conn uint64, sc *servedConn) {
	if s.out.flows[sc.flow] == conn {
		delete(s.out.flows, sc.flow)
	}
}

// sender is the address datagrams from the program's socket sock to to
// come from: its own, or, bound to no address, the one the kernel picks
// for to (a socket connected to to in the container's namespace says).
func (s *served) sender(sock int, to netip.AddrPort) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(sock)
	if err != nil {
		return netip.AddrPort{}, err
	}
	from := sockaddrPort(sa)
	if !from.Addr().IsUnspecified() {
		return from, nil
	}
	s.mu.Lock()
	src, ok := s.out.sources[to.Addr()]
	s.mu.Unlock()
	if ok {
		return netip.AddrPortFrom(src, from.Port()), nil
	}
	_, err = s.a.inNetns(func() (int, error) {
		fd, err := boundSocket(unix.SOCK_DGRAM, netip.AddrPortFrom(netip.IPv6Unspecified(), 0))
		if to.Addr().Is4() {
			fd, err = boundSocket(unix.SOCK_DGRAM, netip.AddrPortFrom(netip.IPv4Unspecified(), 0))
		}
		if err != nil {
			return -1, err
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, sockaddr(fd, to)); err != nil {
			return -1, err
		}
		sa, err := unix.Getsockname(fd)
		src = sockaddrPort(sa).Addr()
		return -1, err
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	s.mu.Lock()
	if s.out.sources == nil {
		s.out.sources = map[netip.Addr]netip.Addr{}
	}
	s.out.sources[to.Addr()] = src
	s.mu.Unlock()
	return netip.AddrPortFrom(src, from.Port()), nil
}

// boundSocket is a socket of type typ bound at to, in the calling
// thread's network namespace, with SO_REUSEADDR and SO_REUSEPORT set;
// an IPv6 one with IP_FREEBIND too (a local route does not make an IPv6
// address one a socket may bind to).
func boundSocket(typ int, to netip.AddrPort) (int, error) {
	family := unix.AF_INET
	if to.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	if family == unix.AF_INET6 {
		unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_FREEBIND, 1)
	}
	if err := unix.Bind(fd, sockaddr(fd, to)); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// sockaddr is to as an address for socket sock (IPv4-mapped on an IPv6
// socket).
func sockaddr(sock int, to netip.AddrPort) unix.Sockaddr {
	if d, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil && d == unix.AF_INET6 {
		return &unix.SockaddrInet6{Addr: to.Addr().As16(), Port: int(to.Port())}
	}
	return &unix.SockaddrInet4{Addr: to.Addr().As4(), Port: int(to.Port())}
}

// connectWait connects sock to to and waits until it is connected (a
// program's non-blocking socket answers EINPROGRESS first).
func connectWait(sock int, to netip.AddrPort) error {
	err := unix.Connect(sock, sockaddr(sock, to))
	if err != unix.EINPROGRESS && err != unix.EAGAIN {
		return err
	}
	fds := []unix.PollFd{{Fd: int32(sock), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(fds, int(joinWait/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.ETIMEDOUT
		}
		if e, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || e != 0 {
			return syscall.Errno(e)
		}
		return nil
	}
}

// sockaddrPort is an internet socket address as an AddrPort (IPv4-mapped
// addresses unmapped).
func sockaddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// addLocalRoute adds "local 0.0.0.0/0 dev lo" (family AF_INET) or
// "local ::/0 dev lo" (AF_INET6) to the local routing table of the
// calling thread's network namespace (as `ip route add local 0.0.0.0/0
// dev lo table local` does): every address of the family is the
// namespace's own.
func addLocalRoute(family uint8) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	const loIndex = 1 // the loopback's index in every network namespace
	rt := unix.RtMsg{Family: family, Table: unix.RT_TABLE_LOCAL, Protocol: unix.RTPROT_BOOT, Scope: unix.RT_SCOPE_HOST, Type: unix.RTN_LOCAL}
	attr := binary.NativeEndian.AppendUint16(nil, 8)
	attr = binary.NativeEndian.AppendUint16(attr, unix.RTA_OIF)
	attr = binary.NativeEndian.AppendUint32(attr, loIndex)
	body := append((*[unix.SizeofRtMsg]byte)(unsafe.Pointer(&rt))[:], attr...)
	h := unix.NlMsghdr{Len: uint32(unix.SizeofNlMsghdr + len(body)), Type: unix.RTM_NEWROUTE,
		Flags: unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_CREATE | unix.NLM_F_REPLACE, Seq: 1}
	msg := append((*[unix.SizeofNlMsghdr]byte)(unsafe.Pointer(&h))[:], body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
				return syscall.Errno(-e)
			}
		}
	}
	return nil
}
