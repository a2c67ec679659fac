package virt

import (
	"fmt"
	"sync"
	"time"
)

// World answers every question a process tree may ask of the outside
// world. Its methods are safe for concurrent use.
type World struct {
	cfg       Config
	pr        *procs // the processes: names, entropy, clocks
	ino       *inodes
	log       *Log // nil: nothing recorded
	quiet     *Quiet
	realStart time.Time // host time at New: bounds "written during the run"
	timeline  *Timeline // nil: no input log drives time

	timersOnce sync.Once
	timers     *Timers
}

// New makes the world described by cfg. log, if not nil, records (or
// replays and checks) the values served.
func New(cfg Config, log *Log) (*World, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &World{
		cfg:       cfg,
		pr:        newProcs(cfg.Epoch),
		ino:       newInodes(),
		log:       log,
		quiet:     newQuiet(),
		realStart: time.Now(),
	}, nil
}

// WallNow is process tgid's time, from the epoch: the axis of deadlines.
func (w *World) WallNow(tgid int32) time.Duration { return w.pr.peek(tgid, Wall) }

// TgidOf returns the run's process whose PID in the run's namespace is
// nspid.
func (w *World) TgidOf(nspid int32) (int32, bool) {
	w.pr.mu.Lock()
	defer w.pr.mu.Unlock()
	for tg, pr := range w.pr.byTgid {
		if pr.nspid == nspid {
			return tg, true
		}
	}
	return 0, false
}

// Name is process tgid's name in the run ("1", "1.0", ...).
func (w *World) Name(tgid int32) string {
	w.pr.mu.Lock()
	defer w.pr.mu.Unlock()
	return w.pr.get(tgid).name
}

// Quiet is the world's record of syscalls being answered, by process.
func (w *World) Quiet() *Quiet { return w.quiet }

// FastForward reports whether a sleep takes no real time: in a replay
// every time the run saw is recorded, and a sleep's only effect, its
// clock moving by its length, needs no waiting.
func (w *World) FastForward() bool { return w.log != nil && w.log.Replaying() }

// Start marks the command's first execve: from here on, clocks move.
func (w *World) Start() { w.pr.start() }

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

// ReadClock serves process tgid one read of clock id, in nanoseconds
// since the clock's origin. Reads do not move time (procs.read).
func (w *World) ReadClock(tgid, id int32) (int64, error) {
	cl, err := ClassOf(id)
	if err != nil {
		return 0, err
	}
	return int64(w.origin(id, cl) + w.pr.read(tgid, cl)), nil
}

// AttachClock gives process tgid its clock page (see PageSeq), mapped
// into it at its exec or fork; release unmaps this side's mapping when the
// process is gone or gets another. A process's first page after an exec
// records its wall time in the log: a replay with another epoch stops
// there, before the program reads it.
func (w *World) AttachClock(tgid int32, page []byte, release func(), exec bool) error {
	p := w.pr
	p.mu.Lock()
	pr := p.get(tgid)
	if pr == p.unknown {
		p.mu.Unlock()
		release()
		return nil
	}
	pr.detach()
	pr.page, pr.release = page, release
	p.change(pr, func() {})
	name, wall := pr.name, int64(p.wallOrigin+pr.clk[Wall])
	p.mu.Unlock()
	if !exec {
		return nil
	}
	w.Timers().Exec(tgid)
	return w.note(name, "clock", "CLOCK_REALTIME at exec", fmt.Sprint(wall))
}

