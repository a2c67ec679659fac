package logd

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// The portable file form of a stream (docs/log-format.md): JSON lines, a
// header, then entries ({"e": base64 record}) and signed checkpoints
// ({"c": {...}}) in order. It is what `lockstep log export` writes and
// `lockstep log import` and `lockstep log verify` read.

// FileFormat and FileVersion name the file form.
const (
	FileFormat  = "lockstep-log"
	FileVersion = 1
)

// FileHeader is the first line.
type FileHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	Stream  string `json:"stream"`
	Key     string `json:"key"` // the appender's ed25519 public key, base64
}

type fileLine struct {
	E []byte      `json:"e,omitempty"`
	C *Checkpoint `json:"c,omitempty"`
}

// Writer writes a stream in the file form, signing checkpoints.
type Writer struct {
	w      *bufio.Writer
	stream string
	key    ed25519.PrivateKey
	tree   Tree
	last   *Entry
}

// NewWriter writes the header of a new stream signed by key.
func NewWriter(w io.Writer, stream string, key ed25519.PrivateKey) (*Writer, error) {
	fw := &Writer{w: bufio.NewWriter(w), stream: stream, key: key}
	err := fw.line(FileHeader{Format: FileFormat, Version: FileVersion, Stream: stream,
		Key: EncodeKey(key.Public().(ed25519.PublicKey))})
	return fw, err
}

func (fw *Writer) line(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	fw.w.Write(b)
	return fw.w.WriteByte('\n')
}

// Append writes the next entry (its Seq is set here).
func (fw *Writer) Append(e Entry) (Entry, error) {
	e.Seq = uint64(fw.tree.Size())
	if err := checkOrder(fw.last, &e); err != nil {
		return e, err
	}
	rec, err := e.Marshal()
	if err != nil {
		return e, err
	}
	if err := fw.tree.Append(rec); err != nil {
		return e, err
	}
	fw.last = &e
	return e, fw.line(fileLine{E: rec})
}

// Checkpoint writes a signed checkpoint of everything appended so far.
func (fw *Writer) Checkpoint() (Checkpoint, error) {
	root, err := fw.tree.Root(fw.tree.Size())
	if err != nil {
		return Checkpoint{}, err
	}
	c := Checkpoint{Stream: fw.stream, Size: fw.tree.Size(), Root: root}
	if fw.last != nil {
		c.Stamp(fw.last.Time)
	}
	c.Sign(fw.key)
	return c, fw.line(fileLine{C: &c})
}

// Flush writes out what is buffered.
func (fw *Writer) Flush() error { return fw.w.Flush() }

// checkOrder checks e may follow prev: time never goes back, nothing
// follows the end of the stream.
func checkOrder(prev, e *Entry) error {
	if prev == nil {
		return nil
	}
	if prev.Kind == KindEnd {
		return fmt.Errorf("entry %d follows the end of the stream (entry %d)", e.Seq, prev.Seq)
	}
	if e.Time < prev.Time {
		return fmt.Errorf("entry %d: time %d is before entry %d's %d", e.Seq, e.Time, prev.Seq, prev.Time)
	}
	return nil
}

// Verified is a stream read and checked from its file form.
type Verified struct {
	Header      FileHeader
	Entries     []Entry
	Records     [][]byte // the encoded entries, as hashed
	Checkpoints []Checkpoint
	Tree        Tree
}

// ErrBadLog is wrapped by every verification error.
var ErrBadLog = errors.New("log refused")

