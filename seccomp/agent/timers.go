//go:build linux

package agent

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// Interval timers on the virtual clocks (virt.Timers): alarm, setitimer
// and getitimer for ITIMER_REAL (ITIMER_VIRTUAL and ITIMER_PROF count the
// host's CPU time and run natively), and timer_create's timers.

const (
	itimerReal      = 0
	itimerProf      = 2
	sizeofItimerval = 32 // two struct timeval
	sizeofSigevent  = 64
	sigrtmax        = 64
)

func (a *Agent) registerTimers() {
	ts := a.world.Timers()
	ts.Deliver = a.deliverTimer
	ts.Warn = func(tgid int32) {
		fmt.Fprintf(os.Stderr, "lockstep: process %s: a timer or signal came due while the process computed without waiting; where it landed follows the host's timing (docs/determinism.md, \"Timers\")\n", a.world.Name(tgid))
	}
	a.handle(unix.SYS_ALARM, "alarm", a.alarm)
	a.handle(unix.SYS_SETITIMER, "setitimer", a.setitimer)
	a.handle(unix.SYS_GETITIMER, "getitimer", a.getitimer)
	a.handle(unix.SYS_TIMER_CREATE, "timer_create", a.timerCreate)
	a.handle(unix.SYS_TIMER_SETTIME, "timer_settime", a.timerSettime)
	a.handle(unix.SYS_TIMER_GETTIME, "timer_gettime", a.timerGettime)
	a.handle(unix.SYS_TIMER_GETOVERRUN, "timer_getoverrun", a.timerGetoverrun)
	a.handle(unix.SYS_TIMER_DELETE, "timer_delete", a.timerDelete)
	a.handle(unix.SYS_KILL, "kill", a.kill)
}

// kill: a signal to another process of the run lands where the receiver's
// time reaches the sender's (virt.Timers.Signal). Signals to the caller
// itself, to groups, to processes outside the run, and SIGKILL, SIGSTOP
// and SIGCONT (which act on the process, not at a point of its code) are
// the kernel's.
func (a *Agent) kill(r *Req) (int64, error) {
	pid, sig := int32(r.Arg(0)), int32(r.Arg(1))
	if pid <= 0 || sig <= 0 || sig > sigrtmax || sig == int32(unix.SIGKILL) || sig == int32(unix.SIGSTOP) || sig == int32(unix.SIGCONT) {
		return 0, errContinue
	}
	target, ok := a.world.TgidOf(pid)
	if !ok || target == r.Tgid() {
		return 0, errContinue
	}
	a.world.Timers().Signal(target, sig, a.world.WallNow(r.Tgid()))
	return 0, nil
}

func timerErr(err error) error {
	if err == virt.ErrNoTimer {
		return syscall.EINVAL
	}
	return err
}

func (a *Agent) alarm(r *Req) (int64, error) {
	left, _, err := a.world.Timers().SetAfter(r.Tgid(), virt.AlarmID, time.Duration(uint32(r.Arg(0)))*time.Second, 0)
	if err != nil {
		return 0, err
	}
	// As the kernel: the seconds left, rounded to the nearest, at least 1
	// if any time was left.
	secs, us := int64(left/time.Second), left%time.Second/time.Microsecond
	if (secs == 0 && us > 0) || us >= 500_000 {
		secs++
	}
	return secs, nil
}

// readPair reads two timevals (usec) or timespecs (nsec) and checks them as
// the kernel does.
func (r *Req) readPair(addr uint64, unit time.Duration) (first, second time.Duration, err error) {
	b, err := r.Read(addr, 32)
	if err != nil {
		return 0, 0, err
	}
	var d [2]time.Duration
	limit := int64(time.Second / unit)
	for i := range d {
		sec := int64(binary.LittleEndian.Uint64(b[16*i:]))
		frac := int64(binary.LittleEndian.Uint64(b[16*i+8:]))
		if sec < 0 || frac < 0 || frac >= limit {
			return 0, 0, syscall.EINVAL
		}
		const maxSec = (1<<63 - 1) / int64(time.Second)
		d[i] = time.Duration(min(sec, maxSec-1))*time.Second + time.Duration(frac)*unit
	}
	return d[0], d[1], nil
}

// pair encodes two durations as timevals (unit µs) or timespecs.
func pair(first, second, unit time.Duration) []byte {
	return le64(int64(first/time.Second), int64(first%time.Second/unit), int64(second/time.Second), int64(second%time.Second/unit))
}

func (a *Agent) setitimer(r *Req) (int64, error) {
	var interval, value time.Duration
	if r.Arg(1) != 0 { // NULL: disarm (the kernel's "misfeature")
		var err error
		if interval, value, err = r.readPair(r.Arg(1), time.Microsecond); err != nil {
			return 0, err
		}
	}
	switch int32(r.Arg(0)) {
	case itimerReal:
	case itimerReal + 1, itimerProf:
		return 0, errContinue // CPU time: the kernel's
	default:
		return 0, syscall.EINVAL
	}
	if value == 0 {
		interval = 0
	}
	left, oldInterval, err := a.world.Timers().SetAfter(r.Tgid(), virt.AlarmID, value, interval)
	if err != nil {
		return 0, err
	}
	return 0, r.WriteOpt(r.Arg(2), pair(oldInterval, left, time.Microsecond))
}

