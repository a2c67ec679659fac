package virt

import (
	"fmt"
	"time"
)

// World answers every question a process tree may ask of the outside
// world. Its methods are safe for concurrent use.
type World struct {
	cfg       Config
	clk       *clocks
	ent       *entropy
	ino       *inodes
	log       *Log // nil: nothing recorded
	quiet     *Quiet
	realStart time.Time // host time at New: bounds "written during the run"
}

// New makes the world described by cfg. log, if not nil, records (or
// replays and checks) the values served.
func New(cfg Config, log *Log) (*World, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &World{
		cfg:       cfg,
		clk:       newClocks(),
		ent:       newEntropy(cfg.Seed),
		ino:       newInodes(),
		log:       log,
		quiet:     newQuiet(),
		realStart: time.Now(),
	}, nil
}

// Quiet is the world's record of syscalls being answered, by process.
func (w *World) Quiet() *Quiet { return w.quiet }

// Start marks the command's first execve: from here on, clocks move.
func (w *World) Start() { w.clk.start() }

// Config returns the world's configuration.
func (w *World) Config() Config { return w.cfg }

// note records an observable value; in replay it checks it.
func (w *World) note(proc, kind, what, value string) error {
	if w.log == nil {
		return nil
	}
	return w.log.Event(proc, kind, what, value)
}

// origin returns the Unix-epoch offset of a clock id's counter.
func (w *World) origin(id int32, cl Class) time.Duration {
	if cl != Wall {
		return 0
	}
	o := time.Duration(w.cfg.Epoch.UnixNano())
	if id == ClockTAI {
		o += taiOffset
	}
	return o
}

// ReadClock serves one read of clock id, in nanoseconds since the clock's
// origin, and advances the clock by one step.
func (w *World) ReadClock(id int32) (int64, error) {
	cl, err := ClassOf(id)
	if err != nil {
		return 0, err
	}
	v := int64(w.origin(id, cl) + w.clk.read(cl))
	if cl == Wall {
		if err := w.note("", "clock", clockName(id), fmt.Sprint(v)); err != nil {
			return 0, err
		}
	}
	return v, nil
}

// Now returns clock id's current value without advancing it.
func (w *World) Now(id int32) (int64, error) {
	cl, err := ClassOf(id)
	if err != nil {
		return 0, err
	}
	return int64(w.origin(id, cl) + w.clk.peek(cl)), nil
}

// Resolution is clock_getres: the same on every host.
func (w *World) Resolution(id int32) (int64, error) {
	if _, err := ClassOf(id); err != nil {
		return 0, err
	}
	if id == ClockRealtimeCoarse || id == ClockMonotonicCoarse {
		return int64(coarseResolution), nil
	}
	return 1, nil
}

// SleepLength returns how long a clock_nanosleep on id lasts, in virtual
// (and so in real) time: t itself, or from now to the absolute deadline t.
func (w *World) SleepLength(id int32, abs bool, t int64) (time.Duration, error) {
	if !abs {
		return time.Duration(t), nil
	}
	now, err := w.Now(id)
	if err != nil {
		return 0, err
	}
	return max(time.Duration(t-now), 0), nil
}

// Slept accounts a completed clock_nanosleep of length d on clock id: the
// wall and monotonic clocks both advance by d, and the slept clock reaches
// an absolute deadline t.
func (w *World) Slept(id int32, abs bool, t int64, d time.Duration) {
	cl, err := ClassOf(id)
	if err != nil {
		return
	}
	for _, c := range []Class{Wall, Mono} {
		if abs && c == cl {
			w.clk.advanceTo(cl, time.Duration(t)-w.origin(id, cl))
		} else {
			w.clk.advanceBy(c, d)
		}
	}
}

// NanoSlept accounts a completed nanosleep(2) of length d. Linux measures
// nanosleep against CLOCK_MONOTONIC, and language runtimes use it on
// background threads, so it advances the monotonic clock only.
func (w *World) NanoSlept(d time.Duration) { w.clk.advanceBy(Mono, d) }

// TimedOut accounts a wait on clock id whose timeout expired at the
// absolute time t: the clock reaches t.
func (w *World) TimedOut(id int32, t int64) {
	cl, err := ClassOf(id)
	if err != nil {
		return
	}
	w.clk.advanceTo(cl, time.Duration(t)-w.origin(id, cl))
}

// Uptime is the monotonic clock's value: what /proc/uptime and sysinfo say.
func (w *World) Uptime() time.Duration { return w.clk.peek(Mono) }

func clockName(id int32) string {
	switch id {
	case ClockRealtime:
		return "CLOCK_REALTIME"
	case ClockRealtimeCoarse:
		return "CLOCK_REALTIME_COARSE"
	case ClockRealtimeAlarm:
		return "CLOCK_REALTIME_ALARM"
	case ClockTAI:
		return "CLOCK_TAI"
	}
	return fmt.Sprintf("clock(%d)", id)
}
