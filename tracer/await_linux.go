//go:build linux

package tracer

import (
	"fmt"
	"sync"
	"syscall"

	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// Timed waits in a run whose time follows its log (virt.Timeline).
//
// A wait with a timeout (poll, select, epoll_wait, futex, ...) does not
// expire in the kernel:
// at its entry the tracer takes the timeout away (the wait blocks until
// something happens), and the timeline ends it when the run's time
// reaches the deadline, at a point where every thread of the run waits,
// after every input entry whose time is not after the deadline. So a
// select-with-timeout loop on stdin sees inputs and timeouts interleave
// the same way on every replica and in replay, and a replay does not wait
// out the timeouts in real time. The timeline calls wake; the tracer's
// loop, woken by its bell, interrupts the thread (PTRACE_INTERRUPT): the
// wait ends with EINTR or a restart code, which the exit fixup replaces
// with the wait's timeout result. A wait that ends for another reason
// (its fd is ready, a futex wake, a signal) takes its registration back.
// A short wait (at most virt.RuntimeSleep: CPython's GIL hand-over, Go's
// timers) is woken at virt.ShortLimit of real time if the run was never
// still enough for its deadline, and then moves no clock.

// timedWait is a wait whose timeout the tracer took away.
type timedWait struct {
	reg   int   // the argument that holds the timeout: 2 (rdx), 3 (r10) or 4 (r8)
	unit  int64 // 0: the register holds milliseconds; else the unit of a struct's second field (1: timespec, 1000: timeval)
	clock int32 // the clock of an absolute deadline, or -1: a relative timeout
	ret   int64 // what the syscall returns when it times out: 0 or -errno
	zero  bool  // when it times out, the kernel writes the time left (zero) to the struct
}

// argReg returns the register of syscall argument i (0-based).
func argReg(regs *unix.PtraceRegs, i int) *uint64 {
	switch i {
	case 2:
		return &regs.Rdx
	case 3:
		return &regs.R10
	}
	return &regs.R8
}

// awaitLog takes the timeout from the wait in regs when the run's time
// follows a log. ok is false
// when it does not apply: the caller handles the wait as before.
func (t *Tracer) awaitLog(tid int, th *thread, regs *unix.PtraceRegs, w timedWait) (fix exitFixup, ok bool, err error) {
	tl := t.world.Timeline()
	if tl == nil {
		return nil, false, nil
	}
	orig := *argReg(regs, w.reg)
	var v int64 // the timeout (relative) or the deadline on w.clock, ns
	if w.unit == 0 {
		ms := int32(orig)
		if ms <= 0 {
			return nil, false, nil
		}
		v = int64(ms) * 1e6
	} else {
		if orig == 0 {
			return nil, false, nil
		}
		b, err := readMem(tid, orig, 16)
		if err != nil {
			return nil, false, nil // the kernel will say EFAULT
		}
		if v, ok = timeoutNs(b, w.unit); !ok {
			return nil, false, nil // the kernel will say EINVAL
		}
	}
	tg := t.tgid(tid)
	abs, clock := w.clock >= 0, w.clock
	if !abs {
		clock = virt.ClockMonotonic
	}
	now, err := t.world.Now(tg, clock)
	if err != nil {
		return nil, false, nil
	}
	end := v // the deadline on clock
	if !abs {
		end = now + v
	}
	short := end-now <= int64(virt.RuntimeSleep)
	deadline, err := t.world.Deadline(tg, clock, true, end)
	if err != nil {
		return nil, false, nil
	}
	if err := t.ringable(); err != nil {
		return nil, true, err
	}
	none := uint64(0) // a NULL timeout: wait until something happens
	if w.unit == 0 {
		none = ^uint64(0) // -1 ms
	}
	*argReg(regs, w.reg) = none
	if err := unix.PtraceSetRegs(tid, regs); err != nil {
		return nil, true, ignoreGone(err)
	}
	cancel, escaped := tl.Await(int32(tid), deadline, short, func() { t.ring(tid) })
	th.await, th.awaited = cancel, true
	return func(tid int, regs *unix.PtraceRegs) error {
		th.await = nil
		// This stop is the interrupt's too: the kernel reports no
		// PTRACE_EVENT_STOP for it after a syscall-exit stop.
		t.woken(tid, th)
		*argReg(regs, w.reg) = orig
		if !cancel() && interrupted(regs.Rax) {
			regs.Rax = uint64(w.ret)
			if w.zero {
				writeMem(tid, orig, make([]byte, 16))
			}
			if !escaped() {
				t.world.TimedOut(tg, clock, end)
			}
		}
		return ignoreGone(unix.PtraceSetRegs(tid, regs))
	}, true, nil
}

// interrupted reports a syscall result that a signal or PTRACE_INTERRUPT
// caused: EINTR, or one of the kernel's restart codes.
func interrupted(rax uint64) bool {
	switch -int64(rax) {
	case int64(unix.EINTR), 512, 513, 514, 516: // ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND, ERESTART_RESTARTBLOCK
		return true
	}
	return false
}

// The bell wakes the tracer's loop, blocked in wait4, when a timeline
// wakes a thread: it is a child process of the tracer's thread that
// pauses forever, traced; a signal sent to it stops it, and wait4
// returns. Only the tracer's thread may interrupt its tracees.
type bell struct {
	pid   int
	mu    sync.Mutex
	wakes []int // threads to interrupt
}

// ringable starts the bell, once.
func (t *Tracer) ringable() error {
	if t.bell.pid != 0 {
		return nil
	}
	pid, errno := forkPause()
	if errno != 0 {
		return errnoErr("fork the tracer's bell", errno)
	}
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, pid, 0, unix.PTRACE_O_EXITKILL, 0, 0); e != 0 {
		unix.Kill(int(pid), unix.SIGKILL)
		unix.Wait4(int(pid), nil, 0, nil)
		return errnoErr("seize the tracer's bell", e)
	}
	t.bell.pid = int(pid)
	return nil
}

