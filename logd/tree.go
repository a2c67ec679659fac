package logd

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/lockstep-run/lockstep/logd/wire"
)

// Tree is a Merkle tree of record hashes in the Certificate Transparency
// design (golang.org/x/mod/sumdb/tlog), with every stored hash in memory.
type Tree struct {
	hashes []tlog.Hash // tlog's stored hashes, by StoredHashIndex
	size   int64
}

// Size is the number of records.
func (t *Tree) Size() int64 { return t.size }

// ReadHashes implements tlog.HashReader.
func (t *Tree) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(t.hashes)) {
			return nil, fmt.Errorf("hash %d is not stored", x)
		}
		out[i] = t.hashes[x]
	}
	return out, nil
}

// Append adds a record (an encoded entry).
func (t *Tree) Append(record []byte) error {
	hs, err := tlog.StoredHashes(t.size, record, t)
	if err != nil {
		return err
	}
	t.hashes = append(t.hashes, hs...)
	t.size++
	return nil
}

// Root is the tree hash over the first n records.
func (t *Tree) Root(n int64) (tlog.Hash, error) {
	if n > t.size {
		return tlog.Hash{}, fmt.Errorf("tree has %d records, not %d", t.size, n)
	}
	return tlog.TreeHash(n, t)
}

// Checkpoint names a tree size and root of one stream, and the time of the
// appender's clock when it signed it; the appender signs it with its
// ed25519 key. No entry it covers may be later than Time (CheckTimes).
type Checkpoint struct {
	Stream string    `json:"stream"`
	Size   int64     `json:"size"`
	Root   tlog.Hash `json:"root"`
	Time   int64     `json:"time,omitempty"` // Unix ns; 0 in checkpoints made before checkpoints had times (v1)
	Sig    []byte    `json:"sig"`
}

const (
	checkpointHeader   = "lockstep-log checkpoint v2"
	checkpointHeaderV1 = "lockstep-log checkpoint v1"
)

// Text is what is signed: five lines, or four for a checkpoint without a
// time (docs/log-format.md).
func (c *Checkpoint) Text() []byte {
	if c.Time == 0 {
		return []byte(fmt.Sprintf("%s\n%s\n%d\n%s\n", checkpointHeaderV1, c.Stream, c.Size, c.Root))
	}
	return []byte(fmt.Sprintf("%s\n%s\n%d\n%s\n%d\n", checkpointHeader, c.Stream, c.Size, c.Root, c.Time))
}

// Stamp sets c's time: the appender's clock now, and never before last,
// the time of the last entry it covers.
func (c *Checkpoint) Stamp(last int64) { c.Time = max(time.Now().UnixNano(), last) }

// CheckTimes checks checkpoint c, which follows prev (zero: the first),
// against the times of the entries it adds: entries[i] is entry
// prev.Size+i. A checkpoint's time never goes back, and no entry it
// covers is later than it: the log's time cannot run ahead of the clock
// its appender signed.
func CheckTimes(prev, c Checkpoint, entries []Entry) error {
	if c.Time == 0 {
		return nil // a v1 checkpoint says no time
	}
	if c.Time < prev.Time {
		return fmt.Errorf("the checkpoint of size %d says time %d, before the checkpoint of size %d's %d", c.Size, c.Time, prev.Size, prev.Time)
	}
	for _, e := range entries {
		if e.Time > c.Time {
			return fmt.Errorf("entry %d: time %d is after the time of the signed checkpoint of size %d (%d): the log's time ran ahead of its appender's clock", e.Seq, e.Time, c.Size, c.Time)
		}
	}
	return nil
}

// Sign signs c with key.
func (c *Checkpoint) Sign(key ed25519.PrivateKey) { c.Sig = ed25519.Sign(key, c.Text()) }

// ErrBadSignature is wrapped when a checkpoint is not signed by the key.
var ErrBadSignature = errors.New("checkpoint signature does not verify with the trusted key")

// Verify checks c's signature against the trusted key.
func (c *Checkpoint) Verify(key ed25519.PublicKey) error {
	if len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, c.Text(), c.Sig) {
		return fmt.Errorf("%w (stream %q, size %d)", ErrBadSignature, c.Stream, c.Size)
	}
	return nil
}

// ParseCheckpointText reads the signed text form back.
func ParseCheckpointText(b []byte) (Checkpoint, error) {
	lines := strings.Split(string(b), "\n")
	var t int64
	switch {
	case len(lines) == 5 && lines[0] == checkpointHeaderV1 && lines[4] == "":
	case len(lines) == 6 && lines[0] == checkpointHeader && lines[5] == "":
		var err error
		if t, err = strconv.ParseInt(lines[4], 10, 64); err != nil || t <= 0 {
			return Checkpoint{}, fmt.Errorf("checkpoint time %q", lines[4])
		}
	default:
		return Checkpoint{}, errors.New("not a lockstep checkpoint")
	}
	size, err := strconv.ParseInt(lines[2], 10, 64)
	if err != nil || size < 0 {
		return Checkpoint{}, fmt.Errorf("checkpoint size %q", lines[2])
	}
	root, err := tlog.ParseHash(lines[3])
	if err != nil {
		return Checkpoint{}, err
	}
	return Checkpoint{Stream: lines[1], Size: size, Root: root, Time: t}, nil
}

// EncodeKey and DecodeKey are the text form of public keys.
var (
	EncodeKey = wire.EncodeKey
	DecodeKey = wire.DecodeKey
)
