package virt

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// LogFormat and LogVersion name the `lockstep exec --log` file: JSON
// lines, a Header first, then one Event per observable value served. See
// docs/exec-log.md.
const (
	LogFormat  = "lockstep-exec-log"
	LogVersion = 2
)

// Header is the first line of a log: the world the run was given.
type Header struct {
	Format   string    `json:"format"`
	Version  int       `json:"version"`
	Seed     uint64    `json:"seed"`
	Epoch    time.Time `json:"epoch"`
	CPUs     int       `json:"cpus"`
	MemBytes uint64    `json:"mem_bytes"`
	Hostname string    `json:"hostname"`
	Argv     []string  `json:"argv"`
	Env      []string  `json:"env,omitempty"` // the command's environment (absent before it was recorded)
}

// Config returns the world the header describes.
func (h Header) Config() Config {
	return Config{Seed: h.Seed, Epoch: h.Epoch, CPUs: h.CPUs, MemBytes: h.MemBytes, Hostname: h.Hostname}
}

// Event is one value served: a wall-clock read, random bytes, an entropy
// device or virtual file opened, the AT_RANDOM bytes of an execve. Proc
// names the process it was served to (its place in the process tree:
// "1", "1.0", ...; empty in version 1 files).
type Event struct {
	Seq   uint64 `json:"seq"`
	Proc  string `json:"proc,omitempty"`
	Kind  string `json:"kind"`
	What  string `json:"what"`
	Value string `json:"value"`
}

func (e Event) String() string {
	if e.Proc == "" {
		return fmt.Sprintf("%s %s = %s", e.Kind, e.What, e.Value)
	}
	return fmt.Sprintf("process %s: %s %s = %s", e.Proc, e.Kind, e.What, e.Value)
}

// same reports whether e is r, whatever their places in the log.
func (e Event) same(r Event) bool {
	return e.Proc == r.Proc && e.Kind == r.Kind && e.What == r.What && e.Value == r.Value
}

// ErrMismatch is wrapped by the error a replay returns at its first
// difference from the recording.
var ErrMismatch = errors.New("replay mismatch")

// Log records a run's events, or replays a recorded run and checks that
// this run asks for the same values: each process the same values in the
// same order. Processes that run at the same time (the two sides of a pipe) may ask in
// any order between them.
type Log struct {
	mu       sync.Mutex
	replay   bool
	w        *bufio.Writer // record: guarded by mu
	f        *os.File
	recorded []Event          // replay: the events read
	byProc   map[string][]int // replay: indexes into recorded, per process
	next     map[string]int   // replay, guarded by mu: per process, its next event in byProc
	seq      uint64           // guarded by mu: events seen so far
	outside  *Event           // guarded by mu: the first reach of another host
	err      error            // guarded by mu: first mismatch, sticky
}

// kindOutside is the event of a process reaching another host
// (World.Outside).
const kindOutside = "outside"

// Outside returns the recorded run's first reach of another host, if it
// made one: its replies are not in the log, so the run cannot be
// replayed from it.
func (l *Log) Outside() (Event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.outside == nil {
		return Event{}, false
	}
	return *l.outside, true
}

// Replaying reports whether l replays a recorded run.
func (l *Log) Replaying() bool { return l.replay }

// CreateLog starts recording to path.
func CreateLog(path string, h Header) (*Log, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	h.Format, h.Version = LogFormat, LogVersion
	l := &Log{f: f, w: bufio.NewWriter(f)}
	if err := json.NewEncoder(l.w).Encode(h); err != nil {
		f.Close()
		return nil, fmt.Errorf("write log header: %w", err)
	}
	return l, nil
}

// OpenLog reads a recorded log for replay. A log that is not one, is of
// another version, or is truncated or malformed is refused with the line.
func OpenLog(path string) (*Log, Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Header{}, fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	h, events, err := ReadLog(f)
	if err != nil {
		return nil, Header{}, fmt.Errorf("log %s: %w", path, err)
	}
	l := &Log{replay: true, recorded: events, byProc: map[string][]int{}, next: map[string]int{}}
	for i, e := range events {
		l.byProc[e.Proc] = append(l.byProc[e.Proc], i)
		if e.Kind == kindOutside && l.outside == nil {
			l.outside = &events[i]
		}
	}
	return l, h, nil
}

// ReadLog parses a log.
func ReadLog(r io.Reader) (Header, []Event, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var h Header
	if !sc.Scan() {
		return h, nil, errors.New("empty: not a lockstep exec log")
	}
	if err := strictUnmarshal(sc.Bytes(), &h); err != nil || h.Format != LogFormat {
		return h, nil, errors.New("line 1: not a lockstep exec log header")
	}
	if h.Version != LogVersion && h.Version != 1 { // 1: the same, without Proc
		return h, nil, fmt.Errorf("version %d: this lockstep reads versions 1 and %d", h.Version, LogVersion)
	}
	if err := h.Config().Validate(); err != nil {
		return h, nil, fmt.Errorf("line 1: %w", err)
	}
	var events []Event
	for line := 2; sc.Scan(); line++ {
		var e Event
		if err := strictUnmarshal(sc.Bytes(), &e); err != nil || e.Kind == "" {
			return h, nil, fmt.Errorf("line %d: malformed or truncated event", line)
		}
		if e.Seq != uint64(len(events)) {
			return h, nil, fmt.Errorf("line %d: event %d out of order (want %d)", line, e.Seq, len(events))
		}
		events = append(events, e)
	}
	if err := sc.Err(); err != nil {
		return h, nil, err
	}
	return h, events, nil
}

func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}

// Event records one value served to process proc ("" for the world), or
// in replay checks it against that process's next recorded one. After the
// first mismatch every call returns that error.
func (l *Log) Event(proc, kind, what, value string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	e := Event{Seq: l.seq, Proc: proc, Kind: kind, What: what, Value: value}
	l.seq++
	if !l.replay {
		if kind == kindOutside && l.outside == nil {
			l.outside = &e
		}
		b, _ := json.Marshal(e)
		l.w.Write(append(b, '\n'))
		return nil
	}
	idx, n := l.byProc[proc], l.next[proc]
	if n >= len(idx) {
		l.err = fmt.Errorf("%w at event %d: the recording has no more events%s, this run asked for %s", ErrMismatch, e.Seq, of(proc), e)
	} else if r := l.recorded[idx[n]]; !r.same(e) {
		l.err = fmt.Errorf("%w at event %d: recorded (event %d) %s, this run got %s", ErrMismatch, e.Seq, r.Seq, r, e)
	}
	l.next[proc]++
	return l.err
}

func of(proc string) string {
	if proc == "" {
		return ""
	}
	return " of process " + proc
}

// Close ends the log. In replay it reports a mismatch, or a recording
// with events this run never asked for.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.replay {
		if l.err == nil && l.seq < uint64(len(l.recorded)) {
			first := len(l.recorded)
			for proc, idx := range l.byProc {
				if n := l.next[proc]; n < len(idx) {
					first = min(first, idx[n])
				}
			}
			l.err = fmt.Errorf("%w: this run ended after %d events, the recording has %d (the first not asked for: event %d, %s)",
				ErrMismatch, l.seq, len(l.recorded), first, l.recorded[first])
		}
		return l.err
	}
	if err := l.w.Flush(); err != nil {
		l.f.Close()
		return fmt.Errorf("write log: %w", err)
	}
	return l.f.Close()
}
