package virt

import (
	"cmp"
	"errors"
	"slices"
	"sync"
	"time"
)

// Timers are the run's interval timers, kept on its virtual clocks:
// alarm(2) and setitimer's ITIMER_REAL, and timer_create(2)'s timers
// (docs/determinism.md, "Timers"). Where the kernel fires a timer when the
// host's clock says, so that its signal lands at whatever point of a
// computation the host's speed reached, a virtual timer fires where its
// process's time reaches the deadline, at a point no host can move:
//
//   - with a timeline (time follows the log), as a sleeper of the
//     timeline: when every thread of the run waits and the deadline is
//     the run's next event;
//   - otherwise, once real time has caught up with the deadline (time
//     never runs ahead of real time), at an instant when every thread of
//     the run waits (a thread in a sleep the agent serves counts as
//     waiting: the timer cuts the sleep at its deadline).
//
// A process that computes and never waits would so never see its timer.
// Rather than hang it, a timer whose process has not waited by
// EscapeAfter past its real due time fires anyway, at a point the host's
// timing chose, and Warn says so once per process.
type Timers struct {
	w *World
	// Deliver sends an expiry's signal. It is called with no lock of
	// Timers held (with the timeline's, for a timeline's timer) and must
	// not block.
	Deliver func(Expiry)
	// Warn reports a timer that fired while its process computed.
	Warn func(tgid int32)

	mu       sync.Mutex
	procs    map[int32]*procTimers
	sleeps   map[int32]Sleeping  // by TID: sleeps the agent serves
	sleepGen uint64              // counts sleeps begun and ended
	slept    map[int32]time.Time // by TGID: when a thread of it last began a sleep
	restarts map[int32]SleepKey  // by TID: sleeps a timer's signal interrupted
	kick     chan struct{}
	warned   map[int32]bool
	gen      uint64
	loop     bool // the real-time loop runs
}

type procTimers struct {
	byID    map[int32]*Timer
	next    int32 // the next timer_create ID
	sigNext int32 // the next signal's ID (Signal), below AlarmID
}

// AlarmID is the timer of alarm(2) and ITIMER_REAL.
const AlarmID = -1

// Timer is one timer of a process.
type Timer struct {
	Signo  int32
	Notify int32  // SigevSignal, SigevNone or SigevThreadID
	TID    int32  // SigevThreadID: the thread (host TID)
	Value  uint64 // sigev_value, passed in the signal's siginfo
	Clock  int32  // the clock an absolute deadline is on
	CPU    bool   // on a CPU-time clock: CPU time does not pass, it never fires

	deadline time.Duration // from the epoch; 0: disarmed
	interval time.Duration
	cpuLeft  time.Duration // a CPU timer's value: it stays what was set
	overrun  int32
	armReal  time.Time
	armVirt  time.Duration
	gen      uint64
	cancel   func() bool // the timeline's registration
}

// sigevent notify values.
const (
	SigevSignal   = 0
	SigevNone     = 1
	SigevThread   = 2
	SigevThreadID = 4
)

// Expiry is a timer's signal to send.
type Expiry struct {
	Tgid, TID int32 // TID: a thread-directed signal's thread, or 0
	Signo     int32
	ID        int32 // the timer's ID (AlarmID: alarm and ITIMER_REAL)
	Overrun   int32
	Value     uint64
	At        time.Duration // the deadline, from the epoch
	Escaped   bool          // fired while the process computed
}

// ErrNoTimer is returned for an ID that names no timer of the process.
var ErrNoTimer = errors.New("virt: no such timer")

// EscapeAfter bounds how long past its real due time a timer waits for
// the run to wait: at least a second, and at least its own length.
func EscapeAfter(length time.Duration) time.Duration { return max(time.Second, length) }

// Timers returns the world's timers.
func (w *World) Timers() *Timers {
	w.timersOnce.Do(func() {
		w.timers = &Timers{w: w, procs: map[int32]*procTimers{}, kick: make(chan struct{}, 1), warned: map[int32]bool{},
			sleeps: map[int32]Sleeping{}, restarts: map[int32]SleepKey{}, slept: map[int32]time.Time{}}
	})
	return w.timers
}

func (ts *Timers) proc(tgid int32) *procTimers {
	p := ts.procs[tgid]
	if p == nil {
		p = &procTimers{byID: map[int32]*Timer{}}
		ts.procs[tgid] = p
	}
	return p
}

