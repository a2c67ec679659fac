package logd

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

func key(t testing.TB, seed byte) ed25519.PrivateKey {
	t.Helper()
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

// sample writes a stream of n input entries with a checkpoint every 4.
func sample(t testing.TB, n int, k ed25519.PrivateKey) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := NewWriter(&b, "svc", k)
	if err != nil {
		t.Fatal(err)
	}
	w.Append(Entry{Kind: KindSeed, Payload: []byte{0, 0, 0, 0, 0, 0, 0, 7}})
	for i := 1; i < n; i++ {
		if _, err := w.Append(Entry{Kind: KindInput, Time: int64(i) * 1000, Payload: []byte(strings.Repeat("x", i))}); err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			w.Checkpoint()
		}
	}
	w.Checkpoint()
	w.Flush()
	return b.Bytes()
}

func TestEntryRoundTrip(t *testing.T) {
	for _, e := range []Entry{
		{Seq: 0, Kind: KindSeed, Payload: make([]byte, 8)},
		{Seq: 1 << 40, Kind: KindInput, Time: 1735689600e9, Payload: []byte("hello")},
		{Seq: 3, Kind: KindEnd, Time: 5},
		{Seq: 4, Kind: KindInput, Payload: make([]byte, MaxPayload)},
	} {
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeEntry(b)
		if err != nil || got.Seq != e.Seq || got.Kind != e.Kind || got.Time != e.Time || !bytes.Equal(got.Payload, e.Payload) {
			t.Errorf("%+v: got %+v, %v", e.Kind, got.Kind, err)
		}
	}
	if _, err := (&Entry{Kind: KindInput, Payload: make([]byte, MaxPayload+1)}).Marshal(); err == nil {
		t.Error("an oversized payload was encoded")
	}
	good, _ := (&Entry{Seq: 1, Kind: KindInput, Payload: []byte("ab")}).Marshal()
	for name, b := range map[string][]byte{
		"truncated":     good[:len(good)-1],
		"trailing":      append(append([]byte{}, good...), 0),
		"version 2":     append([]byte{2}, good[1:]...),
		"kind 9":        append([]byte{1, 9}, good[2:]...),
		"padded varint": append([]byte{1, byte(KindInput), 0x81, 0x00}, good[3:]...),
	} {
		if _, err := DecodeEntry(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestReadFileVerifies(t *testing.T) {
	k := key(t, 1)
	b := sample(t, 10, k)
	v, err := ReadFile(bytes.NewReader(b), k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Entries) != 10 || len(v.Checkpoints) != 3 {
		t.Fatalf("%d entries, %d checkpoints", len(v.Entries), len(v.Checkpoints))
	}
	// Proofs: every entry is in the last checkpoint's tree, and each
	// checkpoint's tree is a prefix of the next.
	last := v.Checkpoints[len(v.Checkpoints)-1]
	for i, rec := range v.Records {
		p, err := tlog.ProveRecord(last.Size, int64(i), &v.Tree)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, last.Size, last.Root, int64(i), tlog.RecordHash(rec)); err != nil {
			t.Errorf("entry %d: %v", i, err)
		}
	}
	first := v.Checkpoints[0]
	p, err := tlog.ProveTree(last.Size, first.Size, &v.Tree)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckTree(p, last.Size, last.Root, first.Size, first.Root); err != nil {
		t.Error(err)
	}
}

// TestReadFileRefuses: truncated, edited, reordered, forged logs and a
// checkpoint signed by another key are refused, naming the first bad line.
func TestReadFileRefuses(t *testing.T) {
	k := key(t, 1)
	pub := k.Public().(ed25519.PublicKey)
	good := sample(t, 10, k)
	lines := strings.SplitAfter(string(good), "\n")
	lines = lines[:len(lines)-1] // the empty string after the last newline
	join := func(ls []string) []byte { return []byte(strings.Join(ls, "")) }
	edit := func(i int, f func(string) string) []byte {
		ls := append([]string{}, lines...)
		ls[i] = f(ls[i])
		return join(ls)
	}
	// An entry re-encoded with other content (a forged entry).
	forged, _ := (&Entry{Seq: 2, Kind: KindInput, Time: 2000, Payload: []byte("yy")}).Marshal()
	forgedLine, _ := jsonLine(fileLine{E: forged})
	other := sample(t, 10, key(t, 2))
	otherLines := strings.SplitAfter(string(other), "\n")
	cases := map[string]struct {
		b    []byte
		want string
	}{
		"truncated mid-line":   {good[:len(good)-7], "truncated"},
		"cut after an entry":   {join(lines[:len(lines)-1]), "not covered"},
		"entry edited":         {edit(3, func(s string) string { return forgedLine }), "line 7: signed checkpoint of size 5 does not match the entries: entry 0..4"},
		"entries swapped":      {join(append(append(append([]string{}, lines[:2]...), lines[3], lines[2]), lines[4:]...)), "sequence number"},
		"entry dropped":        {join(append(append([]string{}, lines[:2]...), lines[3:]...)), "sequence number"},
		"garbage line":         {edit(2, func(string) string { return "{\"e\":\"!!\"}\n" }), "line 3"},
		"other key's log":      {other, "not the trusted key"},
		"other key checkpoint": {edit(6, func(string) string { return otherLines[6] }), "signature"},
		"empty":                {nil, "empty"},
	}
	for name, c := range cases {
		_, err := ReadFile(bytes.NewReader(c.b), pub)
		if err == nil || !errors.Is(err, ErrBadLog) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v (want an error with %q)", name, err, c.want)
		}
	}
}

func jsonLine(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b) + "\n", err
}

