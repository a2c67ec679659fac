package virt

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
)

// entropy derives every random byte from the seed. Each consumer has its
// own stream, so getrandom calls, opens of /dev/urandom and execs do not
// shift one another's values.
type entropy struct {
	seed uint64

	mu        sync.Mutex
	getrandom *rand.ChaCha8 // guarded by mu
	opens     uint64        // guarded by mu: entropy devices opened so far
	execs     uint64        // guarded by mu: execve calls seen so far
	uuids     uint64        // guarded by mu: /proc/sys/kernel/random/uuid reads
}

func newEntropy(seed uint64) *entropy {
	return &entropy{seed: seed, getrandom: stream(seed, "getrandom", 0)}
}

// stream returns the ChaCha8 stream named domain/index under seed.
func stream(seed uint64, domain string, index uint64) *rand.ChaCha8 {
	var b [8 + 8]byte
	binary.LittleEndian.PutUint64(b[:8], seed)
	binary.LittleEndian.PutUint64(b[8:], index)
	return rand.NewChaCha8(sha256.Sum256(append([]byte("lockstep/"+domain+"/"), b[:]...)))
}

// Random fills p from the getrandom stream.
func (w *World) Random(p []byte) error {
	w.ent.mu.Lock()
	w.ent.getrandom.Read(p)
	w.ent.mu.Unlock()
	return w.note("getrandom", fmt.Sprint(len(p)), digest(p))
}

// OpenEntropy returns the stream a new open of an entropy device (such as
// /dev/urandom) reads: endless and seeded.
func (w *World) OpenEntropy(dev string) (io.Reader, error) {
	w.ent.mu.Lock()
	n := w.ent.opens
	w.ent.opens++
	w.ent.mu.Unlock()
	if err := w.note("open", dev, fmt.Sprint(n)); err != nil {
		return nil, err
	}
	return stream(w.cfg.Seed, "device", n), nil
}

// ExecRandom returns the 16 AT_RANDOM bytes for the next execve of path.
func (w *World) ExecRandom(path string) ([16]byte, error) {
	w.ent.mu.Lock()
	n := w.ent.execs
	w.ent.execs++
	w.ent.mu.Unlock()
	var b [16]byte
	stream(w.cfg.Seed, "at_random", n).Read(b[:])
	return b, w.note("exec", path, hex.EncodeToString(b[:]))
}

// nextUUID returns a random (version 4) UUID for /proc/sys/kernel/random/uuid.
func (w *World) nextUUID() string {
	w.ent.mu.Lock()
	n := w.ent.uuids
	w.ent.uuids++
	w.ent.mu.Unlock()
	return uuid(stream(w.cfg.Seed, "uuid", n))
}

func uuid(r io.Reader) string {
	var b [16]byte
	io.ReadFull(r, b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// digest names bulk data in the log: the bytes when short, else a hash.
func digest(p []byte) string {
	if len(p) <= 32 {
		return hex.EncodeToString(p)
	}
	s := sha256.Sum256(p)
	return "sha256:" + hex.EncodeToString(s[:])
}
