//go:build linux

package serve

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// echo sends one ICMP (or, to an IPv6 address, ICMPv6) echo request to
// addr from a raw socket (the guard runs as root) and reports whether a
// reply came within timeout.
func echo(addr netip.Addr, timeout time.Duration) (bool, error) {
	family, proto, request, reply := unix.AF_INET6, unix.IPPROTO_ICMPV6, byte(128), byte(129)
	var to unix.Sockaddr = &unix.SockaddrInet6{Addr: addr.As16()}
	if addr.Is4() {
		family, proto, request, reply = unix.AF_INET, unix.IPPROTO_ICMP, 8, 0
		to = &unix.SockaddrInet4{Addr: addr.As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return false, os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	var id [2]byte
	rand.Read(id[:])
	req := make([]byte, 64)
	req[0] = request
	copy(req[4:6], id[:])
	binary.BigEndian.PutUint16(req[6:], 1)
	if !addr.Is6() { // the kernel sums an ICMPv6 socket's
		binary.BigEndian.PutUint16(req[2:], checksum(req))
	}
	if err := unix.Sendto(fd, req, 0, to); err != nil {
		return false, os.NewSyscallError("sendto", err)
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, os.NewSyscallError("recvfrom", err)
		}
		var icmp []byte
		switch sa := from.(type) {
		case *unix.SockaddrInet4: // the IP header comes first
			if ihl := int(buf[0]&0x0f) * 4; n >= 20 && n >= ihl+8 && netip.AddrFrom4(sa.Addr) == addr {
				icmp = buf[ihl:n]
			}
		case *unix.SockaddrInet6: // no header
			if n >= 8 && netip.AddrFrom16(sa.Addr) == addr {
				icmp = buf[:n]
			}
		}
		if len(icmp) >= 8 && icmp[0] == reply && icmp[4] == id[0] && icmp[5] == id[1] {
			return true, nil
		}
	}
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