func (a *Agent) getitimer(r *Req) (int64, error) {
	switch int32(r.Arg(0)) {
	case itimerReal:
	case itimerReal + 1, itimerProf:
		return 0, errContinue
	default:
		return 0, syscall.EINVAL
	}
	left, interval, err := a.world.Timers().Get(r.Tgid(), virt.AlarmID)
	if err != nil {
		return 0, err
	}
	return 0, r.Write(r.Arg(1), pair(interval, left, time.Microsecond))
}

// timerClock checks timer_create's clock as the kernel does: is there
// such a clock, and can it have timers.
func timerClock(id int32) (cpu bool, err error) {
	switch {
	case id < 0 && id&7 == 3, id == virt.ClockMonotonicRaw, id == virt.ClockRealtimeCoarse, id == virt.ClockMonotonicCoarse:
		return false, syscall.EOPNOTSUPP
	case id < 0:
		return true, nil
	}
	cl, err := virt.ClassOf(id)
	if err != nil {
		return false, syscall.EINVAL
	}
	return cl == virt.CPU, nil
}

func (a *Agent) timerCreate(r *Req) (int64, error) {
	var ev []byte
	if r.Arg(1) != 0 {
		var err error
		if ev, err = r.Read(r.Arg(1), sizeofSigevent); err != nil {
			return 0, err
		}
	}
	clock := int32(r.Arg(0))
	cpu, err := timerClock(clock)
	if err != nil {
		return 0, err
	}
	ts := a.world.Timers()
	t := virt.Timer{Signo: int32(unix.SIGALRM), Notify: virt.SigevSignal, Clock: clock, CPU: cpu}
	id := ts.Create(r.Tgid(), t) // as the kernel: a failure below uses up the ID
	fail := func(err error) (int64, error) {
		ts.Delete(r.Tgid(), id)
		return 0, err
	}
	if ev == nil {
		t.Value = uint64(id)
	} else {
		t.Value = binary.LittleEndian.Uint64(ev)
		t.Signo = int32(binary.LittleEndian.Uint32(ev[8:]))
		t.Notify = int32(binary.LittleEndian.Uint32(ev[12:]))
		switch t.Notify {
		case virt.SigevThreadID:
			tid, ok := threadOf(r.Tgid(), int32(binary.LittleEndian.Uint32(ev[16:])))
			if !ok {
				return fail(syscall.EINVAL)
			}
			t.TID = tid
			fallthrough
		case virt.SigevSignal, virt.SigevThread:
			if t.Signo <= 0 || t.Signo > sigrtmax {
				return fail(syscall.EINVAL)
			}
		case virt.SigevNone:
		default:
			return fail(syscall.EINVAL)
		}
	}
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b, uint32(id))
	if err := r.Write(r.Arg(2), b); err != nil {
		return fail(err)
	}
	if err := r.cpuClockSeen(clock, false); err != nil {
		return fail(err)
	}
	ts.Replace(r.Tgid(), id, t)
	return 0, nil
}

// threadOf returns the host TID of thread nstid (in its own namespace) of
// process tgid, if it is one of its threads.
func threadOf(tgid, nstid int32) (int32, bool) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", tgid))
	if err != nil {
		return 0, false
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err == nil && virt.NSPid(int32(tid)) == nstid {
			return int32(tid), true
		}
	}
	return 0, false
}

func (a *Agent) timerSettime(r *Req) (int64, error) {
	if r.Arg(2) == 0 {
		return 0, syscall.EINVAL
	}
	interval, value, err := r.readPair(r.Arg(2), time.Nanosecond)
	if err != nil {
		return 0, err
	}
	ts, tgid, id := a.world.Timers(), r.Tgid(), int32(r.Arg(0))
	clock, ok := ts.ClockOf(tgid, id)
	if !ok {
		return 0, syscall.EINVAL
	}
	var deadline time.Duration
	switch {
	case value == 0:
		interval = 0
	case r.Arg(1)&timerAbstime != 0:
		if deadline, err = a.world.Deadline(tgid, clock, true, int64(value)); err != nil {
			deadline = value // a CPU clock's: kept as it is
		}
		deadline = max(deadline, 1)
	default:
		deadline = a.world.WallNow(tgid) + value
	}
	left, oldInterval, err := ts.Set(tgid, id, deadline, interval)
	if err != nil {
		return 0, timerErr(err)
	}
	return 0, r.WriteOpt(r.Arg(3), pair(oldInterval, left, time.Nanosecond))
}

