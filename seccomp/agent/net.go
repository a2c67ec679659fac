//go:build linux

package agent

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// registerNet watches the program reach outside the run: a connect, or a
// sendto with an address, to an internet address other than this host's
// loopback, or to a loopback port no process of the run has a socket on
// (a server of the host). The call runs natively; the world notes it,
// because what the other side sends back is input that no log of an exec
// holds (virt.World.Outside).
func (a *Agent) registerNet() {
	a.handle(unix.SYS_CONNECT, "connect", a.connect)
	a.handle(unix.SYS_SENDTO, "sendto", a.sendto)
}

// connect: in a run whose time is its log's, a TCP connection out of the
// run goes through the guard (egress, docs/egress.md): the log says
// whether it connected, and carries what the remote sends. So does a UDP
// socket connected out of the run (a resolver's query to its nameserver):
// the log carries the datagrams the remote sends. Otherwise it runs
// natively, noted as outside.
func (a *Agent) connect(r *Req) (int64, error) {
	ap, ok := peer(r, r.Arg(1), r.Arg(2))
	tl := a.egress(ap, ok)
	if tl == nil {
		return a.outside(r, "connect", ap, ok)
	}
	sock, err := dupTargetFD(r.Tid(), int(int32(r.Arg(0))))
	if err != nil {
		return 0, errContinue // not a descriptor: the kernel says so
	}
	defer unix.Close(sock)
	to := ap.String()
	typ, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_TYPE)
	switch {
	case err == nil && typ == unix.SOCK_DGRAM:
		to = "udp " + to // a flow: datagrams to and from ap
	case err != nil || typ != unix.SOCK_STREAM:
		return a.outside(r, "connect", ap, ok)
	default:
		if _, err := unix.Getpeername(sock); err == nil {
			return 0, syscall.EISCONN
		}
	}
	join := func(out virt.Outbound, conn uint64) error { return out.Join(conn, sock, ap) }
	errno, err := tl.Dial(int32(r.Pid), to, join, r.Valid)
	switch {
	case errors.Is(err, virt.ErrNoEgress):
		return a.outside(r, "connect", ap, ok)
	case err != nil:
		return 0, err
	}
	return 0, errnoOrNil(errno)
}

// errnoOrNil is errno as an error, nil for 0.
func errnoOrNil(errno syscall.Errno) error {
	if errno == 0 {
		return nil
	}
	return errno
}

// sendto: a datagram, a TCP Fast Open or an ICMP echo request with an
// address out of the run goes through the guard (sendWith, echo).
func (a *Agent) sendto(r *Req) (int64, error) {
	ap, ok := peer(r, r.Arg(4), r.Arg(5))
	data := func() ([]byte, error) { return r.Read(r.Arg(1), int(min(r.Arg(2), 64<<10))) }
	return a.sendWith(r, "sendto", ap, ok, r.Arg(3), data)
}

// echo: in a run whose time is its log's, an ICMP echo request sent with
// sendto, sendmsg or sendmmsg (call) to an address other than loopback
// goes through the guard
// (docs/egress.md): the guard sends one echo, and the log says whether,
// and when, it was answered. Answered, the call runs natively at the
// log's time, and the run's own kernel answers it (every IPv4 address is
// local in the run's network namespace), so the program reads its reply
// at once: the round trip it measures is the guard's. Not answered, the
// request is dropped.
func (a *Agent) echo(r *Req, tl *virt.Timeline, call string, proto int, ap netip.AddrPort, data func() ([]byte, error)) (int64, error) {
	request := byte(8) // ICMP's echo request
	if proto == unix.IPPROTO_ICMPV6 {
		request = 128 // ICMPv6's
	}
	p, err := data()
	if err != nil || len(p) < 8 || p[0] != request { // a raw socket's other ICMP
		return a.outside(r, call, ap, true)
	}
	// The guard votes on the request: its address, sequence number and
	// data (the checksum and, on a datagram socket, the identifier are
	// the kernel's).
	sum := sha256.Sum256(append(p[6:8:8], p[8:]...))
	join := func(out virt.Outbound, _ uint64) error { return out.Local() }
	errno, err := tl.Dial(int32(r.Pid), fmt.Sprintf("icmp %s %x", ap.Addr(), sum[:8]), join, r.Valid)
	switch {
	case errors.Is(err, virt.ErrNoEgress):
		return a.outside(r, call, ap, true)
	case err != nil:
		return 0, err
	case errno != 0:
		return int64(len(p)), nil // lost on the way: no reply comes
	}
	return 0, errContinue
}

