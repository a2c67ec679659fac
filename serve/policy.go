package serve

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Policy is where a run's program may connect out of the run
// (--allow-net HOST:PORT,...): each rule is an address or a network
// (CIDR), or a name resolved when the policy is made, and a port or any
// port (*). The zero Policy, and a nil one, allow nothing.
type Policy struct {
	rules []rule
}

type rule struct {
	net  netip.Prefix // any address: the zero Prefix with any set
	any  bool         // any address (* as HOST)
	port uint16       // 0: any port
	text string
}

// ParsePolicy parses --allow-net's value: comma-separated HOST:PORT,
// where HOST is an IP address, a CIDR network, a name (resolved now, by
// the guard's resolver: every address it has), or *, and PORT a number
// or *. IPv6 addresses go in brackets: [::1]:443.
func ParsePolicy(s string) (*Policy, error) {
	p := &Policy{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		host, port, err := net.SplitHostPort(item)
		if err != nil {
			return nil, fmt.Errorf("--allow-net %q: want HOST:PORT (an address, a CIDR network or a name, and a port or *), e.g. 10.0.0.5:443 or example.org:*", item)
		}
		r := rule{text: item}
		if port != "*" {
			n, err := strconv.ParseUint(port, 10, 16)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("--allow-net %q: the port %q is not 1 to 65535 or *", item, port)
			}
			r.port = uint16(n)
		}
		switch {
		case host == "*":
			r.any = true
			p.rules = append(p.rules, r)
		case strings.Contains(host, "/"):
			if r.net, err = netip.ParsePrefix(host); err != nil {
				return nil, fmt.Errorf("--allow-net %q: %v", item, err)
			}
			r.net = r.net.Masked()
			p.rules = append(p.rules, r)
		default:
			addrs, err := resolve(host)
			if err != nil {
				return nil, fmt.Errorf("--allow-net %q: %v", item, err)
			}
			for _, a := range addrs {
				r.net = netip.PrefixFrom(a, a.BitLen())
				p.rules = append(p.rules, r)
			}
		}
	}
	return p, nil
}

// resolve is an address, or a name's addresses.
func resolve(host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	names, err := net.LookupHost(host)
	if err != nil {
		return nil, fmt.Errorf("the name does not resolve here: %v", err)
	}
	var out []netip.Addr
	for _, n := range names {
		if a, err := netip.ParseAddr(n); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// Empty reports whether p allows nothing.
func (p *Policy) Empty() bool { return p == nil || len(p.rules) == 0 }

// Allows reports whether p lets the program connect to to (ip:port).
func (p *Policy) Allows(to string) bool {
	if p == nil {
		return false
	}
	ap, err := netip.ParseAddrPort(to)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	for _, r := range p.rules {
		if (r.port == 0 || r.port == ap.Port()) && (r.any || r.net.Contains(a)) {
			return true
		}
	}
	return false
}

// String is the policy as given.
func (p *Policy) String() string {
	if p.Empty() {
		return "none"
	}
	var s []string
	for _, r := range p.rules {
		if len(s) == 0 || s[len(s)-1] != r.text {
			s = append(s, r.text)
		}
	}
	return strings.Join(s, ",")
}