// Now returns process tgid's clock id without advancing it.
func (w *World) Now(tgid, id int32) (int64, error) {
	cl, err := ClassOf(id)
	if err != nil {
		return 0, err
	}
	return int64(w.origin(id, cl) + w.pr.peek(tgid, cl)), nil
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

// SleepLength returns how long process tgid's clock_nanosleep on id lasts,
// in virtual (and so in real) time: t itself, or from now to the absolute
// deadline t.
func (w *World) SleepLength(tgid, id int32, abs bool, t int64) (time.Duration, error) {
	if _, err := ClassOf(id); err != nil {
		return 0, err
	}
	if !abs {
		return time.Duration(t), nil
	}
	now, err := w.Now(tgid, id)
	if err != nil {
		return 0, err
	}
	return max(time.Duration(t-now), 0), nil
}

// Deadline returns when process tgid's sleep on clock id for t (an
// absolute time if abs) ends, as a time from the epoch (Timeline.Sleep).
func (w *World) Deadline(tgid, id int32, abs bool, t int64) (time.Duration, error) {
	cl, err := ClassOf(id)
	if err != nil {
		return 0, err
	}
	p := w.pr
	p.mu.Lock()
	clk := p.get(tgid).clk
	p.mu.Unlock()
	switch {
	case !abs:
		return clk[Wall] + time.Duration(t), nil
	case cl == Wall:
		return time.Duration(t) - w.origin(id, cl), nil
	}
	return clk[Wall] + max(time.Duration(t)-clk[Mono], 0), nil
}

// Slept accounts process tgid's completed clock_nanosleep of length d on
// clock id: its clocks advance by d, or the slept clock reaches an
// absolute deadline t (the wall and monotonic clocks move together).
func (w *World) Slept(tgid, id int32, abs bool, t int64, d time.Duration) {
	cl, err := ClassOf(id)
	if err != nil {
		return
	}
	if abs && cl != CPU {
		w.pr.advance(tgid, cl, time.Duration(t)-w.origin(id, cl), 0)
		return
	}
	w.pr.advance(tgid, Mono, 0, d)
}

// NanoSlept accounts process tgid's completed nanosleep(2) of length d.
// A nanosleep of at most RuntimeSleep moves no time: it is a
// runtime's own pause (Go's sysmon sleeps 20 µs to 10 ms between looks),
// and how many of them fit in a stretch of the program follows the host's
// timing. C libraries' sleep, usleep and nanosleep call clock_nanosleep.
func (w *World) NanoSlept(tgid int32, d time.Duration) {
	if d > RuntimeSleep {
		w.pr.advance(tgid, Mono, 0, d)
	}
}

// RuntimeSleep is the longest nanosleep(2) that is a runtime's own.
const RuntimeSleep = 10 * time.Millisecond

// TimedOut accounts process tgid's wait on clock id whose timeout expired
// at the absolute time t: the clock reaches t.
func (w *World) TimedOut(tgid, id int32, t int64) {
	cl, err := ClassOf(id)
	if err != nil {
		return
	}
	w.pr.advance(tgid, cl, time.Duration(t)-w.origin(id, cl), 0)
}

// Uptime is process tgid's monotonic clock: what /proc/uptime and sysinfo
// say.
func (w *World) Uptime(tgid int32) time.Duration { return w.pr.peek(tgid, Mono) }

// Outside notes that process tgid reached another host (what, such as
// "connect 93.184.216.34:80"). What that host sends back is input that
// no log of an exec holds: a recording notes each reach, and is not
// replayed (Log.Outside); a replay whose run reaches
// out where the recording did not fails as any mismatch does.
func (w *World) Outside(tgid int32, what string) error {
	w.pr.mu.Lock()
	name := w.pr.get(tgid).name
	w.pr.mu.Unlock()
	return w.note(name, kindOutside, what, "")
}

// Processes lists the run's processes (thread group IDs in the agent's
// PID namespace), none before it starts.
func (w *World) Processes() []int32 { return w.pr.tgids() }

// Logged reports whether the run records or replays an exec log.
func (w *World) Logged() bool { return w.log != nil }

// Began moves the start of the run, for file times, back to t if it is
// earlier: a file time from then on was set by the run's own setup (a
// container's mounts, made while its agent starts), not the image's
// content, and is served as the virtual time it is first seen at.
func (w *World) Began(t time.Time) {
	if !t.IsZero() && t.Before(w.realStart) {
		w.realStart = t
	}
}