// Create adds timer t to process tgid, disarmed, and returns its ID: the
// kernel's numbering, 0, 1, 2, ... per process.
func (ts *Timers) Create(tgid int32, t Timer) int32 {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	p := ts.proc(tgid)
	id := p.next
	p.next++
	p.byID[id] = &t
	return id
}

// Signal sends signal signo to process tgid as another process of the run
// sent it with kill(2) when its own time was at: a one-shot timer, so
// that the signal lands where the receiver's time reaches the sender's
// (its first wait there), not where the host's timing put the receiver.
func (ts *Timers) Signal(tgid, signo int32, at time.Duration) {
	ts.mu.Lock()
	p := ts.proc(tgid)
	if p.sigNext >= AlarmID {
		p.sigNext = AlarmID - 1
	}
	id := p.sigNext
	p.sigNext--
	ts.gen++
	// Due in real time at once: the sender's time is now.
	p.byID[id] = &Timer{Signo: signo, deadline: max(at, 1), gen: ts.gen, armReal: time.Now(), armVirt: max(at, 1)}
	ts.mu.Unlock()
	ts.schedule(tgid, id)
}

// Replace sets what timer id of process tgid sends (timer_create's
// sigevent, once checked); it stays disarmed.
func (ts *Timers) Replace(tgid, id int32, t Timer) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if p := ts.procs[tgid]; p != nil && p.byID[id] != nil {
		p.byID[id] = &t
	}
}

// ClockOf returns the clock of timer id of process tgid.
func (ts *Timers) ClockOf(tgid, id int32) (int32, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if t := ts.lookup(tgid, id); t != nil && id != AlarmID {
		return t.Clock, true
	}
	return 0, false
}

func (ts *Timers) get(tgid, id int32) *Timer {
	p := ts.proc(tgid)
	t := p.byID[id]
	if t == nil && id == AlarmID {
		t = &Timer{Signo: sigalrm}
		p.byID[id] = t
	}
	return t
}

const sigalrm = 14

// lookup returns timer id of tgid, or nil; ts.mu is held.
func (ts *Timers) lookup(tgid, id int32) *Timer {
	if p := ts.procs[tgid]; p != nil {
		return p.byID[id]
	}
	return nil
}

// remaining is what is left of t at process time now, as the kernel
// reports it: never 0 while armed.
func (t *Timer) remaining(now time.Duration) time.Duration {
	if t.CPU {
		return t.cpuLeft
	}
	if t.deadline == 0 {
		return 0
	}
	return max(t.deadline-now, time.Microsecond)
}

// Set arms timer id of process tgid to fire at deadline (from the epoch;
// 0 disarms) and every interval after, and returns what was left of it
// and its interval.
func (ts *Timers) Set(tgid, id int32, deadline, interval time.Duration) (left, oldInterval time.Duration, err error) {
	now := ts.w.pr.peek(tgid, Wall)
	ts.mu.Lock()
	t := ts.get(tgid, id)
	if t == nil {
		ts.mu.Unlock()
		return 0, 0, ErrNoTimer
	}
	left, oldInterval = t.remaining(now), t.interval
	cancel := t.cancel
	ts.gen++
	t.gen, t.cancel, t.overrun = ts.gen, nil, 0
	t.deadline, t.interval, t.cpuLeft = 0, 0, 0
	if t.CPU && deadline != 0 {
		t.cpuLeft, t.interval = max(deadline-now, time.Nanosecond), interval
	}
	if deadline != 0 && !t.CPU {
		t.deadline, t.interval = max(deadline, 1), interval
		t.armReal, t.armVirt = time.Now(), now
	}
	ts.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	ts.schedule(tgid, id)
	return left, oldInterval, nil
}

// SetAfter arms timer id to fire value from now (0 disarms).
func (ts *Timers) SetAfter(tgid, id int32, value, interval time.Duration) (left, oldInterval time.Duration, err error) {
	var deadline time.Duration
	if value > 0 {
		deadline = ts.w.pr.peek(tgid, Wall) + value
	}
	return ts.Set(tgid, id, deadline, interval)
}

