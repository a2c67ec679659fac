package virt

import (
	"sync/atomic"
	"time"
	"unsafe"
)

// A clock page is one process's clocks as its own code reads them: memory
// shared between the world and the process (the tracer maps it at each
// exec and fork), read by the replacement vDSO (tracer.assembleClock)
// without entering the kernel. The world writes it under a sequence lock
// whenever the process's time moves. Layout, 8-byte little-endian words;
// each clock is seconds, nanoseconds, and the two as nanoseconds:
const (
	PageSeq     = 0  // odd while the world writes
	PageReads   = 8  // reads since the process's time last moved (the vDSO adds one per read)
	PageLimit   = 16 // SpinReads
	PageWallSec = 24 // CLOCK_REALTIME and its kind: sec, nsec, ns
	PageMonoSec = 48 // CLOCK_MONOTONIC, BOOTTIME and their kind
	PageTAISec  = 72 // CLOCK_TAI
	PageSize    = 4096
)

// SpinReads is how many clock reads a process may make without its time
// moving before its reads start moving it, by one step each: a loop that
// waits for the clock to move, reading it and nothing else, still ends
// (after ~20 ms of real time). Below it, reads do not move time, so the
// values a program sees do not depend on how often other threads (a
// runtime's) read the clock. Past it, they do.
const SpinReads = 1 << 20

// SpinStep is what each read past SpinReads moves the clock.
const SpinStep = defaultStep

type clockPage []byte

func (c clockPage) word(off int) *uint64 { return (*uint64)(unsafe.Pointer(&c[off])) }

// publish writes the process's clocks, as fold returns them given the
// reads made since the last publish (each read past SpinReads has moved
// the process's time by one step: fold adds them, see procs.change), and
// sets the count back to zero, all under the sequence lock.
func (c clockPage) publish(fold func(reads uint64) (time.Duration, time.Duration)) {
	seq := c.word(PageSeq)
	atomic.AddUint64(seq, 1)
	wall, mono := fold(atomic.SwapUint64(c.word(PageReads), 0))
	for _, v := range []struct {
		off int
		d   time.Duration
	}{{PageWallSec, wall}, {PageMonoSec, mono}, {PageTAISec, wall + taiOffset}} {
		atomic.StoreUint64(c.word(v.off), uint64(v.d/time.Second))
		atomic.StoreUint64(c.word(v.off+8), uint64(v.d%time.Second))
		atomic.StoreUint64(c.word(v.off+16), uint64(v.d))
	}
	atomic.StoreUint64(c.word(PageLimit), SpinReads)
	atomic.AddUint64(seq, 1)
}

// read counts one read and returns the reads before it.
func (c clockPage) read() uint64 { return atomic.AddUint64(c.word(PageReads), 1) - 1 }
