package ebpf

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// TraceRecord is one traced syscall's bytes on one stream, kept so that a
// divergence can be shown byte by byte (lockstep exec --trace).
type TraceRecord struct {
	Stream  string `json:"stream"`
	At      int64  `json:"at"`      // offset in the stream
	Syscall string `json:"syscall"` // write, sendmsg, ...
	Seq     uint64 `json:"seq"`     // the thread's syscall number
	Tid     uint32 `json:"tid"`
	Data    []byte `json:"data,omitempty"`
	Count   int64  `json:"uncopied,omitempty"`
}

// TraceWriter writes Records as JSON lines.
type TraceWriter struct {
	w   *bufio.Writer
	f   *os.File
	enc *json.Encoder
	at  map[string]int64
}

// CreateTrace creates a trace file.
func CreateTrace(path string) (*TraceWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriter(f)
	return &TraceWriter{w: w, f: f, enc: json.NewEncoder(w), at: map[string]int64{}}, nil
}

// Add records an event on stream.
func (t *TraceWriter) Add(stream string, e Event) {
	r := TraceRecord{Stream: stream, At: t.at[stream], Syscall: SyscallName(e.Nr), Seq: e.Seq, Tid: e.Tid, Data: e.Data}
	if e.Type == EvCount {
		r.Count = int64(e.Len)
	}
	t.at[stream] += int64(len(e.Data))
	t.enc.Encode(r)
}

// Close flushes and closes the file.
func (t *TraceWriter) Close() error {
	if err := t.w.Flush(); err != nil {
		t.f.Close()
		return err
	}
	return t.f.Close()
}

// ReadTrace reads a trace file.
func ReadTrace(path string) ([]TraceRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []TraceRecord
	dec := json.NewDecoder(f)
	for {
		var r TraceRecord
		if err := dec.Decode(&r); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: record %d: %v", path, len(out)+1, err)
		}
		out = append(out, r)
	}
}

// Explain shows where two traces of one stream first differ: the byte,
// its context in both runs, and the syscalls that wrote it.
func Explain(stream string, a, b []TraceRecord) string {
	sa, sb := streamBytes(stream, a), streamBytes(stream, b)
	n := min(len(sa), len(sb))
	at := n
	for i := 0; i < n; i++ {
		if sa[i] != sb[i] {
			at = i
			break
		}
	}
	if at == n && len(sa) == len(sb) {
		return fmt.Sprintf("  the traced bytes of %s are the same (%d bytes); the difference is in uncopied bytes\n", stream, len(sa))
	}
	var s strings.Builder
	fmt.Fprintf(&s, "  first differing byte: offset %d\n", at)
	for _, side := range []struct {
		name string
		data []byte
		recs []TraceRecord
	}{{"A", sa, a}, {"B", sb, b}} {
		lo, hi := max(0, at-24), min(len(side.data), at+24)
		ctx := "(stream ends here)"
		if at < len(side.data) {
			ctx = strconv.Quote(string(side.data[lo:at])) + " [" + strconv.Quote(string(side.data[at:at+1])) + "] " + strconv.Quote(string(side.data[at+1:hi]))
		}
		fmt.Fprintf(&s, "  %s: %s\n", side.name, ctx)
		for _, r := range side.recs {
			end := r.At + int64(len(r.Data))
			if r.Stream == stream && ((int64(at) >= r.At && int64(at) < end) || (r.At >= int64(at)-1 && r.At <= int64(at)+1)) {
				fmt.Fprintf(&s, "     %s #%d by thread %d: bytes %d..%d\n", r.Syscall, r.Seq, r.Tid, r.At, end)
			}
		}
	}
	return s.String()
}

func streamBytes(stream string, recs []TraceRecord) []byte {
	var out []byte
	for _, r := range recs {
		if r.Stream == stream {
			out = append(out, r.Data...)
		}
	}
	return out
}