// sendUDP: a datagram sent with an address out of the run, from a UDP
// socket that is not connected there (a program that talks to several
// peers from one socket), goes through the guard on a flow per socket
// and destination, as a connected socket's do (connect): the first asks
// for the flow and waits for the log's answer; the datagram itself, and
// those after it, run natively and reach the agent's socket at ap.
func (a *Agent) sendUDP(r *Req, tl *virt.Timeline, sock int, ap netip.AddrPort) (int64, error) {
	if tl.Flowing(sock, ap) {
		return 0, errContinue
	}
	join := func(out virt.Outbound, conn uint64) error { return out.Flow(conn, sock, ap) }
	errno, err := tl.Dial(int32(r.Pid), "udp "+ap.String(), join, r.Valid)
	switch {
	case errors.Is(err, virt.ErrNoEgress):
		return a.outside(r, "sendto", ap, true)
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, errno
	}
	return 0, errContinue
}

// egress is the run's timeline if a call to ap may go out of the run
// through the guard: the run's time is its log's, and ap is an IPv4
// address other than loopback, or an IPv6 address other than loopback,
// link-local (it needs the host's interface) or multicast (ap comes back
// unmapped).
func (a *Agent) egress(ap netip.AddrPort, ok bool) *virt.Timeline {
	tl := a.world.Timeline()
	addr := ap.Addr()
	if tl == nil || !ok || addr.IsLoopback() || addr.IsUnspecified() ||
		addr.Is6() && (addr.IsLinkLocalUnicast() || addr.IsMulticast()) {
		return nil
	}
	return tl
}

// outside notes a call to ap (ok: the call has an internet address) as
// reaching outside the run, unless it stays on the run's own sockets.
func (a *Agent) outside(r *Req, call string, ap netip.AddrPort, ok bool) (int64, error) {
	if !a.world.Logged() { // nothing to note: a stream's log holds its inputs
		return 0, errContinue
	}
	if !ok || ap.Port() == 0 {
		return 0, errContinue
	}
	local := ap.Addr().IsLoopback() || ap.Addr().IsUnspecified()
	if !local || !a.ownSocket(r.Tid(), ap.Port()) {
		if err := a.world.Outside(r.Tgid(), call+" "+ap.String()); err != nil {
			return 0, err
		}
	}
	return 0, errContinue
}

// peer reads an internet socket address from the caller's memory; ok is
// false for any other family (a Unix socket) or an address it cannot read
// (the kernel, running the call, says why).
func peer(r *Req, addr, size uint64) (netip.AddrPort, bool) {
	if addr == 0 || size < unix.SizeofSockaddrInet4 {
		return netip.AddrPort{}, false
	}
	b, err := r.Read(addr, int(min(size, unix.SizeofSockaddrInet6)))
	if err != nil {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(b[2:4])
	switch binary.NativeEndian.Uint16(b[0:2]) {
	case unix.AF_INET:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), true
	case unix.AF_INET6:
		if len(b) < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

// ownSocket reports whether a process of the run has a TCP socket
// listening, or a UDP socket bound, on port in the network namespace of
// thread tid: a connection to it stays inside the run.
func (a *Agent) ownSocket(tid int, port uint16) bool {
	inodes := map[string]bool{}
	for _, t := range []struct{ file, state string }{{"tcp", "0A"}, {"tcp6", "0A"}, {"udp", ""}, {"udp6", ""}} {
		boundSockets(fmt.Sprintf("/proc/%d/net/%s", tid, t.file), port, t.state, inodes)
	}
	if len(inodes) == 0 {
		return false
	}
	for _, tg := range a.world.Processes() {
		dir := fmt.Sprintf("/proc/%d/fd", tg)
		fds, _ := os.ReadDir(dir)
		for _, fd := range fds {
			link, _ := os.Readlink(dir + "/" + fd.Name())
			if ino, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
				return true
			}
		}
	}
	return false
}

// boundSockets adds the inodes of the sockets in a /proc/net table
// (tcp, udp, ...) whose local port is port and, if state is given, whose
// state is that (0A: listening).
func boundSockets(path string, port uint16, state string, inodes map[string]bool) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		_, hexPort, _ := strings.Cut(fields[1], ":")
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err == nil && uint16(p) == port && (state == "" || fields[3] == state) {
			inodes[fields[9]] = true
		}
	}
}
