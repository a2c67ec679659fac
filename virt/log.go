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
	LogVersion = 1
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
}

// Config returns the world the header describes.
func (h Header) Config() Config {
	return Config{Seed: h.Seed, Epoch: h.Epoch, CPUs: h.CPUs, MemBytes: h.MemBytes, Hostname: h.Hostname}
}

// Event is one value served: a wall-clock read, random bytes, an entropy
// device or virtual file opened, the AT_RANDOM bytes of an execve.
type Event struct {
	Seq   uint64 `json:"seq"`
	Kind  string `json:"kind"`
	What  string `json:"what"`
	Value string `json:"value"`
}

func (e Event) String() string { return fmt.Sprintf("%s %s = %s", e.Kind, e.What, e.Value) }

// ErrMismatch is wrapped by the error a replay returns at its first
// difference from the recording.
var ErrMismatch = errors.New("replay mismatch")

// Log records a run's events, or replays a recorded run and checks that
// this run asks for the same values in the same order.
type Log struct {
	mu       sync.Mutex
	replay   bool
	w        *bufio.Writer // record: guarded by mu
	f        *os.File
	recorded []Event // replay: the events read
	seq      uint64  // guarded by mu: events seen so far
	err      error   // guarded by mu: first mismatch, sticky
}

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
	return &Log{replay: true, recorded: events}, h, nil
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
	if h.Version != LogVersion {
		return h, nil, fmt.Errorf("version %d: this lockstep reads version %d", h.Version, LogVersion)
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

// Event records one value, or in replay checks it against the recording.
// After the first mismatch every call returns that error.
func (l *Log) Event(kind, what, value string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	e := Event{Seq: l.seq, Kind: kind, What: what, Value: value}
	l.seq++
	if !l.replay {
		b, _ := json.Marshal(e)
		l.w.Write(append(b, '\n'))
		return nil
	}
	if e.Seq >= uint64(len(l.recorded)) {
		l.err = fmt.Errorf("%w at event %d: the recording ended, this run asked for %s", ErrMismatch, e.Seq, e)
	} else if r := l.recorded[e.Seq]; r != e {
		l.err = fmt.Errorf("%w at event %d: recorded %s, this run got %s", ErrMismatch, e.Seq, r, e)
	}
	return l.err
}

// Close ends the log. In replay it reports a mismatch, or a recording
// with events this run never asked for.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.replay {
		if l.err == nil && l.seq < uint64(len(l.recorded)) {
			l.err = fmt.Errorf("%w: this run ended after %d events, the recording has %d (next: %s)",
				ErrMismatch, l.seq, len(l.recorded), l.recorded[l.seq])
		}
		return l.err
	}
	if err := l.w.Flush(); err != nil {
		l.f.Close()
		return fmt.Errorf("write log: %w", err)
	}
	return l.f.Close()
}
