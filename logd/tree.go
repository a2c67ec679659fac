package logd

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strconv"
	"strings"

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

// Checkpoint names a tree size and root of one stream; the appender signs
// it with its ed25519 key.
type Checkpoint struct {
	Stream string    `json:"stream"`
	Size   int64     `json:"size"`
	Root   tlog.Hash `json:"root"`
	Sig    []byte    `json:"sig"`
}

const checkpointHeader = "lockstep-log checkpoint v1"

// Text is what is signed: four lines (docs/log-format.md).
func (c *Checkpoint) Text() []byte {
	return []byte(fmt.Sprintf("%s\n%s\n%d\n%s\n", checkpointHeader, c.Stream, c.Size, c.Root))
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
	if len(lines) != 5 || lines[0] != checkpointHeader || lines[4] != "" {
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
	return Checkpoint{Stream: lines[1], Size: size, Root: root}, nil
}

// EncodeKey and DecodeKey are the text form of public keys.
var (
	EncodeKey = wire.EncodeKey
	DecodeKey = wire.DecodeKey
)
