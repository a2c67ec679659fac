//go:build linux

package tracer

import (
	"time"

	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// Futex commands and flags (linux/futex.h).
const (
	futexWait          = 0
	futexLockPI        = 6
	futexWaitBitset    = 9
	futexWaitRequeuePI = 11
	futexLockPI2       = 13
	futexCmdMask       = 0x7f
	futexClockRealtime = 256
)

// scratchBelowSP is where a translated timeout is written: below the red
// zone, where a signal frame could be written too.
const scratchBelowSP = 512

// seccompStop handles a SECCOMP_RET_TRACE stop at syscall entry: it arms
// a fixup for the syscall's exit, or lets the syscall run untouched.
func (t *Tracer) seccompStop(tid int, th *thread) error {
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(tid, &regs); err != nil {
		return ignoreGone(err)
	}
	fix, err := t.entry(tid, th, &regs)
	if err != nil {
		return err
	}
	if fix == nil {
		return resume(tid, 0)
	}
	th.exit = fix
	if quick(regs.Orig_rax) {
		t.busy(tid, th)
	}
	return ignoreGone(unix.PtraceSyscall(tid, 0))
}

// quick reports the traced syscalls that never block (the stat family):
// while one is stopped for its fixups, the agent holds back the answers to
// the other threads of its process (virt.Quiet). Waits are not quick.
func quick(nr uint64) bool {
	switch nr {
	case unix.SYS_STAT, unix.SYS_FSTAT, unix.SYS_LSTAT, unix.SYS_NEWFSTATAT, unix.SYS_STATX:
		return true
	}
	return false
}

// entry returns the exit fixup for the syscall in regs, or nil.
func (t *Tracer) entry(tid int, th *thread, regs *unix.PtraceRegs) (exitFixup, error) {
	switch regs.Orig_rax {
	case unix.SYS_STAT, unix.SYS_FSTAT, unix.SYS_LSTAT:
		return t.rewrite(regs.Rsi, sizeofStat, fixStat), nil
	case unix.SYS_NEWFSTATAT:
		return t.rewrite(regs.Rdx, sizeofStat, fixStat), nil
	case unix.SYS_STATX:
		return t.rewrite(regs.R8, sizeofStatx, fixStatx), nil
	case unix.SYS_WAIT4:
		return t.reaped(zeroOnSuccess(regs.R10, sizeofRusage), 0), nil
	case unix.SYS_WAITID:
		return t.reaped(zeroOnSuccess(regs.R8, sizeofRusage), regs.Rdx), nil
	case unix.SYS_POLL, unix.SYS_EPOLL_WAIT, unix.SYS_EPOLL_PWAIT, unix.SYS_PPOLL, unix.SYS_PSELECT6,
		unix.SYS_EPOLL_PWAIT2, unix.SYS_RT_SIGTIMEDWAIT, unix.SYS_SELECT, unix.SYS_FUTEX, unix.SYS_FUTEX_WAITV:
		if w, ok := timedWaitOf(regs); ok {
			if fix, ok, err := t.awaitLog(tid, th, regs, w); ok {
				return fix, err
			}
		}
		return t.wait(tid, regs)
	case unix.SYS_ARCH_PRCTL:
		return deny(tid, regs, unix.EPERM) // the tracer's own come through syscallIn
	case unix.SYS_PRCTL: // PR_SET_TSC, by the profile
		if regs.Rsi == unix.PR_TSC_SIGSEGV {
			return nil, nil
		}
		return deny(tid, regs, unix.EPERM)
	}
	return nil, nil
}

// wait returns the exit fixup of a wait with a timeout: the clocks move to
// its deadline if it expires.
func (t *Tracer) wait(tid int, regs *unix.PtraceRegs) (exitFixup, error) {
	switch regs.Orig_rax {
	case unix.SYS_POLL:
		return t.relativeWait(tid, msTimeout(regs.Rdx), 0, nil), nil
	case unix.SYS_EPOLL_WAIT, unix.SYS_EPOLL_PWAIT:
		return t.relativeWait(tid, msTimeout(regs.R10), 0, nil), nil
	case unix.SYS_PPOLL:
		return t.timespecWait(tid, regs.Rdx, true, 0)
	case unix.SYS_PSELECT6:
		return t.timespecWait(tid, regs.R8, true, 0)
	case unix.SYS_EPOLL_PWAIT2:
		return t.timespecWait(tid, regs.R10, false, 0)
	case unix.SYS_RT_SIGTIMEDWAIT:
		return t.timespecWait(tid, regs.Rdx, false, unix.EAGAIN)
	case unix.SYS_SELECT:
		return t.timevalWait(tid, regs.R8)
	case unix.SYS_FUTEX:
		return t.futex(tid, regs)
	case unix.SYS_FUTEX_WAITV:
		return t.absoluteWait(tid, regs, int32(regs.R8))
	}
	return nil, nil
}

// timedWaitOf says where the wait in regs keeps its timeout, for awaitLog.
func timedWaitOf(regs *unix.PtraceRegs) (timedWait, bool) {
	rel := int32(-1)
	switch regs.Orig_rax {
	case unix.SYS_POLL:
		return timedWait{reg: 2, clock: rel}, true
	case unix.SYS_EPOLL_WAIT, unix.SYS_EPOLL_PWAIT:
		return timedWait{reg: 3, clock: rel}, true
	case unix.SYS_PPOLL:
		return timedWait{reg: 2, unit: 1, clock: rel, zero: true}, true
	case unix.SYS_PSELECT6:
		return timedWait{reg: 4, unit: 1, clock: rel, zero: true}, true
	case unix.SYS_EPOLL_PWAIT2:
		return timedWait{reg: 3, unit: 1, clock: rel}, true
	case unix.SYS_RT_SIGTIMEDWAIT:
		return timedWait{reg: 2, unit: 1, clock: rel, ret: -int64(unix.EAGAIN)}, true
	case unix.SYS_SELECT:
		return timedWait{reg: 4, unit: 1000, clock: rel, zero: true}, true
	case unix.SYS_FUTEX_WAITV:
		return timedWait{reg: 3, unit: 1, clock: int32(regs.R8), ret: -int64(unix.ETIMEDOUT)}, true
	case unix.SYS_FUTEX:
		clock := futexClock(regs.Rsi)
		switch regs.Rsi & futexCmdMask {
		case futexWait:
			return timedWait{reg: 3, unit: 1, clock: rel, ret: -int64(unix.ETIMEDOUT)}, true
		case futexWaitBitset, futexWaitRequeuePI, futexLockPI2:
			return timedWait{reg: 3, unit: 1, clock: clock, ret: -int64(unix.ETIMEDOUT)}, true
		case futexLockPI:
			return timedWait{reg: 3, unit: 1, clock: virt.ClockRealtime, ret: -int64(unix.ETIMEDOUT)}, true
		}
	}
	return timedWait{}, false
}

// rewrite returns a fixup that rewrites the n-byte struct at addr when the
// syscall succeeds.
func (t *Tracer) rewrite(addr uint64, n int, fix func([]byte, *virt.World, int32)) exitFixup {
	return func(tid int, regs *unix.PtraceRegs) error {
		if int64(regs.Rax) != 0 || addr == 0 {
			return nil
		}
		b, err := readMem(tid, addr, n)
		if err != nil {
			return nil // the struct is gone with its process
		}
		fix(b, t.world, t.tgid(tid))
		return ignoreGone(writeMem(tid, addr, b))
	}
}

func zeroOnSuccess(addr uint64, n int) exitFixup {
	return func(tid int, regs *unix.PtraceRegs) error {
		if int64(regs.Rax) < 0 || addr == 0 {
			return nil
		}
		writeMem(tid, addr, make([]byte, n))
		return nil
	}
}

// reaped returns a fixup for wait4 (infop 0) or waitid that, after
// rusage's, tells the world which child the caller reaped: the caller's
// clocks move up to the child's (virt.World.Reaped).
func (t *Tracer) reaped(rusage exitFixup, infop uint64) exitFixup {
	return func(tid int, regs *unix.PtraceRegs) error {
		if err := rusage(tid, regs); err != nil {
			return err
		}
		pid := int64(regs.Rax)
		if infop != 0 {
			if pid != 0 {
				return nil
			}
			si, err := readMem(tid, infop, 24) // si_signo, si_errno, si_code, pad, si_pid
			if err != nil {
				return nil
			}
			pid = int64(int32(le.Uint32(si[16:])))
		}
		if pid > 0 {
			t.world.Reaped(t.tgid(tid), int32(pid))
		}
		return nil
	}
}

// deny skips the syscall and makes it fail with errno.
func deny(tid int, regs *unix.PtraceRegs, errno unix.Errno) (exitFixup, error) {
	regs.Orig_rax = ^uint64(0)
	if err := unix.PtraceSetRegs(tid, regs); err != nil {
		return nil, ignoreGone(err)
	}
	return func(tid int, regs *unix.PtraceRegs) error {
		regs.Rax = uint64(-int64(errno))
		return ignoreGone(unix.PtraceSetRegs(tid, regs))
	}, nil
}

// msTimeout reads an int millisecond timeout; <= 0 means none.
func msTimeout(arg uint64) time.Duration {
	ms := int32(arg)
	if ms <= 0 {
		return -1
	}
	return time.Duration(ms) * time.Millisecond
}

// relativeWait advances the monotonic clock to entry time + d when the
// wait times out (returns 0, or -timeoutErrno when that is not 0). after
// runs at exit in any case.
func (t *Tracer) relativeWait(tid int, d time.Duration, timeoutErrno unix.Errno, after exitFixup) exitFixup {
	if d < 0 {
		return after
	}
	tg := t.tgid(tid)
	start, _ := t.world.Now(tg, virt.ClockMonotonic)
	deadline := start + int64(d)
	return func(tid int, regs *unix.PtraceRegs) error {
		if timedOut(regs.Rax, timeoutErrno) {
			t.world.TimedOut(tg, virt.ClockMonotonic, deadline)
		}
		if after != nil {
			return after(tid, regs)
		}
		return nil
	}
}

func timedOut(rax uint64, timeoutErrno unix.Errno) bool {
	if timeoutErrno == 0 {
		return rax == 0
	}
	return int64(rax) == -int64(timeoutErrno)
}

// timespecWait handles a relative struct timespec timeout at addr. With
// restore, the kernel's write of the time left (which is host time) is
// undone unless the wait timed out.
func (t *Tracer) timespecWait(tid int, addr uint64, restore bool, timeoutErrno unix.Errno) (exitFixup, error) {
	return t.structWait(tid, addr, 1, restore, timeoutErrno)
}

// timevalWait handles select's struct timeval.
func (t *Tracer) timevalWait(tid int, addr uint64) (exitFixup, error) {
	return t.structWait(tid, addr, 1000, true, 0)
}

func (t *Tracer) structWait(tid int, addr uint64, unit int64, restore bool, timeoutErrno unix.Errno) (exitFixup, error) {
	if addr == 0 {
		return nil, nil
	}
	orig, err := readMem(tid, addr, 16)
	if err != nil {
		return nil, nil // a bad pointer: the kernel will say EFAULT
	}
	ns, _ := timeoutNs(orig, unit)
	d := time.Duration(ns)
	var after exitFixup
	if restore {
		after = func(tid int, regs *unix.PtraceRegs) error {
			if !timedOut(regs.Rax, timeoutErrno) {
				writeMem(tid, addr, orig)
			}
			return nil
		}
	}
	return t.relativeWait(tid, d, timeoutErrno, after), nil
}

// timeoutNs reads a struct timespec (unit 1) or timeval (unit 1000) as
// ns; ok is false for a value the kernel refuses (EINVAL).
func timeoutNs(b []byte, unit int64) (ns int64, ok bool) {
	sec, frac := int64(le.Uint64(b)), int64(le.Uint64(b[8:]))
	return sec*1e9 + frac*unit, sec >= 0 && frac >= 0 && frac < 1e9/unit
}

// futexClock is the clock of a futex op's absolute timeout.
func futexClock(op uint64) int32 {
	if op&futexClockRealtime != 0 {
		return virt.ClockRealtime
	}
	return virt.ClockMonotonic
}

func (t *Tracer) futex(tid int, regs *unix.PtraceRegs) (exitFixup, error) {
	clock := futexClock(regs.Rsi)
	switch regs.Rsi & futexCmdMask {
	case futexWait:
		return t.timespecWait(tid, regs.R10, false, unix.ETIMEDOUT)
	case futexWaitBitset, futexWaitRequeuePI, futexLockPI2:
		return t.absoluteWait(tid, regs, clock)
	case futexLockPI:
		return t.absoluteWait(tid, regs, virt.ClockRealtime)
	}
	return nil, nil // arg 3 is a count, not a timeout
}

// absoluteWait translates an absolute virtual deadline (the timespec R10
// points to: futex and futex_waitv) into host time on clock, so that the wait lasts as long in
// real time as it does in virtual time. The translated timespec goes below
// the stack pointer and R10 is restored at exit; an expired wait advances
// the virtual clock to the deadline.
func (t *Tracer) absoluteWait(tid int, regs *unix.PtraceRegs, clock int32) (exitFixup, error) {
	addr := regs.R10
	if addr == 0 {
		return nil, nil
	}
	b, err := readMem(tid, addr, 16)
	if err != nil {
		return nil, nil
	}
	deadline, _ := timeoutNs(b, 1)
	tg := t.tgid(tid)
	now, err := t.world.Now(tg, clock)
	if err != nil {
		return nil, nil // the kernel will say EINVAL
	}
	var host unix.Timespec
	if err := unix.ClockGettime(clock, &host); err != nil {
		return nil, err
	}
	real := host.Nano() + max(deadline-now, 0)
	scratch := (regs.Rsp - scratchBelowSP) &^ 15
	ts := make([]byte, 16)
	le.PutUint64(ts, uint64(real/1e9))
	le.PutUint64(ts[8:], uint64(real%1e9))
	if err := writeMem(tid, scratch, ts); err != nil {
		return nil, nil
	}
	regs.R10 = scratch
	if err := unix.PtraceSetRegs(tid, regs); err != nil {
		return nil, ignoreGone(err)
	}
	return func(tid int, regs *unix.PtraceRegs) error {
		if int64(regs.Rax) == -int64(unix.ETIMEDOUT) {
			t.world.TimedOut(tg, clock, deadline)
		}
		regs.R10 = addr
		return ignoreGone(unix.PtraceSetRegs(tid, regs))
	}, nil
}
