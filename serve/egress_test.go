package serve

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/logd"
)

// remote is a real TCP server: it greets each connection, then keeps
// what it reads until the client shuts its side, and closes.
func remote(t *testing.T) (addr string, got chan string) {
	return remoteSaying(t, "welcome\n")
}

// remoteSaying is remote, greeting with greeting.
func remoteSaying(t *testing.T, greeting string) (addr string, got chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got = make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(greeting))
			p, _ := io.ReadAll(c)
			got <- string(p)
			c.Close()
		}
	}()
	return ln.Addr().String(), got
}

// next is the gateway's next entry.
func next(t *testing.T, g *Gateway) logd.Entry {
	t.Helper()
	select {
	case e := <-g.Entries():
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no entry")
	}
	return logd.Entry{}
}

// TestEgressVote: the guard dials once a majority of the replicas asked
// for the same address, logs the result and the remote's bytes, and
// sends the remote only what a majority sent alike; the replica that
// sent other bytes is named, and so is one that asked for another
// address.
func TestEgressVote(t *testing.T) {
	addr, got := remote(t)
	g := New(nil, 5)
	defer g.Over()
	var err error
	if g.Allow, err = ParsePolicy("127.0.0.0/8:*"); err != nil {
		t.Fatal(err)
	}
	id := logd.EgressConn | 1
	g.Dial(0, id, addr)
	select {
	case e := <-g.Entries():
		t.Fatalf("dialed on one of five replicas' request: %v", e)
	case <-time.After(100 * time.Millisecond):
	}
	g.Dial(3, id, "127.0.0.1:1") // another address: named once the majority decides
	g.Dial(1, id, addr)
	g.Dial(2, id, addr)
	g.Dial(4, id, addr)
	e := next(t, g)
	if e.Kind != logd.KindOpen || logd.ConnID(e.Payload) != id || binary.BigEndian.Uint32(e.Payload[8:]) != 0 || string(e.Payload[12:]) != addr {
		t.Fatalf("open entry %v %q", e.Kind, e.Payload)
	}
	if e := next(t, g); e.Kind != logd.KindData || string(e.Payload[8:]) != "welcome\n" {
		t.Fatalf("data entry %v %q", e.Kind, e.Payload)
	}
	g.Response(0, id, []byte("GET /a\n"))
	g.Response(4, id, []byte("GET /b\n")) // the liar
	g.Response(1, id, []byte("GET /a\n"))
	g.Response(2, id, []byte("GET /a\n"))
	for _, r := range []int{0, 1, 2, 4} {
		g.Finished(r, id)
	}
	select {
	case p := <-got:
		if p != "GET /a\n" {
			t.Errorf("the remote got %q, want only the majority's bytes", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the remote's connection was not shut")
	}
	if e := next(t, g); e.Kind != logd.KindClose || len(e.Payload) != 8 {
		t.Errorf("close entry %v %q", e.Kind, e.Payload)
	}
	odd := g.Odd()
	if !strings.Contains(odd[4], "outbound connection 1: its response differs from the majority's at byte 5") {
		t.Errorf("replica 4: %q", odd[4])
	}
	if len(odd) != 2 {
		t.Errorf("odd: %v", odd)
	}
	if !strings.Contains(odd[3], "outbound connection 1: it connected to 127.0.0.1:1, the majority to "+addr) {
		t.Errorf("replica 3: %q", odd[3])
	}
	g.mu.Lock()
	left := len(g.dials)
	g.mu.Unlock()
	if left != 0 {
		t.Errorf("%d dial votes kept after every replica asked", left)
	}
}

// TestEgressPolicy: an address the policy does not allow is not dialed;
// the log says the connection was refused, and the user is told once.
func TestEgressPolicy(t *testing.T) {
	addr, got := remote(t)
	for _, allow := range []string{"", "10.0.0.0/8:*", "127.0.0.1:1"} {
		g := New(nil, 1)
		g.Allow, _ = ParsePolicy(allow)
		var said []string
		g.Log = func(s string) { said = append(said, s) }
		for i := uint64(1); i <= 2; i++ {
			g.Dial(0, logd.EgressConn|i, addr)
			e := next(t, g)
			if e.Kind != logd.KindOpen || syscall.Errno(binary.BigEndian.Uint32(e.Payload[8:])) != syscall.ECONNREFUSED {
				t.Errorf("--allow-net %q: %v %q", allow, e.Kind, e.Payload)
			}
		}
		want := "allow it with --allow-net " + addr
		if allow != "" {
			want = "which --allow-net does not allow"
		}
		if len(said) != 1 || !strings.Contains(said[0], want) {
			t.Errorf("--allow-net %q: said %q", allow, said)
		}
		g.Over()
	}
	select {
	case p := <-got:
		t.Errorf("a refused connection reached the remote: %q", p)
	default:
	}
}

func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy("10.1.2.3:443, 192.168.0.0/16:*, localhost:8080, *:53, [fd00:7::/64]:*")
	if err != nil {
		t.Fatal(err)
	}
	for to, want := range map[string]bool{
		"10.1.2.3:443": true, "10.1.2.3:80": false, "192.168.7.9:1": true, "127.0.0.1:8080": true,
		"127.0.0.1:8081": false, "8.8.8.8:53": true, "8.8.8.8:54": false, "bad": false,
		"[fd00:7::2]:8006": true, "[fd00:8::2]:8006": false,
	} {
		if p.Allows(to) != want {
			t.Errorf("%s: allowed %v", to, !want)
		}
	}
	for _, bad := range []string{"10.1.2.3", "10.1.2.3:0", "10.1.2.3:http", "10.0.0.0/33:1", "no.such.name.invalid:80"} {
		if _, err := ParsePolicy(bad); err == nil || !strings.Contains(err.Error(), "--allow-net") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if !(*Policy)(nil).Empty() || (*Policy)(nil).Allows("1.2.3.4:5") {
		t.Error("a nil policy allows something")
	}
}

// TestEgressLimit: past MaxOutbound open connections, a dial is refused
// (and the log says so), not made.
func TestEgressLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open until the test ends
		}
	}()
	g := New(nil, 1)
	defer g.Over()
	g.Allow, _ = ParsePolicy("127.0.0.1:*")
	var said []string
	g.Log = func(s string) { said = append(said, s) }
	for i := uint64(1); i <= MaxOutbound+1; i++ {
		g.Dial(0, logd.EgressConn|i, ln.Addr().String())
		e := next(t, g)
		errno := syscall.Errno(binary.BigEndian.Uint32(e.Payload[8:]))
		if want := syscall.Errno(0); i > MaxOutbound && errno != syscall.ECONNREFUSED || i <= MaxOutbound && errno != want {
			t.Fatalf("dial %d: %v", i, errno)
		}
	}
	if len(said) != 1 || !strings.Contains(said[0], "the most the guard keeps") {
		t.Errorf("said %q", said)
	}
}