func (a *Agent) timerGettime(r *Req) (int64, error) {
	left, interval, err := a.world.Timers().Get(r.Tgid(), int32(r.Arg(0)))
	if err != nil || int32(r.Arg(0)) == virt.AlarmID {
		return 0, syscall.EINVAL
	}
	return 0, r.Write(r.Arg(1), pair(interval, left, time.Nanosecond))
}

func (a *Agent) timerGetoverrun(r *Req) (int64, error) {
	n, err := a.world.Timers().Overrun(r.Tgid(), int32(r.Arg(0)))
	return int64(n), timerErr(err)
}

func (a *Agent) timerDelete(r *Req) (int64, error) {
	return 0, timerErr(a.world.Timers().Delete(r.Tgid(), int32(r.Arg(0))))
}

// deliverTimer sends an expiry's signal. A thread that the signal will
// interrupt in a sleep the agent serves gets the time it had left, as the
// kernel writes it, and its restart (SA_RESTART) fails with EINTR, so that
// the sleep ends as a native one a handler interrupted.
func (a *Agent) deliverTimer(e virt.Expiry) {
	ts := a.world.Timers()
	if tid, s, ok := interruptedSleep(e, ts.Sleeps(e.Tgid)); ok {
		// A sleep cut where the deadline falls ends with EINTR even if
		// the kernel restarts it (SA_RESTART); one the timer was due
		// before (its process's first wait since its time reached the
		// deadline) runs again, as if the handler had run first; one
		// the timer was due at the end of ran its course: it returns 0,
		// the handler runs at its return.
		key := s.Key
		switch {
		case e.At <= s.Start:
			key[0] |= virt.RestartAsIs
		case e.At >= s.End:
			key[0] |= virt.SleptOut
		}
		if s.Rem != 0 && e.At < s.End {
			left := s.End - max(e.At, s.Start)
			writeMem(int(tid), s.Rem, le64(int64(left/time.Second), int64(left%time.Second)))
		}
		ts.Interrupted(tid, key)
		a.world.Quiet().Unhold(tid)
		if tl := a.world.Timeline(); tl != nil {
			tl.Interrupt(tid)
		}
	}
	var err error
	if e.ID <= virt.AlarmID {
		err = unix.Kill(int(e.Tgid), syscall.Signal(e.Signo))
	} else {
		var info [128]byte // siginfo_t: signo, errno, code; then the timer's id, overrun, value
		binary.LittleEndian.PutUint32(info[0:], uint32(e.Signo))
		binary.LittleEndian.PutUint32(info[8:], uint32(0xfffffffe)) // SI_TIMER (-2)
		binary.LittleEndian.PutUint32(info[16:], uint32(e.ID))
		binary.LittleEndian.PutUint32(info[20:], uint32(e.Overrun))
		binary.LittleEndian.PutUint64(info[24:], e.Value)
		if e.TID != 0 {
			_, _, errno := unix.Syscall6(unix.SYS_RT_TGSIGQUEUEINFO, uintptr(e.Tgid), uintptr(e.TID), uintptr(e.Signo), uintptr(unsafe.Pointer(&info[0])), 0, 0)
			err = errnoErr(errno)
		} else {
			_, _, errno := unix.Syscall(unix.SYS_RT_SIGQUEUEINFO, uintptr(e.Tgid), uintptr(e.Signo), uintptr(unsafe.Pointer(&info[0])))
			err = errnoErr(errno)
		}
	}
	if err != nil && err != unix.ESRCH {
		fmt.Fprintf(os.Stderr, "lockstep: timer signal %d to process %s: %v\n", e.Signo, a.world.Name(e.Tgid), err)
	}
}

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// interruptedSleep finds the thread, among those in served sleeps, that
// the signal goes to and will interrupt: the thread it is sent to, or for
// a process's signal the main thread (the kernel's first choice) unless it
// blocks the signal; and only where a handler catches it (an ignored
// signal interrupts nothing; a fatal one ends the process).
func interruptedSleep(e virt.Expiry, sleeps map[int32]virt.Sleeping) (int32, virt.Sleeping, bool) {
	tid := e.TID
	if tid == 0 {
		tid = e.Tgid
	}
	s, ok := sleeps[tid]
	if !ok {
		return 0, s, false
	}
	masks := sigMasks(tid)
	bit := uint64(1) << (e.Signo - 1)
	if masks["SigBlk"]&bit != 0 || masks["SigCgt"]&bit == 0 {
		return 0, s, false
	}
	return tid, s, true
}

// sigMasks reads a thread's signal masks from /proc/TID/status.
func sigMasks(tid int32) map[string]uint64 {
	out := map[string]uint64{}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.HasPrefix(k, "Sig") {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			out[k] = n
		}
	}
	return out
}

// writeMem writes b into thread tid's memory at addr, as far as it can.
func writeMem(tid int, addr uint64, b []byte) {
	unix.ProcessVMWritev(tid, []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
		[]unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}, 0)
}
