package virt

import (
	"errors"
	"sync"
	"time"
)

// Clock ids (linux/time.h).
const (
	ClockRealtime        = 0
	ClockMonotonic       = 1
	ClockProcessCPUTime  = 2
	ClockThreadCPUTime   = 3
	ClockMonotonicRaw    = 4
	ClockRealtimeCoarse  = 5
	ClockMonotonicCoarse = 6
	ClockBoottime        = 7
	ClockRealtimeAlarm   = 8
	ClockBoottimeAlarm   = 9
	ClockTAI             = 11
	clockFD              = 3 // low bits of a dynamic (fd) clock id
	clockCPUClockMask    = 7
	taiOffset            = 37 * time.Second
	coarseResolution     = 4 * time.Millisecond
	monoStart            = 100 * time.Second
	cpuStart             = time.Millisecond
	defaultStep          = time.Microsecond
)

// Class groups clock ids that share one virtual counter.
type Class int

const (
	Wall Class = iota // REALTIME family, gettimeofday, time
	Mono              // MONOTONIC, BOOTTIME and their variants
	CPU               // process and thread CPU-time clocks
)

// ErrBadClock is returned for a clock id Lockstep does not serve.
var ErrBadClock = errors.New("virt: invalid clock id")

// ClassOf returns the class of clock id.
func ClassOf(id int32) (Class, error) {
	switch id {
	case ClockRealtime, ClockRealtimeCoarse, ClockRealtimeAlarm, ClockTAI:
		return Wall, nil
	case ClockMonotonic, ClockMonotonicRaw, ClockMonotonicCoarse, ClockBoottime, ClockBoottimeAlarm:
		return Mono, nil
	case ClockProcessCPUTime, ClockThreadCPUTime:
		return CPU, nil
	}
	if id < 0 && id&clockCPUClockMask != clockFD {
		return CPU, nil // another process's or thread's CPU clock
	}
	return 0, ErrBadClock
}

// clocks keeps the three virtual counters. Each read returns the counter
// and then advances it by step, so values strictly increase and busy-wait
// loops end. Sleeps and expired timeouts advance counters too (see
// docs/determinism.md).
type clocks struct {
	mu   sync.Mutex
	step time.Duration
	now  [3]time.Duration // guarded by mu; offsets from each class's origin
	run  bool             // guarded by mu: the command has started
}

// start lets the clocks move. Before it (lockstep's own setup code runs
// under the filter until it execs the command) reads and sleeps leave them
// where they are, so that setup timing cannot show in the command's values.
func (c *clocks) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.run = true
}

func newClocks() *clocks {
	c := &clocks{step: defaultStep}
	c.now[Mono] = monoStart
	c.now[CPU] = cpuStart
	return c
}

// read returns the class's counter and advances it by one step.
func (c *clocks) read(cl Class) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.now[cl]
	if c.run {
		c.now[cl] += c.step
	}
	return v
}

// peek returns the class's counter without advancing it.
func (c *clocks) peek(cl Class) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now[cl]
}

// advanceTo moves the class's counter to at least t.
func (c *clocks) advanceTo(cl Class, t time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.run && t > c.now[cl] {
		c.now[cl] = t
	}
}

// advanceBy moves the class's counter forward by d.
func (c *clocks) advanceBy(cl Class, d time.Duration) {
	if d <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.run {
		c.now[cl] += d
	}
}
