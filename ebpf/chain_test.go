package ebpf

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/zeebo/blake3"
)

// TestChainDigests recomputes a chain by its definition: each checkpoint is
// BLAKE3-256 of the previous one's digest (32 zero bytes before the first)
// and the BLAKE3-256 of the segment's bytes.
func TestChainDigests(t *testing.T) {
	cs := NewChains(4)
	cs.Write("s", []byte("abcdefghij"))
	got := cs.Finish()
	prev := make([]byte, 32)
	for i, seg := range []string{"abcd", "efgh", "ij"} {
		h := blake3.Sum256([]byte(seg))
		sum := blake3.Sum256(append(append([]byte{}, prev...), h[:]...))
		prev = sum[:]
		if i >= len(got) || got[i].Digest != hex.EncodeToString(prev) {
			t.Fatalf("checkpoint %d: got %+v, want digest %x", i, got, prev)
		}
	}
	if len(got) != 3 {
		t.Errorf("%d checkpoints, want 3", len(got))
	}
}

// TestChainsLongSegments: segments too long to collect whole
// (maxBuffered) are hashed as they come, to the same digests; many
// segments hashed at once by the pool come out in order.
func TestChainsLongSegments(t *testing.T) {
	data := make([]byte, 3*maxBuffered+12345)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	run := func(k int64, piece int) []Checkpoint {
		cs := NewChains(k)
		for b := data; len(b) > 0; b = b[min(piece, len(b)):] {
			cs.Write("s", b[:min(piece, len(b))])
		}
		cs.Uncopied("s", 9)
		return cs.Finish()
	}
	long := int64(maxBuffered + 1)
	a, b := run(long, 1<<20), run(long, 999)
	if Diff(a, b) != nil || len(a) != 4 || a[3].Counts != 9 {
		t.Fatalf("%+v\n%+v", a, b)
	}
	// The same bytes in short segments: 4096 of them at once.
	c, d := run(1024, 1<<20), run(1024, 777)
	if Diff(c, d) != nil || len(c) != len(data)/1024+1 {
		t.Fatalf("%d and %d checkpoints differ: %+v", len(c), len(d), Diff(c, d))
	}
	prev := make([]byte, 32)
	for i, cp := range c {
		seg := data[cp.Start:cp.End]
		if i == len(c)-1 {
			seg = append(seg[:len(seg):len(seg)], "\x00lockstep:uncopied:9\x00"...)
		}
		h := blake3.Sum256(seg)
		sum := blake3.Sum256(append(prev[:32:32], h[:]...))
		prev = sum[:]
		if cp.Digest != hex.EncodeToString(prev) {
			t.Fatalf("checkpoint %d of %d: %s, want %x", i, len(c), cp.Digest, prev)
		}
	}
}

func TestChains(t *testing.T) {
	run := func(flip int) []Checkpoint {
		cs := NewChains(10)
		data := []byte(strings.Repeat("0123456789", 3) + "xyz")
		if flip >= 0 {
			data[flip] ^= 1
		}
		cs.Write("out", data[:7]) // chunking must not matter
		cs.Write("out", data[7:])
		cs.Write("err", []byte("e"))
		cs.Uncopied("err", 5)
		return cs.Finish()
	}
	a, b := run(-1), run(-1)
	if len(a) != 5 || Diff(a, b) != nil {
		t.Fatalf("%d checkpoints; diff %v", len(a), Diff(a, b))
	}
	if a[0].Stream != "err" || a[0].Counts != 5 || a[4].Start != 30 || a[4].End != 33 {
		t.Errorf("checkpoints %+v", a)
	}
	d := Diff(a, run(25))
	if len(d) != 1 || d[0].Stream != "out" || d[0].Index != 2 || d[0].A.Start != 20 {
		t.Errorf("one flipped byte at 25: %+v", d)
	}
	short := NewChains(10)
	short.Write("out", []byte(strings.Repeat("0123456789", 2)))
	d = Diff(a, short.Finish())
	if len(d) != 2 || d[1].Stream != "out" || d[1].Index != 2 || d[1].B != nil {
		t.Errorf("a shorter run: %+v", d)
	}
}

func TestParseEvent(t *testing.T) {
	b := make([]byte, eventHeader+5)
	le := binary.LittleEndian
	le.PutUint32(b[0:], EvWrite)
	le.PutUint32(b[4:], 1)
	le.PutUint32(b[8:], 10)
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], 7)
	le.PutUint32(b[40:], 5)
	copy(b[eventHeader:], "hello")
	e, err := ParseEvent(b)
	if err != nil || e.Pid != 10 || e.FD != 1 || e.Seq != 7 || !bytes.Equal(e.Data, []byte("hello")) || SyscallName(e.Nr) != "write" {
		t.Fatalf("%+v %v", e, err)
	}
	le.PutUint32(b[40:], 6)
	if _, err := ParseEvent(b); err == nil {
		t.Error("an event longer than its record was accepted")
	}
	if _, err := ParseEvent(b[:10]); err == nil {
		t.Error("a truncated event was accepted")
	}
}

func TestAuditPaths(t *testing.T) {
	for p, bad := range map[string]bool{
		"/proc/self/stat": true, "/proc/123/stat": true, "/proc/thread-self/status": true,
		"/proc/net/tcp": true, "/proc/interrupts": true, "/proc/./loadavg": true,
		"/proc/cpuinfo": false, "/etc/passwd": false, "/proc/self/cmdline": false,
	} {
		if got := auditPath(p) != ""; got != bad {
			t.Errorf("%s: flagged %v, want %v", p, got, bad)
		}
	}
	a := NewAudit()
	a.Add(Event{Type: EvAudit, Nr: 257, Pid: 10, Data: []byte("/proc/self/stat")})
	a.Add(Event{Type: EvAudit, Nr: 257, Pid: 10, Data: []byte("/proc/self/stat")})
	a.Add(Event{Type: EvAudit, Nr: 257, Pid: 10, Data: []byte("/etc/hosts")})
	a.Add(Event{Type: EvAudit, Nr: 224, Pid: 100})
	f := a.Findings()
	if len(f) != 2 || f[0].What != "open /proc/self/stat" || f[0].Count != 2 || f[1].What != "timer_gettime" {
		t.Errorf("%+v", f)
	}
}

func TestExplain(t *testing.T) {
	a := []TraceRecord{{Stream: "s", At: 0, Syscall: "write", Seq: 1, Data: []byte("hello ")}, {Stream: "s", At: 6, Syscall: "write", Seq: 2, Data: []byte("world")}}
	b := []TraceRecord{{Stream: "s", At: 0, Syscall: "write", Seq: 1, Data: []byte("hello ")}, {Stream: "s", At: 6, Syscall: "write", Seq: 2, Data: []byte("wprld")}}
	got := Explain("s", a, b)
	for _, want := range []string{"offset 7", `["o"]`, `["p"]`, "write #2"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q not in:\n%s", want, got)
		}
	}
}

// BenchmarkChains is the consumer's ceiling, with every CPU hashing: the rate at which a stream's
// digest chain takes in bytes, in records of 16 KiB (a full chunk) and of
// 4 KiB, from a buffer larger than the caches, as from the ring.
func BenchmarkChains(b *testing.B) {
	for _, size := range []int{16384, 4096} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			buf := make([]byte, 32<<20)
			cs := NewChains(64 << 10)
			b.SetBytes(int64(size))
			off := 0
			for b.Loop() {
				cs.Write("pid 10 fd 1", buf[off:off+size])
				off = (off + size) % len(buf)
			}
		})
	}
}