func FuzzDecodeEntry(f *testing.F) {
	for _, e := range []Entry{{Kind: KindSeed, Payload: make([]byte, 8)}, {Seq: 9, Kind: KindInput, Time: 7, Payload: []byte("x")}} {
		b, _ := e.Marshal()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEntry(b)
		if err != nil {
			return
		}
		again, err := e.Marshal()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded %x, encodes to %x (%v)", b, again, err)
		}
	})
}

func FuzzReadFile(f *testing.F) {
	k := key(f, 1)
	f.Add(sample(f, 6, k))
	f.Add([]byte("{\"format\":\"lockstep-log\",\"version\":1}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ReadFile(bytes.NewReader(b), k.Public().(ed25519.PublicKey))
		if err != nil {
			return
		}
		// Whatever verifies has a checkpoint over every entry.
		if n := len(v.Checkpoints); len(v.Entries) > 0 && (n == 0 || v.Checkpoints[n-1].Size != int64(len(v.Entries))) {
			t.Fatalf("%d entries verified without a covering checkpoint", len(v.Entries))
		}
	})
}

// timed writes a stream of input entries at the given times, with one
// checkpoint after them signed with time cpTime (0: a v1 checkpoint).
func timed(t *testing.T, k ed25519.PrivateKey, times []int64, cpTime int64) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := NewWriter(&b, "svc", k)
	if err != nil {
		t.Fatal(err)
	}
	w.Append(Entry{Kind: KindSeed, Payload: make([]byte, 8)})
	for _, at := range times {
		if _, err := w.Append(Entry{Kind: KindTick, Time: at}); err != nil {
			t.Fatal(err)
		}
	}
	root, _ := w.tree.Root(w.tree.Size())
	c := Checkpoint{Stream: "svc", Size: w.tree.Size(), Root: root, Time: cpTime}
	c.Sign(k)
	w.line(fileLine{C: &c})
	w.Flush()
	return b.Bytes()
}

// TestCheckpointTimes: a checkpoint signs its appender's time, and a log
// whose entries run ahead of it is refused, naming the entry; a log
// whose checkpoints carry no time (v1) is read as before.
func TestCheckpointTimes(t *testing.T) {
	k := key(t, 1)
	pub := k.Public().(ed25519.PublicKey)
	if _, err := ReadFile(bytes.NewReader(timed(t, k, []int64{1000, 2000, 3000}, 3000)), pub); err != nil {
		t.Errorf("a log within its checkpoint's time: %v", err)
	}
	if _, err := ReadFile(bytes.NewReader(timed(t, k, []int64{1000, 2000, 3000}, 0)), pub); err != nil {
		t.Errorf("a log with a v1 checkpoint: %v", err)
	}
	_, err := ReadFile(bytes.NewReader(timed(t, k, []int64{1000, 2000, 9e18}, 3000)), pub)
	if err == nil || !errors.Is(err, ErrBadLog) || !strings.Contains(err.Error(), "entry 3: time 9000000000000000000 is after the time of the signed checkpoint of size 4 (3000)") {
		t.Errorf("a tick beyond its checkpoint's time: %v", err)
	}
	if err := CheckTimes(Checkpoint{Size: 4, Time: 5000}, Checkpoint{Size: 6, Time: 4000}, nil); err == nil || !strings.Contains(err.Error(), "before the checkpoint of size 4") {
		t.Errorf("a checkpoint's time going back: %v", err)
	}
	// The writer stamps its own checkpoints: its clock, never before the
	// last entry.
	var b bytes.Buffer
	w, _ := NewWriter(&b, "svc", k)
	w.Append(Entry{Kind: KindSeed, Payload: make([]byte, 8)})
	w.Append(Entry{Kind: KindTick, Time: 9e18})
	c, _ := w.Checkpoint()
	if c.Time != 9e18 {
		t.Errorf("checkpoint after an entry at 9e18 stamped %d", c.Time)
	}
	parsed, err := ParseCheckpointText(c.Text())
	if err != nil || parsed.Time != c.Time {
		t.Errorf("checkpoint text %q read back as %+v, %v", c.Text(), parsed, err)
	}
}
