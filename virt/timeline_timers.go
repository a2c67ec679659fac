package virt

import (
	"errors"
	"time"
)

// ErrInterrupted ends a Sleep a timer's signal interrupted: the kernel
// ends the call, the agent must not answer it.
var ErrInterrupted = errors.New("virt: sleep interrupted by a timer's signal")

// Timer registers a timer's deadline (from the epoch): fire is called
// when the run's time reaches it as it would a sleeper's (the clocks are
// there), or with escaped set after limit of real time if the run has not
// waited by then (the clocks have not moved). fire returns the deadline
// the timer is armed for next and its limit (0: done): the timer is a
// sleeper again at once, so that no still instant passes it by. fire is
// called with the timeline's lock held: it must not block, nor call the
// timeline. The returned cancel takes the registration back, and reports
// false if it was not there (fired for the last time).
func (tl *Timeline) Timer(deadline, limit time.Duration, fire func(escaped bool) (next, nextLimit time.Duration)) (cancel func() bool) {
	s := &sleeper{timer: true, deadline: deadline}
	var arm func(limit time.Duration)
	s.fire = func() { // tl.mu is held
		next, nextLimit := fire(s.escaped)
		if next > 0 {
			s.deadline, s.escaped = next, false
			tl.add(s, false)
			arm(nextLimit)
		}
	}
	arm = func(limit time.Duration) {
		s.limit = time.AfterFunc(limit, func() {
			tl.mu.Lock()
			defer tl.mu.Unlock()
			if tl.take(s) {
				s.escaped = true
				s.fire()
			}
		})
	}
	tl.mu.Lock()
	tl.add(s, false)
	arm(limit)
	tl.mu.Unlock()
	tl.kick()
	return func() bool { return tl.cancel(s) }
}

// Interrupt ends thread tid's held sleep, if it has one, without moving
// any clock: a timer's signal interrupted it (the agent then answers
// nothing, the kernel ends or restarts the call). The thread runs from
// here. tl.mu is held: the caller is a timer's fire.
func (tl *Timeline) Interrupt(tid int32) {
	for s := range tl.sleepers {
		if s.held && s.tid == tid && tl.take(s) {
			s.escaped, s.stopped = true, true
			s.fire()
		}
	}
}
