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

// echo sends one ICMP echo request to addr from a raw socket (the guard
// runs as root) and reports whether a reply came within timeout.
func echo(addr netip.Addr, timeout time.Duration) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		return false, os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	var id [2]byte
	rand.Read(id[:])
	req := make([]byte, 64)
	req[0] = 8 // echo request
	copy(req[4:6], id[:])
	binary.BigEndian.PutUint16(req[6:], 1)
	binary.BigEndian.PutUint16(req[2:], checksum(req))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrInet4{Addr: addr.As4()}); err != nil {
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
		sa, ok := from.(*unix.SockaddrInet4)
		if !ok || n < 20 || netip.AddrFrom4(sa.Addr) != addr {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		if n < ihl+8 {
			continue
		}
		icmp := buf[ihl:n]
		if icmp[0] == 0 && icmp[4] == id[0] && icmp[5] == id[1] {
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