// Get returns what is left of timer id and its interval.
func (ts *Timers) Get(tgid, id int32) (left, interval time.Duration, err error) {
	now := ts.w.pr.peek(tgid, Wall)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t := ts.get(tgid, id)
	if t == nil {
		return 0, 0, ErrNoTimer
	}
	return t.remaining(now), t.interval, nil
}

// Overrun returns how many more expiries timer id's last signal stood for.
func (ts *Timers) Overrun(tgid, id int32) (int32, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if t := ts.get(tgid, id); t != nil && id != AlarmID {
		return t.overrun, nil
	}
	return 0, ErrNoTimer
}

// Delete removes timer id.
func (ts *Timers) Delete(tgid, id int32) error {
	ts.mu.Lock()
	p := ts.proc(tgid)
	t := p.byID[id]
	if t == nil || id == AlarmID {
		ts.mu.Unlock()
		return ErrNoTimer
	}
	delete(p.byID, id)
	cancel := t.cancel
	ts.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	return nil
}

// Exec drops process tgid's timer_create timers (execve deletes them; an
// alarm survives it); Exit drops them all.
func (ts *Timers) Exec(tgid int32) { ts.drop(tgid, false) }
func (ts *Timers) Exit(tgid int32) { ts.drop(tgid, true) }

func (ts *Timers) drop(tgid int32, all bool) {
	ts.mu.Lock()
	p := ts.procs[tgid]
	if p == nil {
		ts.mu.Unlock()
		return
	}
	var cancels []func() bool
	for id, t := range p.byID {
		if id != AlarmID || all {
			if t.cancel != nil {
				cancels = append(cancels, t.cancel)
			}
			delete(p.byID, id)
		}
	}
	if all {
		delete(ts.procs, tgid)
		delete(ts.warned, tgid)
		delete(ts.slept, tgid)
	} else {
		p.next = 0
	}
	ts.mu.Unlock()
	for _, c := range cancels {
		c()
	}
}

// schedule hands an armed timer to the timeline, or wakes the real-time
// loop.
func (ts *Timers) schedule(tgid, id int32) {
	ts.mu.Lock()
	t := ts.lookup(tgid, id)
	if t == nil || t.deadline == 0 {
		ts.mu.Unlock()
		return
	}
	gen, deadline, length := t.gen, t.deadline, t.deadline-t.armVirt
	tl := ts.w.timeline
	if tl == nil && !ts.loop {
		ts.loop = true
		go ts.run()
	}
	ts.mu.Unlock()
	if tl == nil {
		select {
		case ts.kick <- struct{}{}:
		default:
		}
		return
	}
	cancel := tl.Timer(deadline, length+EscapeAfter(length), func(escaped bool) (time.Duration, time.Duration) {
		_, next := ts.fire(tgid, id, gen, escaped)
		return next, EscapeAfter(length)
	})
	ts.mu.Lock()
	if t.gen == gen {
		t.cancel = cancel
	}
	ts.mu.Unlock()
}

// fire sends timer id's signal if it is still armed as it was (gen), and
// arms it again if it repeats. The process's clock is at the deadline (a
// timeline's) or is moved there, unless the timer escaped.
//
// It returns whether it fired, and the deadline the timer is armed for
// next (0: none), which a timeline's sleeper takes on at once (a periodic
// timer, or one that did not fire because its process waits now and then).
func (ts *Timers) fire(tgid, id int32, gen uint64, escaped bool) (fired bool, next time.Duration) {
	ts.mu.Lock()
	t := ts.lookup(tgid, id)
	if t == nil || t.gen != gen || t.deadline == 0 {
		ts.mu.Unlock()
		return false, 0
	}
	if escaped && time.Since(ts.slept[tgid]) < EscapeAfter(t.deadline-t.armVirt) {
		// It waits now and then: its time moves towards the deadline
		// (a loop of short sleeps), it is not computing without end.
		ts.mu.Unlock()
		return false, t.deadline
	}
	at := t.deadline
	if !escaped && ts.w.timeline == nil {
		ts.w.pr.advance(tgid, Wall, at, 0)
	}
	now := max(ts.w.pr.peek(tgid, Wall), at)
	e := Expiry{Tgid: tgid, Signo: t.Signo, ID: id, Value: t.Value, At: at, Escaped: escaped}
	if t.Notify == SigevThreadID {
		e.TID = t.TID
	}
	t.overrun = 0
	t.deadline = 0
	if t.interval > 0 {
		again := at + t.interval
		if again <= now {
			n := (now - at) / t.interval
			t.overrun = int32(min(n, 1<<31-1))
			again = at + (n+1)*t.interval
		}
		t.deadline, t.armReal, t.armVirt = again, time.Now(), at // the same arming (gen)
	}
	e.Overrun = t.overrun
	next = t.deadline
	if id < AlarmID {
		delete(ts.procs[tgid].byID, id) // a kill's signal: sent once
	}
	warn := escaped && !ts.warned[tgid]
	if warn {
		ts.warned[tgid] = true
	}
	ts.mu.Unlock()
	if t.Notify != SigevNone && ts.Deliver != nil {
		ts.Deliver(e)
	}
	if warn && ts.Warn != nil {
		ts.Warn(tgid)
	}
	return true, next
}