// ring asks the tracer's loop to interrupt thread tid. It may be called
// from any goroutine.
func (t *Tracer) ring(tid int) {
	t.bell.mu.Lock()
	t.bell.wakes = append(t.bell.wakes, tid)
	t.bell.mu.Unlock()
	unix.Kill(t.bell.pid, unix.SIGUSR1)
}

// rung handles a stop of the bell: it interrupts the threads the
// timeline woke, and lets the bell pause again (the signal is not
// delivered).
func (t *Tracer) rung(ws unix.WaitStatus) error {
	if !ws.Stopped() {
		t.bell.pid = 0 // killed: ringable starts another
		return nil
	}
	t.bell.mu.Lock()
	wakes := t.bell.wakes
	t.bell.wakes = nil
	t.bell.mu.Unlock()
	q := t.world.Quiet()
	for _, tid := range wakes {
		th := t.threads[tid]
		if th == nil || ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0) != nil {
			q.Woken(int32(tid)) // gone
			continue
		}
		th.interrupted = true
	}
	return resume(t.bell.pid, 0)
}

// woken notes that thread tid, interrupted for its timeline, has
// stopped: the run may be still again once it waits.
func (t *Tracer) woken(tid int, th *thread) {
	if th.interrupted {
		th.interrupted = false
		t.world.Quiet().Woken(int32(tid))
	}
}

// silenceBell ends the bell.
func (t *Tracer) silenceBell() {
	if t.bell.pid != 0 {
		unix.Kill(t.bell.pid, unix.SIGKILL)
		unix.Wait4(t.bell.pid, nil, unix.WALL, nil)
		t.bell.pid = 0
	}
}

// forkPause forks a child that pauses until it is killed (or its parent
// thread exits), with no open files. The child runs no Go code that could
// split its stack or need the runtime.
//
//go:norace
//go:nosplit
func forkPause() (uintptr, syscall.Errno) {
	pid, _, errno := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
	if errno != 0 || pid != 0 {
		return pid, errno
	}
	// It holds none of the agent's files: a pipe's write end it kept
	// open would never let the reader see the end.
	syscall.RawSyscall(unix.SYS_CLOSE_RANGE, 0, ^uintptr(0), 0)
	syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0)
	for {
		syscall.RawSyscall(syscall.SYS_PAUSE, 0, 0, 0)
	}
}

func errnoErr(what string, errno syscall.Errno) error {
	return fmt.Errorf("tracer: %s: %w", what, errno)
}
