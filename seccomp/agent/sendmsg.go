//go:build linux

package agent

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// registerSendmsg watches the calls that may name their destination
// inside a message header: sendmsg, and sendmmsg for each message. A
// message with no address, or to this run's own sockets, runs natively
// as it is; one out of the run goes through the guard as sendto's do: a
// UDP datagram on a flow per socket and destination, a TCP Fast Open
// (MSG_FASTOPEN) as a connect and a send.
func (a *Agent) registerSendmsg() {
	a.handle(unix.SYS_SENDMSG, "sendmsg", a.sendmsg)
	a.handle(unix.SYS_SENDMMSG, "sendmmsg", a.sendmmsg)
}

// msghdr's fields, as x86-64 lays them out (struct msghdr: 56 bytes;
// struct mmsghdr: a msghdr and a 4-byte length, padded to 64).
const (
	sizeofMsghdr  = 56
	sizeofMmsghdr = 64
	msgIovOff     = 16
	msgIovlenOff  = 24
	uioMaxIOV     = 1024 // UIO_MAXIOV: the most iovecs, and messages of a sendmmsg
)

// header is what the agent needs of a message header: its destination
// (name and namelen) and its data (iov and iovlen).
type header struct {
	name, namelen, iov, iovlen uint64
}

func readHeader(r *Req, addr uint64) (header, error) {
	b, err := r.Read(addr, sizeofMsghdr)
	if err != nil {
		return header{}, err
	}
	u := binary.NativeEndian.Uint64
	return header{name: u(b[0:]), namelen: uint64(binary.NativeEndian.Uint32(b[8:])), iov: u(b[msgIovOff:]), iovlen: u(b[msgIovlenOff:])}, nil
}

// sendmsg: a message with an address out of the run goes through the
// guard (sendWith); any other runs natively.
func (a *Agent) sendmsg(r *Req) (int64, error) {
	h, err := readHeader(r, r.Arg(1))
	if err != nil || h.name == 0 {
		return 0, errContinue // the kernel says what is wrong, if anything
	}
	ap, ok := peer(r, h.name, h.namelen)
	return a.sendWith(r, "sendmsg", ap, ok, r.Arg(2), func() ([]byte, error) { return r.gather(h) })
}

// sendmmsg: each message with an address out of the run on a UDP socket
// gets its flow through the guard first; then the call runs natively, and
// the datagrams reach the flows' sockets. A TCP Fast Open is taken from
// the first message alone, as sendmsg would take it: the call then sends
// only that message (a partial send, as the kernel may make).
func (a *Agent) sendmmsg(r *Req) (int64, error) {
	flags := r.Arg(3)
	vlen := min(r.Arg(2)&0xffffffff, uioMaxIOV)
	for i := uint64(0); i < vlen; i, flags = i+1, flags&^unix.MSG_FASTOPEN {
		h, err := readHeader(r, r.Arg(1)+i*sizeofMmsghdr)
		if err != nil {
			return 0, errContinue
		}
		if h.name == 0 {
			continue
		}
		ap, ok := peer(r, h.name, h.namelen)
		n, err := a.sendWith(r, "sendmmsg", ap, ok, flags, func() ([]byte, error) { return r.gather(h) })
		switch {
		case errors.Is(err, errContinue):
			continue
		case err != nil:
			return n, err
		}
		// The agent sent the first message (a Fast Open): the call sent
		// one message, whose length the kernel would have written into
		// its mmsghdr.
		if werr := r.Write(r.Arg(1)+sizeofMsghdr, binary.NativeEndian.AppendUint32(nil, uint32(n))); werr != nil {
			return 0, werr
		}
		return 1, nil
	}
	return 0, errContinue
}

// sendWith sends data with an address ap out of the run, through the
// guard, on the caller's socket (the call's first argument) with flags:
// a UDP datagram on its flow (the call then runs natively), a TCP Fast
// Open as connect does, the data then written by the agent on the
// connected socket (the kernel would refuse to Fast Open a connected
// one), and an ICMP echo request as echo says. Anything else is noted as
// outside the run and runs natively.
func (a *Agent) sendWith(r *Req, call string, ap netip.AddrPort, ok bool, flags uint64, data func() ([]byte, error)) (int64, error) {
	tl := a.egress(ap, ok)
	if tl == nil {
		return a.outside(r, call, ap, ok)
	}
	sock, err := dupTargetFD(r.Tid(), int(int32(r.Arg(0))))
	if err != nil {
		return 0, errContinue
	}
	defer unix.Close(sock)
	proto, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	switch {
	case err != nil:
	case proto == unix.IPPROTO_UDP:
		return a.sendUDP(r, tl, sock, ap)
	case proto == unix.IPPROTO_TCP && flags&unix.MSG_FASTOPEN != 0:
		return a.fastOpen(r, tl, sock, ap, data)
	case proto == unix.IPPROTO_ICMP || proto == unix.IPPROTO_ICMPV6:
		return a.echo(r, tl, call, proto, ap, data)
	}
	return a.outside(r, call, ap, ok)
}

// fastOpen connects the caller's TCP socket out of the run through the
// guard, as connect does, and writes data on it.
func (a *Agent) fastOpen(r *Req, tl *virt.Timeline, sock int, ap netip.AddrPort, data func() ([]byte, error)) (int64, error) {
	if _, err := unix.Getpeername(sock); err == nil {
		return 0, unix.EISCONN
	}
	p, err := data()
	if err != nil {
		return 0, err
	}
	join := func(out virt.Outbound, conn uint64) error { return out.Join(conn, sock, ap) }
	errno, err := tl.Dial(int32(r.Pid), ap.String(), join, r.Valid)
	switch {
	case errors.Is(err, virt.ErrNoEgress):
		return a.outside(r, "connect", ap, true)
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, errno
	}
	n, err := unix.Write(sock, p)
	if err != nil {
		return 0, err
	}
	return int64(n), nil
}

// gather reads a message's data from the caller's iovecs (at most 64 KiB:
// a Fast Open's first segment carries no more).
func (r *Req) gather(h header) ([]byte, error) {
	if h.iovlen > uioMaxIOV {
		return nil, unix.EMSGSIZE
	}
	var out []byte
	for i := uint64(0); i < h.iovlen && len(out) < 64<<10; i++ {
		b, err := r.Read(h.iov+16*i, 16)
		if err != nil {
			return nil, err
		}
		base, n := binary.NativeEndian.Uint64(b[0:]), binary.NativeEndian.Uint64(b[8:])
		n = min(n, uint64(64<<10-len(out)))
		if n == 0 {
			continue
		}
		p, err := r.Read(base, int(n))
		if err != nil {
			return nil, err
		}
		out = append(out, p...)
	}
	return out, nil
}
