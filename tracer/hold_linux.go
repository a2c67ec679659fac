//go:build linux

package tracer

import (
	"time"

	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// A thread that starts a thread is held at its clone stop until every
// other thread of its process, the new one included, waits (interruptible
// sleep: a futex, a read, a notified sleep; virt.Quiet.Running), or holdLimit
// passes. Runtimes with thread pools decide whether to start another
// thread by whether an earlier one has parked yet, and starting one draws
// on the starter's state: Go's runtime draws a value from the starting
// thread's random generator, which then feeds the main goroutine's map
// order and math/rand. Letting the new thread reach its first wait before
// its starter runs on makes that order the program's, not the host's. A
// thread that computes without waiting holds its starter for holdLimit at
// most.
//
// A process that starts a process (fork, vfork, posix_spawn) is held the
// same way until the new process waits or exits: processes started one
// after another (a shell's `cmd &` in a loop, a pool of workers) reach
// their first wait in the order they were started, so what they write
// before it (to a shared pipe, a file) comes in that order, not in the
// order the host's scheduler happened to run them.
//
// A thread that, in a syscall, woke a thread of another process of the
// run (Wakes) is held the same way until that process waits again.
const holdLimit = 20 * time.Millisecond

// spinFor is how long the tracer polls without sleeping after a hold
// begins (release).
const spinFor = 300 * time.Microsecond

type hold struct {
	until      time.Time
	child      int // the process a fork or wake-up hold waits for; 0: the starter's own process (a clone)
	quietPolls int // polls in a row that found the process quiet
	// A wake-up hold: whether the thread woken has gone to a wait since,
	// and how many threads its process had (one: that says it all).
	waited  func() bool
	threads int
}

// parkLimit bounds the wait of a new tracee for its creator's fork stop,
// which comes at once unless the creator died in between: the child then
// runs, named as a child of no known process.
const parkLimit = time.Second

// unpark resumes a thread parked at its first stop.
func (t *Tracer) unpark(tid int, th *thread) error {
	if th.parked.IsZero() {
		return nil
	}
	th.parked = time.Time{}
	t.parked--
	return t.firstRun(tid, th)
}

// release resumes the held threads whose process has gone quiet (every
// thread of it waits, seen on two polls in a row), or that have been held
// for holdLimit, and the parked ones whose creator's stop has not come in
// parkLimit; otherwise it pauses briefly.
func (t *Tracer) release() error {
	now := time.Now()
	if t.parked > 0 {
		for tid, th := range t.threads {
			if !th.parked.IsZero() && now.Sub(th.parked) > parkLimit {
				th.announced = true
				t.world.Fork(-1, int32(tid))
				if err := t.unpark(tid, th); err != nil {
					return err
				}
			}
		}
	}
	for tid, h := range t.held {
		if now.Before(h.until) {
			if h.running(t.world.Quiet(), tid, t.held) {
				h.quietPolls = 0
				continue
			}
			if h.quietPolls++; h.quietPolls < 2 {
				continue
			}
		}
		delete(t.held, tid)
		if err := resume(tid, 0); err != nil {
			return err
		}
	}
	if len(t.throttle) > 0 && !t.Throttle.Behind() {
		for tid := range t.throttle {
			delete(t.throttle, tid)
			if err := resume(tid, 0); err != nil {
				return err
			}
		}
	}
	// A hold usually ends within tens of microseconds (the woken thread
	// reads and waits again; the new thread reaches its first wait, or
	// exits), less than one nanosleep takes to return in a VM (~50 µs for
	// 20 µs asked), and a release needs two polls: for spinFor after a
	// hold begins, yield instead of sleeping (1,000 thread create + join:
	// 250 → 120 ms). Otherwise nanosleep itself: this thread is locked,
	// and Go's timers can take a millisecond to wake it.
	if len(t.held) > 0 && now.Before(t.spinUntil) {
		unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	} else if len(t.held) > 0 || t.parked > 0 {
		unix.Nanosleep(&unix.Timespec{Nsec: 20_000}, nil)
	} else if len(t.throttle) > 0 {
		unix.Nanosleep(&unix.Timespec{Nsec: 200_000}, nil) // the consumer reads ~250 KiB meanwhile
	}
	return nil
}

// childExited resumes the thread held until process pid, which has
// exited, waits: it need not poll for that.
func (t *Tracer) childExited(pid int) error {
	for tid, h := range t.held {
		if h.child == pid {
			delete(t.held, tid)
			return resume(tid, 0)
		}
	}
	return nil
}

// running reports whether what hold h of thread tid waits for still runs:
// the new process (any of its threads, held ones too: they wait for their
// own children), or for a clone the other threads of tid's process that
// are not held themselves.
func (h *hold) running(q *virt.Quiet, tid int, held map[int]*hold) bool {
	if h.waited != nil {
		if !h.waited() {
			return true
		}
		if h.threads == 1 {
			h.quietPolls = 2 // exact: no second look needed
			return false
		}
	}
	if h.child != 0 {
		return q.Running(h.child, func(int) bool { return false })
	}
	return q.Running(tid, func(other int) bool { return held[other] != nil })
}

// wokeOther reports whether thread tid's SIGSTOP is the wake-up watch's
// (sent by the kernel, and named in the watch's map), and if so holds the
// thread until the process it woke waits.
func (t *Tracer) wokeOther(tid int) bool {
	if t.Wakes == nil || !sentByKernel(tid) {
		return false
	}
	woken, threads, waited, ok := t.Wakes.Woke(tid)
	if !ok {
		return false
	}
	now := time.Now()
	t.held[tid] = &hold{until: now.Add(holdLimit), child: woken, waited: waited, threads: threads}
	t.spinUntil = now.Add(spinFor)
	return true
}

// wakeStop reports whether thread tid's SIGSTOP is the wake-up watch's,
// and forgets it.
func (t *Tracer) wakeStop(tid int) bool {
	if t.Wakes == nil || !sentByKernel(tid) {
		return false
	}
	_, _, _, ok := t.Wakes.Woke(tid)
	return ok
}
