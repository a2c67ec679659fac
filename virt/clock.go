package virt

import (
	"errors"
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
	clockWhichMask       = 3
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
	// Another process's or thread's CPU clock: its low two bits say
	// which (0, 1, 2: PROF, VIRT, SCHED); 3 is a dynamic (fd) clock, or,
	// with the per-thread bit, invalid (the kernel's CPUCLOCK_WHICH).
	if id < 0 && id&clockWhichMask != clockFD {
		return CPU, nil
	}
	return 0, ErrBadClock
}
