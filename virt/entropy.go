package virt

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
)

// stream returns the ChaCha8 stream named domain/index under seed.
func stream(seed uint64, domain string, index uint64) *rand.ChaCha8 {
	var b [8 + 8]byte
	binary.LittleEndian.PutUint64(b[:8], seed)
	binary.LittleEndian.PutUint64(b[8:], index)
	return rand.NewChaCha8(sha256.Sum256(append([]byte("lockstep/"+domain+"/"), b[:]...)))
}

// Random fills p from process tgid's getrandom stream.
func (w *World) Random(tgid int32, p []byte) error {
	w.pr.mu.Lock()
	pr := w.pr.get(tgid)
	if pr.getrandom == nil {
		pr.getrandom = stream(w.cfg.Seed, "getrandom/"+pr.name, 0)
	}
	pr.getrandom.Read(p)
	w.pr.mu.Unlock()
	return w.note(pr.name, "getrandom", fmt.Sprint(len(p)), digest(p))
}

// OpenEntropy returns the stream that process tgid's next open of an
// entropy device (such as /dev/urandom) reads: endless and seeded.
func (w *World) OpenEntropy(tgid int32, dev string) (io.Reader, error) {
	w.pr.mu.Lock()
	pr := w.pr.get(tgid)
	n := pr.opens
	pr.opens++
	w.pr.mu.Unlock()
	if err := w.note(pr.name, "open", dev, fmt.Sprint(n)); err != nil {
		return nil, err
	}
	return stream(w.cfg.Seed, "device/"+pr.name, n), nil
}

// ExecRandom returns the 16 AT_RANDOM bytes for process tgid's next
// execve, of path.
func (w *World) ExecRandom(tgid int32, path string) ([16]byte, error) {
	w.pr.mu.Lock()
	pr := w.pr.get(tgid)
	n := pr.execs
	pr.execs++
	w.pr.mu.Unlock()
	var b [16]byte
	stream(w.cfg.Seed, "at_random/"+pr.name, n).Read(b[:])
	return b, w.note(pr.name, "exec", path, hex.EncodeToString(b[:]))
}

// nextUUID returns a random (version 4) UUID for process tgid's next read
// of /proc/sys/kernel/random/uuid.
func (w *World) nextUUID(tgid int32) string {
	w.pr.mu.Lock()
	pr := w.pr.get(tgid)
	n := pr.uuids
	pr.uuids++
	w.pr.mu.Unlock()
	return uuid(stream(w.cfg.Seed, "uuid/"+pr.name, n))
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