// Due returns process tgid's armed timer with the earliest deadline (one
// on a CPU-time clock never is) that cuts a sleep ending at end: due
// before it, or at it where the timer was armed before (not a kill(2),
// which its sender's action made at that instant: it comes after the
// sleep, as on a timeline, whose sleepers due then end before it runs).
func (ts *Timers) Due(tgid int32, end time.Duration) (id int32, gen uint64, at time.Duration, ok bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	p := ts.procs[tgid]
	if p == nil {
		return 0, 0, 0, false
	}
	for i, t := range p.byID {
		if t.deadline == 0 || t.deadline > end || t.deadline == end && i < AlarmID {
			continue
		}
		if !ok || t.deadline < at || t.deadline == at && i < id {
			id, gen, at, ok = i, t.gen, t.deadline, true
		}
	}
	return id, gen, at, ok
}

// Fire fires timer id now, at a point of its process that its own
// actions fixed (a sleep that reaches the deadline): its clock moves up
// to the deadline.
func (ts *Timers) Fire(tgid, id int32, gen uint64) { ts.fire(tgid, id, gen, false) }

// run fires timers without a timeline, at the first of:
//   - the process waits (every thread of it) and its clock has reached
//     the deadline: the first wait after its own actions moved its time
//     there;
//   - real time has caught up with the deadline (paced from when the timer
//     was armed), every thread of the run waits and none of the process's
//     in a sleep the agent serves: nothing else can happen first, and the
//     clock moves to the deadline;
//   - EscapeAfter past that, whatever the run does (Warn).
//
// A sleep the agent serves fires the timers it reaches itself (Fire).
func (ts *Timers) run() {
	for {
		armed := ts.armed()
		if len(armed) == 0 {
			<-ts.kick
			continue
		}
		fired := false
		for _, t := range armed {
			real := !time.Now().Before(t.due) || ts.w.FastForward()
			// A sleep that begins or ends while the run is looked at
			// makes the look stale: look again.
			gen := ts.sleeps0()
			switch {
			case ts.w.WallNow(t.tgid) >= t.at && ts.w.quiet.Still([]int32{t.tgid}) && ts.sleeps0() == gen,
				real && !ts.sleeping(t.tgid) && ts.w.runStill() && ts.sleeps0() == gen:
				fired, _ = ts.fire(t.tgid, t.id, t.gen, false)
			case real && time.Since(t.due) > EscapeAfter(t.length):
				fired, _ = ts.fire(t.tgid, t.id, t.gen, true)
			}
			if fired {
				break
			}
		}
		if fired {
			continue
		}
		select {
		case <-ts.kick:
		case <-time.After(timerPoll):
		}
	}
}

// timerPoll is how often the loop looks while timers are armed.
const timerPoll = 2 * time.Millisecond

type armedTimer struct {
	tgid, id int32
	gen      uint64
	at       time.Duration // the deadline, from the epoch
	due      time.Time     // when real time has caught up with it
	length   time.Duration
}

// armed lists the armed timers, earliest deadline first.
func (ts *Timers) armed() []armedTimer {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []armedTimer
	for tg, p := range ts.procs {
		for i, t := range p.byID {
			if t.deadline != 0 {
				out = append(out, armedTimer{tg, i, t.gen, t.deadline, t.armReal.Add(t.deadline - t.armVirt), t.deadline - t.armVirt})
			}
		}
	}
	slices.SortFunc(out, func(a, b armedTimer) int {
		return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.tgid, b.tgid), cmp.Compare(a.id, b.id))
	})
	return out
}
