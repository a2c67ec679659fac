package virt

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockstep-run/lockstep/logd"
)

// Timeline makes a replica's time follow its input log: the log is the
// only clock (docs/determinism.md, "The log is the clock").
//
// The log's entries carry times: an input entry the time it arrived, a
// tick entry the time the log's clock reached. A Timeline holds what the
// replica received of them and turns them into events at points the
// program cannot tell apart on any host: only when every thread of the
// run is waiting (Quiet.Still), it
//
//   - delivers the next input entry (writes it to the program's stdin)
//     and moves every process's clocks up to the entry's time, unless
//   - a sleeper's deadline is not after that entry's time: then the
//     earliest deadline comes first, and the clocks move up to it.
//
// A sleeper whose deadline is past everything received waits for the log
// to reach it: Ask tells the guard, which appends a tick once its real
// clock passes the deadline. A replay has every entry already, so it
// fast-forwards. After the stream's end entry no tick will come, and a
// sleep ends at once.
type Timeline struct {
	w      *World
	origin int64 // the epoch, Unix ns: entry times are made relative to it
	// Ask asks the guard for the log's time to reach deadline (Unix ns);
	// Consumed says the replica has taken the stream's first n entries.
	ask      func(deadline int64)
	consumed func(n int64)
	stdin    *os.File    // the write end of the program's stdin
	shut     atomic.Bool // stdin is closed
	writes   chan Input
	net      Network // nil: the stream has no connections
	stop     func()  // kills the run (a stop entry)
	wake     chan struct{}
	asked    int64 // the deadline last asked for (run's own)

	mu       sync.Mutex
	queue    []Input // received, not delivered
	logTime  int64   // the latest time received, Unix ns
	seen     int64   // entries received
	ended    bool    // the end entry came: nothing follows
	eof      bool    // an eof entry came
	sleepers map[*sleeper]bool
	writing  int              // entries given to the writer and not yet done
	blocking bool             // the writer is in a write to stdin
	dialed   uint64           // outbound connections asked for
	dials    map[uint64]*dial // of them, those waiting for the log's answer
}

// Input is one entry of the stream, for the Timeline: input bytes (EOF:
// stdin closes), a tick, an event of a served connection (Net), or the
// run's stop.
type Input struct {
	Seq     int64
	Time    int64  // Unix ns
	Payload []byte // stdin's bytes, or a connection's (NetData)
	EOF     bool
	Tick    bool
	Stop    bool
	Net     NetOp
	Conn    uint64
}

// NetOp is what happens to a served connection.
type NetOp uint8

const (
	NetNone  NetOp = iota
	NetOpen        // a client connects to the service
	NetData        // the client's bytes arrive
	NetClose       // the client closes its side
)

// Network delivers a served stream's connections to the program: the
// timeline calls Deliver at the points it chose, in the log's order, one
// at a time; Busy says bytes are on their way between the two sides (the
// run is not still until they have landed).
type Network interface {
	Deliver(op NetOp, conn uint64, p []byte)
	Busy() bool
}

type sleeper struct {
	held     bool // a Sleep's: its thread waits for the agent's answer
	timer    bool // a Timer's
	tid      int32
	deadline time.Duration // from the epoch
	fire     func()        // called once, with tl.mu held, when the deadline comes
	escaped  bool          // it ended at its real-time limit, not at the run's time (set with tl.mu held)
	stopped  bool          // a timer's signal interrupted it (Interrupt; set with tl.mu held)
	limit    *time.Timer   // a short one's real-time limit, or nil
}

// A short wait (at most RuntimeSleep: Python's GIL hand-over waits 5 ms,
// Go's runtime its timers' remainders) follows the log as a longer one
// does, so that where it moves its process's clock does not depend on the
// host's timing. But a runtime uses it to take a turn from a thread that
// computes (CPython's GIL), and a run that computes is never still: after
// ShortLimit of real time it ends as the kernel would end it, and moves
// no clock (it was a runtime's pause, as a short nanosleep(2) is).
const ShortLimit = 100 * time.Millisecond

// add registers sleeper s; a short one ends at its real-time limit,
// unless it ended before. tl.mu is held.
func (tl *Timeline) add(s *sleeper, short bool) {
	tl.sleepers[s] = true
	if short {
		s.limit = time.AfterFunc(ShortLimit, func() {
			tl.mu.Lock()
			defer tl.mu.Unlock()
			if tl.take(s) {
				s.escaped = true
				s.fire()
			}
		})
	}
}

// take removes sleeper s, and reports false if it was gone already;
// tl.mu is held.
func (tl *Timeline) take(s *sleeper) bool {
	if !tl.sleepers[s] {
		return false
	}
	delete(tl.sleepers, s)
	if s.limit != nil {
		s.limit.Stop()
	}
	return true
}

// Stream is where a timeline's entries go: stdin (the write end of the
// program's stdin pipe), the served connections (Net, or nil), and Stop,
// which kills the run at a stop entry.
type Stream struct {
	Stdin *os.File
	Net   Network
	Stop  func()
}