// ReadFile reads and verifies a stream in the file form: every entry is
// well formed and in sequence, every checkpoint matches the entries before
// it and is signed by trusted (or, if trusted is nil, by the key the
// header names), and a checkpoint covers the last entry. An error names
// the first bad line and entry.
func ReadFile(r io.Reader, trusted ed25519.PublicKey) (*Verified, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	v := &Verified{}
	lineNo := 0
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: line %d: %s", ErrBadLog, lineNo, fmt.Sprintf(format, args...))
	}
	next := func() ([]byte, error) {
		lineNo++
		b, err := br.ReadBytes('\n')
		if err == io.EOF && len(b) > 0 {
			return nil, bad("truncated: the last line has no end")
		}
		if err != nil {
			return nil, err
		}
		if len(b) > 2*MaxPayload+1024 {
			return nil, bad("line too long")
		}
		return bytes.TrimSuffix(b, []byte("\n")), nil
	}
	b, err := next()
	if err == io.EOF {
		return nil, bad("empty file: no header")
	}
	if err != nil {
		return nil, err
	}
	dec := func(b []byte, v any) error {
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
	if err := dec(b, &v.Header); err != nil || v.Header.Format != FileFormat {
		return nil, bad("not a lockstep log (want a %q header)", FileFormat)
	}
	if v.Header.Version != FileVersion {
		return nil, bad("log file version %d; this build reads version %d", v.Header.Version, FileVersion)
	}
	key, err := DecodeKey(v.Header.Key)
	if err != nil {
		return nil, bad("header: %v", err)
	}
	if trusted != nil {
		if !bytes.Equal(key, trusted) {
			return nil, bad("the log names appender key %s, not the trusted key %s", v.Header.Key, EncodeKey(trusted))
		}
		key = trusted
	}
	var last *Entry
	for {
		b, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		var l fileLine
		if err := dec(b, &l); err != nil || (l.E == nil) == (l.C == nil) {
			return nil, bad("neither an entry nor a checkpoint")
		}
		if l.C != nil {
			c := *l.C
			if c.Stream != v.Header.Stream {
				return nil, bad("checkpoint of stream %q in a log of stream %q", c.Stream, v.Header.Stream)
			}
			if c.Size > v.Tree.Size() || c.Size < 0 {
				return nil, bad("checkpoint of size %d after only %d entries: entries are missing", c.Size, v.Tree.Size())
			}
			if err := c.Verify(key); err != nil {
				return nil, bad("%v", err)
			}
			root, _ := v.Tree.Root(c.Size)
			if root != c.Root {
				from := int64(0)
				if n := len(v.Checkpoints); n > 0 {
					from = v.Checkpoints[n-1].Size
				}
				return nil, bad("signed checkpoint of size %d does not match the entries: entry %d..%d was edited, reordered or forged", c.Size, from, c.Size-1)
			}
			var prev Checkpoint
			if n := len(v.Checkpoints); n > 0 {
				prev = v.Checkpoints[n-1]
			}
			if err := CheckTimes(prev, c, v.Entries[min(prev.Size, c.Size):c.Size]); err != nil {
				return nil, bad("%v", err)
			}
			v.Checkpoints = append(v.Checkpoints, c)
			continue
		}
		e, err := DecodeEntry(l.E)
		if err != nil {
			return nil, bad("entry %d: %v", v.Tree.Size(), err)
		}
		if e.Seq != uint64(v.Tree.Size()) {
			return nil, bad("entry %d has sequence number %d: entries are reordered or missing", v.Tree.Size(), e.Seq)
		}
		if err := checkOrder(last, &e); err != nil {
			return nil, bad("%v", err)
		}
		if err := v.Tree.Append(l.E); err != nil {
			return nil, err
		}
		v.Entries = append(v.Entries, e)
		v.Records = append(v.Records, l.E)
		last = &v.Entries[len(v.Entries)-1]
	}
	covered := int64(0)
	if n := len(v.Checkpoints); n > 0 {
		covered = v.Checkpoints[n-1].Size
	}
	if covered != v.Tree.Size() {
		return nil, fmt.Errorf("%w: entries %d..%d are not covered by a signed checkpoint: the log was cut short or extended", ErrBadLog, covered, v.Tree.Size()-1)
	}
	return v, nil
}
