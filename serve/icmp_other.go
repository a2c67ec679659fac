//go:build !linux

package serve

import (
	"errors"
	"net/netip"
	"time"
)

func echo(netip.Addr, time.Duration) (bool, error) {
	return false, errors.New("ICMP echo is built for Linux only")
}