// NewTimeline makes the world's time follow a stream.
func (w *World) NewTimeline(to Stream, ask func(int64), consumed func(int64)) *Timeline {
	tl := &Timeline{
		w: w, origin: w.cfg.Epoch.UnixNano(), ask: ask, consumed: consumed, stdin: to.Stdin, net: to.Net, stop: to.Stop,
		writes: make(chan Input, 1024), wake: make(chan struct{}, 1), sleepers: map[*sleeper]bool{}, dials: map[uint64]*dial{},
	}
	tl.logTime = tl.origin
	w.timeline = tl
	go tl.write()
	go tl.run()
	return tl
}

// Timeline returns the world's timeline, or nil: time that follows the
// program's own sleeps (Lamport clocks) only.
func (w *World) Timeline() *Timeline { return w.timeline }

// ErrTimeBackwards is returned by Receive for an entry older than the one
// before it (the log's reader refuses such logs; this is a last check).
var ErrTimeBackwards = errors.New("virt: the log's time went backwards")

// Receive takes the stream's next entry.
func (tl *Timeline) Receive(e Input) error {
	tl.mu.Lock()
	defer tl.kick()
	defer tl.mu.Unlock()
	if e.Time < tl.logTime {
		return ErrTimeBackwards
	}
	tl.logTime = e.Time
	tl.seen = e.Seq + 1
	tl.eof = tl.eof || e.EOF
	if !e.Tick {
		tl.queue = append(tl.queue, e)
	}
	return nil
}

// End notes the stream's end entry (or the feed's end): no time will
// come after it, and stdin ends if no eof entry ended it (a log written
// before eof entries existed, or a provider gone).
func (tl *Timeline) End() {
	tl.mu.Lock()
	if !tl.eof {
		tl.eof = true
		tl.queue = append(tl.queue, Input{Seq: tl.seen - 1, Time: tl.logTime, EOF: true})
	}
	tl.ended = true
	tl.mu.Unlock()
	tl.kick()
}

// Pending is how many received inputs wait for delivery: the reader of
// the stream takes no more while many do.
func (tl *Timeline) Pending() int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return len(tl.queue)
}

// Sleep holds thread tid until the run's time reaches deadline
// (from the epoch); valid is polled meanwhile, and an error from it (the
// caller was interrupted) ends the sleep with that error. A short sleep
// (at most RuntimeSleep) ends at ShortLimit of real time if the run's
// time has not reached its deadline by then: ok is false.
func (tl *Timeline) Sleep(tid int32, deadline time.Duration, short bool, valid func() error) (ok bool, err error) {
	fired := make(chan struct{})
	s := &sleeper{held: true, tid: tid, deadline: deadline, fire: func() {
		tl.w.quiet.Unhold(tid) // running from here: not still until it waits again
		close(fired)
	}}
	tl.mu.Lock()
	tl.add(s, short)
	tl.w.quiet.Hold(tid)
	tl.mu.Unlock()
	tl.kick()
	t := time.NewTicker(sleepPoll)
	defer t.Stop()
	for {
		select {
		case <-fired:
			tl.mu.Lock()
			defer tl.mu.Unlock()
			if s.stopped {
				return false, ErrInterrupted
			}
			return !s.escaped, nil
		case <-t.C:
			if err := valid(); err != nil {
				if tl.cancel(s) {
					tl.w.quiet.Unhold(tid)
					return false, err
				}
			}
		}
	}
}

// Await registers thread tid, blocked in the kernel in a wait whose
// timeout its tracer took away, to be woken when the run's time reaches
// deadline (from the epoch), as a Sleep is: wake is called then (with the
// timeline's lock held: it must not block), and the thread counts as
// running (Quiet.Waking) until its tracer calls Quiet.Woken. The returned
// cancel takes the registration back, and reports false if wake was
// called first. A short wait (at most RuntimeSleep) is woken at
// ShortLimit of real time if the run's time has not reached its deadline
// by then, and escaped reports that it was (its clock must not move).
func (tl *Timeline) Await(tid int32, deadline time.Duration, short bool, wake func()) (cancel, escaped func() bool) {
	s := &sleeper{tid: tid, deadline: deadline, fire: func() {
		tl.w.quiet.Waking(tid)
		wake()
	}}
	tl.mu.Lock()
	tl.add(s, short)
	tl.mu.Unlock()
	tl.kick()
	return func() bool { return tl.cancel(s) }, func() bool {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		return s.escaped
	}
}

// cancel takes sleeper s back, and reports false if it fired already.
func (tl *Timeline) cancel(s *sleeper) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.take(s)
}

// sleepPoll is how often a held sleeper checks that it was not
// interrupted.
const sleepPoll = 20 * time.Millisecond

func (tl *Timeline) kick() {
	select {
	case tl.wake <- struct{}{}:
	default:
	}
}

// step is what the timeline does next.
type step int

const (
	idle    step = iota // nothing to do until something is received or sleeps
	deliver             // the first queued input
	fire                // the earliest sleepers
	wait                // ask the guard for time, then idle
)

