package serve

import (
	"encoding/binary"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/logd"
)

// TestEgressUDP: a UDP flow through the guard. A real UDP server answers
// each datagram; the guard opens the flow once a majority asked, sends the
// server each datagram a majority sent alike, once (never the liar's),
// logs each answer as one data entry, and closes the flow after it has
// been idle.
func TestEgressUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got := make(chan string, 8)
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- string(buf[:n])
			pc.WriteTo(append([]byte("re:"), buf[:n]...), from)
		}
	}()
	defer func(d time.Duration) { udpIdle = d }(udpIdle)
	udpIdle = 500 * time.Millisecond
	g := New(nil, 3)
	defer g.Over()
	g.Allow, _ = ParsePolicy("127.0.0.1:*")
	id, to := logd.EgressConn|1, "udp "+pc.LocalAddr().String()
	for r := range 3 {
		g.Dial(r, id, to)
	}
	if e := next(t, g); e.Kind != logd.KindOpen || binary.BigEndian.Uint32(e.Payload[8:]) != 0 || string(e.Payload[12:]) != to {
		t.Fatalf("open entry %v %q", e.Kind, e.Payload)
	}
	frame := func(ps ...string) (b []byte) {
		for _, p := range ps {
			b = append(binary.BigEndian.AppendUint16(b, uint16(len(p))), p...)
		}
		return b
	}
	both := frame("query one", "", "query two")
	g.Response(0, id, both[:5]) // a datagram split between frames: still one
	g.Response(0, id, both[5:])
	g.Response(2, id, frame("query one", "", "forged")) // the liar
	g.Response(1, id, both)
	for _, want := range []string{"query one", "", "query two"} {
		select {
		case p := <-got:
			if p != want {
				t.Fatalf("the server got %q, want %q", p, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the server did not get %q", want)
		}
		if e := next(t, g); e.Kind != logd.KindData || string(e.Payload[8:]) != "re:"+want {
			t.Fatalf("data entry %v %q, want the answer to %q", e.Kind, e.Payload, want)
		}
	}
	start := time.Now()
	if e := next(t, g); e.Kind != logd.KindClose || len(e.Payload) != 8 {
		t.Errorf("close entry %v %q", e.Kind, e.Payload)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("the flow closed after %v idle, before udpIdle", d)
	}
	select {
	case p := <-got:
		t.Errorf("the server also got %q", p)
	default:
	}
	if odd := g.Odd(); !strings.Contains(odd[2], "outbound connection 1") || len(odd) != 1 {
		t.Errorf("odd: %v", odd)
	}
}

// TestEgressUDPRefused: a flow the policy does not allow is refused, as a
// connection is.
func TestEgressUDPRefused(t *testing.T) {
	g := New(nil, 1)
	defer g.Over()
	var said []string
	g.Log = func(s string) { said = append(said, s) }
	g.Dial(0, logd.EgressConn|1, "udp 10.9.9.9:53")
	e := next(t, g)
	if e.Kind != logd.KindOpen || syscall.Errno(binary.BigEndian.Uint32(e.Payload[8:])) != syscall.ECONNREFUSED {
		t.Errorf("%v %q", e.Kind, e.Payload)
	}
	if len(said) != 1 || !strings.Contains(said[0], "sent UDP to 10.9.9.9:53; egress is off") || !strings.Contains(said[0], "--allow-net 10.9.9.9:53") {
		t.Errorf("said %q", said)
	}
}

// TestEgressUDPEvict: at MaxOutbound open, a new connection is made by
// closing the UDP flow idle longest (it has a close entry), not refused.
func TestEgressUDPEvict(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	g := New(nil, 1)
	defer g.Over()
	g.Allow, _ = ParsePolicy("127.0.0.1:*")
	for i := uint64(1); i <= MaxOutbound; i++ {
		g.Dial(0, logd.EgressConn|i, "udp "+pc.LocalAddr().String())
		if e := next(t, g); e.Kind != logd.KindOpen || binary.BigEndian.Uint32(e.Payload[8:]) != 0 {
			t.Fatalf("flow %d: %v %q", i, e.Kind, e.Payload)
		}
	}
	time.Sleep(1100 * time.Millisecond) // idle for a second: they may be closed
	g.Dial(0, logd.EgressConn|(MaxOutbound+1), "udp "+pc.LocalAddr().String())
	kinds := map[logd.Kind]int{}
	for range 2 {
		e := next(t, g)
		kinds[e.Kind]++
		if e.Kind == logd.KindOpen && binary.BigEndian.Uint32(e.Payload[8:]) != 0 {
			t.Errorf("the flow past the limit was refused: %q", e.Payload)
		}
	}
	if kinds[logd.KindOpen] != 1 || kinds[logd.KindClose] != 1 {
		t.Errorf("entries: %v, want one flow closed and the new one open", kinds)
	}
}
