//go:build linux

package serve

import (
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestEcho: the guard's echo gets a reply from this host's loopback, over
// ICMP and ICMPv6 (it needs a raw socket: root).
func TestEcho(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a raw socket needs root")
	}
	for _, a := range []string{"127.0.0.1", "::1"} {
		if a == "::1" {
			if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
				continue // no IPv6 here
			}
		}
		ok, err := echo(netip.MustParseAddr(a), time.Second)
		if !ok || err != nil {
			t.Errorf("echo %s: answered %v, %v", a, ok, err)
		}
	}
}