// next decides the next step; tl.mu is held.
func (tl *Timeline) next() (step, time.Duration) {
	var first *sleeper
	for s := range tl.sleepers {
		if first == nil || s.deadline < first.deadline {
			first = s
		}
	}
	if len(tl.queue) > 0 {
		at := time.Duration(tl.queue[0].Time - tl.origin)
		if first != nil && first.deadline <= at {
			return fire, first.deadline
		}
		if e := tl.queue[0]; e.Net == NetOpen && e.Conn&logd.EgressConn != 0 && tl.dials[e.Conn] == nil {
			// The guard's answer to an outbound connection this replica
			// has yet to ask for (the majority asked first): it is
			// delivered where the program asks, and nothing after it
			// comes before.
			return idle, 0
		}
		return deliver, at
	}
	if first == nil {
		return idle, 0
	}
	if tl.ended || time.Duration(tl.logTime-tl.origin) >= first.deadline {
		return fire, first.deadline
	}
	return wait, first.deadline
}

func (tl *Timeline) run() {
	pause := minPause
	for {
		tl.mu.Lock()
		s, at := tl.next()
		tl.mu.Unlock()
		switch s {
		case idle:
			<-tl.wake
			continue
		case wait:
			if d := tl.origin + int64(at); d != tl.asked {
				tl.asked = d
				tl.ask(d)
			}
			<-tl.wake
			continue
		}
		if !tl.still() {
			if pause < time.Millisecond {
				Pause(pause) // the next look decides again, whatever came meanwhile
			} else {
				select {
				case <-tl.wake:
				case <-time.After(pause):
				}
			}
			pause = min(2*pause, maxPause)
			continue
		}
		pause = minPause
		tl.mu.Lock()
		if s2, at2 := tl.next(); s2 != s || at2 != at {
			tl.mu.Unlock()
			continue // a sleeper came meanwhile: decide again
		}
		tl.w.pr.raise(at)
		if s == fire {
			// A timer due with a sleep fires first, while the sleep is
			// held: a signal that interrupts it is pending at its
			// return, as where the kernel's two timers expire together
			// (virt.SleptOut). Once the sleep is answered, its thread
			// runs: where a signal sent then lands is the host's.
			for _, timers := range []bool{true, false} {
				for sl := range tl.sleepers {
					if sl.deadline <= at && sl.timer == timers && tl.take(sl) {
						sl.fire()
					}
				}
			}
			tl.mu.Unlock()
			continue
		}
		e := tl.queue[0]
		tl.queue = tl.queue[1:]
		tl.writing++
		tl.mu.Unlock()
		tl.writes <- e
		tl.consumed(e.Seq + 1)
	}
}

// The timeline looks at the run this often while some thread runs.
const (
	minPause = 20 * time.Microsecond
	maxPause = time.Millisecond
)

// still reports whether every thread of the run waits, and the writer of
// stdin has written what it was given (or waits for the program to read).
func (tl *Timeline) still() bool {
	tl.mu.Lock()
	writing, blocking := tl.writing, tl.blocking
	tl.mu.Unlock()
	// An entry on its way (stdin's bytes or its close, which wakes the
	// reader only once it is done) keeps the run from being still, unless
	// its write waits for the program to read.
	if writing > 0 && !(blocking && pipeFull(tl.stdin)) {
		return false
	}
	if tl.net != nil && tl.net.Busy() {
		return false
	}
	return tl.w.runStill()
}

// runStill reports whether every thread of the run waits (Quiet.Still),
// seen on looks between which no process started.
func (w *World) runStill() bool {
	tgids, gen := w.pr.list()
	if len(tgids) == 0 {
		return false // not started yet (or over): the command has yet to wait
	}
	// A process forked after the list was made is not looked at: its
	// parent, waiting for it in wait4, would look still while it runs.
	if w.pr.reaping(time.Now()) {
		return false
	}
	return w.quiet.Still(tgids) && w.pr.generation() == gen
}

// write writes delivered inputs to stdin, and closes it at EOF (a
// program that closed its stdin gets nothing more); hands connections'
// events to the network; and stops the run at a stop entry.
func (tl *Timeline) write() {
	for e := range tl.writes {
		switch {
		case e.Stop:
			if tl.stop != nil {
				tl.stop()
			}
		case e.Net == NetOpen && e.Conn&logd.EgressConn != 0:
			tl.answer(e.Conn, e.Payload)
		case e.Net != NetNone:
			if tl.net != nil {
				tl.net.Deliver(e.Net, e.Conn, e.Payload)
			}
		case !tl.shut.Load() && (e.EOF || tl.writeStdin(e.Payload) != nil):
			tl.shut.Store(true)
			tl.stdin.Close()
		}
		tl.mu.Lock()
		tl.writing--
		tl.mu.Unlock()
		tl.kick()
	}
}

// writeStdin writes p to the program's stdin. While it blocks on a full
// pipe, the run may be still: the program is not reading.
func (tl *Timeline) writeStdin(p []byte) error {
	tl.mu.Lock()
	tl.blocking = true
	tl.mu.Unlock()
	_, err := tl.stdin.Write(p)
	tl.mu.Lock()
	tl.blocking = false
	tl.mu.Unlock()
	return err
}
