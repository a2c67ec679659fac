package virt

import (
	"sync"
	"time"
)

// inodes gives files and filesystems small, stable numbers in the order
// they are first seen, so st_ino, st_dev and d_ino do not show the host's
// filesystem layout.
//
// Inode numbers are counted per device, as a filesystem counts them, so
// that processes seeing files on different filesystems at the same time
// do not race for numbers: in `ls -i / | cat`, cat's fstat of its pipe
// took the next number in the middle of ls's listing when the shell
// started cat before ls was done. The kernel's pipe, socket and anonymous
// inode filesystems have fixed numbers, not first-seen ones, for the same
// reason (pseudoDevs).
type inodes struct {
	mu     sync.Mutex
	devs   map[uint64]uint64  // guarded by mu: host dev -> virtual dev
	inos   map[devIno]uint64  // guarded by mu: host (dev, ino) -> virtual ino
	counts map[uint64]uint64  // guarded by mu: host dev -> inodes numbered on it
	times  map[fileTime]int64 // guarded by mu: host time -> virtual time
	pseudo map[uint64]uint64  // host dev -> fixed virtual dev (read-only)
}

type devIno struct{ dev, ino uint64 }

type fileTime struct {
	devIno
	ns int64
}

const (
	firstDev = 32 // makedev(0, 32): an anonymous device number
	firstIno = 2
)

func newInodes() *inodes {
	return &inodes{devs: map[uint64]uint64{}, inos: map[devIno]uint64{}, counts: map[uint64]uint64{},
		times: map[fileTime]int64{}, pseudo: kernelPseudoDevs()}
}

// Dev maps a host device number.
func (w *World) Dev(dev uint64) uint64 {
	m := w.ino
	if v, ok := m.pseudo[dev]; ok {
		return v
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.devs[dev]
	if !ok {
		v = firstDev + uint64(len(m.devs))
		m.devs[dev] = v
	}
	return v
}

// Ino maps a host inode number on host device dev.
func (w *World) Ino(dev, ino uint64) uint64 {
	m := w.ino
	m.mu.Lock()
	defer m.mu.Unlock()
	k := devIno{dev, ino}
	v, ok := m.inos[k]
	if !ok {
		v = firstIno + m.counts[dev]
		m.counts[dev]++
		m.inos[k] = v
	}
	return v
}

// FileTime maps a file timestamp (ns since the Unix epoch). Times from
// before the run are the file's content and pass unchanged; a time set
// during the run (by a write, or utimensat with UTIME_NOW) becomes the
// virtual wall time at which it was first seen, on the clock of process
// tgid, which sees it.
func (w *World) FileTime(tgid int32, dev, ino uint64, ns int64) int64 {
	if ns < w.realStart.UnixNano() || ns > time.Now().Add(time.Second).UnixNano() {
		return ns
	}
	m := w.ino
	k := fileTime{devIno{dev, ino}, ns}
	m.mu.Lock()
	v, ok := m.times[k]
	m.mu.Unlock()
	if ok {
		return v
	}
	now, _ := w.Now(tgid, ClockRealtime)
	m.mu.Lock()
	defer m.mu.Unlock()
	if v, ok := m.times[k]; ok {
		return v
	}
	m.times[k] = now
	return now
}

// kernelPseudoDevs finds the kernel's pseudo filesystems once per
// process: they are the same for every world.
var kernelPseudoDevs = sync.OnceValue(pseudoDevs)

// Mkdev is the glibc encoding of device numbers, which the kernel's stat
// uses too.
func Mkdev(maj, min uint32) uint64 {
	return uint64(maj&0xfffff000)<<32 | uint64(maj&0xfff)<<8 | uint64(min&0xffffff00)<<12 | uint64(min&0xff)
}

// Major is a device number's major part.
func Major(dev uint64) uint32 { return uint32((dev>>32)&0xfffff000 | (dev>>8)&0xfff) }

// Minor is a device number's minor part.
func Minor(dev uint64) uint32 { return uint32((dev>>12)&0xffffff00 | dev&0xff) }
