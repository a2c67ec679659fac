package virt

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
)

// entropy derives every random byte from the seed. Each process has its
// own streams, named by its place in the process tree (Root, Fork): the
// k-th process forked by process "1.0" is "1.0.k". Concurrent processes
// (the two sides of a pipe) then get the same bytes whatever order they
// ask in, and within a process each consumer has its own stream, so
// getrandom calls, opens of /dev/urandom and execs do not shift one
// another's values.
type entropy struct {
	seed uint64

	mu      sync.Mutex
	procs   map[int32]*proc // by host thread group ID; guarded by mu
	roots   uint64          // guarded by mu: processes given by Root so far
	unknown *proc           // processes never announced (not traced from their start)
	uuids   uint64          // guarded by mu: /proc/sys/kernel/random/uuid reads
}

// proc is one process's entropy: its name in the tree and its streams.
type proc struct {
	name      string
	forks     uint64        // children forked so far
	execs     uint64        // execve calls so far
	opens     uint64        // entropy devices opened so far
	getrandom *rand.ChaCha8 // made at the first getrandom
}

func newEntropy(seed uint64) *entropy {
	return &entropy{seed: seed, procs: map[int32]*proc{}, unknown: &proc{name: "?"}}
}

// stream returns the ChaCha8 stream named domain/index under seed.
func stream(seed uint64, domain string, index uint64) *rand.ChaCha8 {
	var b [8 + 8]byte
	binary.LittleEndian.PutUint64(b[:8], seed)
	binary.LittleEndian.PutUint64(b[8:], index)
	return rand.NewChaCha8(sha256.Sum256(append([]byte("lockstep/"+domain+"/"), b[:]...)))
}

// Root announces tgid as the root of a process tree: the traced command,
// or a process exec'd into a container. Roots are named 1, 2, ... in the
// order announced.
func (w *World) Root(tgid int32) {
	w.ent.mu.Lock()
	defer w.ent.mu.Unlock()
	w.ent.roots++
	w.ent.procs[tgid] = &proc{name: strconv.FormatUint(w.ent.roots, 10)}
}

// Fork announces child, a new process forked by parent (not a thread).
func (w *World) Fork(parent, child int32) {
	w.ent.mu.Lock()
	defer w.ent.mu.Unlock()
	p := w.ent.procs[parent]
	if p == nil {
		p = w.ent.unknown
	}
	w.ent.procs[child] = &proc{name: p.name + "." + strconv.FormatUint(p.forks, 10)}
	p.forks++
}

// Exit forgets a process that has exited.
func (w *World) Exit(tgid int32) {
	w.ent.mu.Lock()
	delete(w.ent.procs, tgid)
	w.ent.mu.Unlock()
}

// process returns tgid's entropy; w.ent.mu is held.
func (w *World) process(tgid int32) *proc {
	if p := w.ent.procs[tgid]; p != nil {
		return p
	}
	return w.ent.unknown
}

// Random fills p from process tgid's getrandom stream.
func (w *World) Random(tgid int32, p []byte) error {
	w.ent.mu.Lock()
	pr := w.process(tgid)
	if pr.getrandom == nil {
		pr.getrandom = stream(w.cfg.Seed, "getrandom/"+pr.name, 0)
	}
	pr.getrandom.Read(p)
	w.ent.mu.Unlock()
	return w.note(pr.name, "getrandom", fmt.Sprint(len(p)), digest(p))
}

// OpenEntropy returns the stream that process tgid's next open of an
// entropy device (such as /dev/urandom) reads: endless and seeded.
func (w *World) OpenEntropy(tgid int32, dev string) (io.Reader, error) {
	w.ent.mu.Lock()
	pr := w.process(tgid)
	n := pr.opens
	pr.opens++
	w.ent.mu.Unlock()
	if err := w.note(pr.name, "open", dev, fmt.Sprint(n)); err != nil {
		return nil, err
	}
	return stream(w.cfg.Seed, "device/"+pr.name, n), nil
}

// ExecRandom returns the 16 AT_RANDOM bytes for process tgid's next
// execve, of path.
func (w *World) ExecRandom(tgid int32, path string) ([16]byte, error) {
	w.ent.mu.Lock()
	pr := w.process(tgid)
	n := pr.execs
	pr.execs++
	w.ent.mu.Unlock()
	var b [16]byte
	stream(w.cfg.Seed, "at_random/"+pr.name, n).Read(b[:])
	return b, w.note(pr.name, "exec", path, hex.EncodeToString(b[:]))
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
