//go:build linux

package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

const (
	timerAbstime = 1   // TIMER_ABSTIME
	userHZ       = 100 // clock ticks per second for times(2)
	sizeofRusage = 144
)

func (a *Agent) registerTime() {
	a.handle(unix.SYS_CLOCK_GETTIME, "clock_gettime", a.clockGettime)
	a.handle(unix.SYS_GETTIMEOFDAY, "gettimeofday", a.gettimeofday)
	a.handle(unix.SYS_TIME, "time", a.time)
	a.handle(unix.SYS_CLOCK_GETRES, "clock_getres", a.clockGetres)
	a.handle(unix.SYS_TIMES, "times", a.times)
	a.handle(unix.SYS_GETRUSAGE, "getrusage", a.getrusage)
	a.handleBlocking(unix.SYS_CLOCK_NANOSLEEP, "clock_nanosleep", a.clockNanosleep)
	a.handleBlocking(unix.SYS_NANOSLEEP, "nanosleep", a.nanosleep)
}

// clockErr maps the world's errors to what the caller sees.
func clockErr(err error) error {
	if errors.Is(err, virt.ErrBadClock) {
		return syscall.EINVAL
	}
	return err
}

func timespec(ns int64) []byte { return le64(ns/1e9, ns%1e9) }

// cpuClockSeen checks, as the kernel does, that the CPU-time clock of
// another process or thread (a negative id that encodes its PID) names one
// the caller can see: a thread of its own process, or for anything but a
// read, a process by its leader's ID.
func (r *Req) cpuClockSeen(id int32, read bool) error {
	pid := ^(id >> 3) // CPUCLOCK_PID
	if id >= 0 || pid == 0 {
		return nil
	}
	proc := fmt.Sprintf("/proc/%d/root/proc/", r.Tid())
	if id&4 != 0 { // CPUCLOCK_PERTHREAD_MASK
		proc = fmt.Sprintf("%s%d/task/", proc, virt.NSPid(r.Tgid()))
	}
	b, err := os.ReadFile(fmt.Sprintf("%s%d/status", proc, pid))
	if err != nil {
		return syscall.EINVAL
	}
	if !read && id&4 == 0 && !bytes.Contains(b, fmt.Appendf(nil, "\nTgid:\t%d\n", pid)) {
		return syscall.EINVAL // not a process's leader
	}
	return nil
}

func (a *Agent) clockGettime(r *Req) (int64, error) {
	if err := r.cpuClockSeen(int32(r.Arg(0)), true); err != nil {
		return 0, err
	}
	ns, err := a.world.ReadClock(r.Tgid(), int32(r.Arg(0)))
	if err != nil {
		return 0, clockErr(err)
	}
	return 0, r.Write(r.Arg(1), timespec(ns))
}

func (a *Agent) gettimeofday(r *Req) (int64, error) {
	if r.Arg(0) != 0 {
		ns, err := a.world.ReadClock(r.Tgid(), virt.ClockRealtime)
		if err != nil {
			return 0, err
		}
		if err := r.Write(r.Arg(0), le64(ns/1e9, ns%1e9/1e3)); err != nil {
			return 0, err
		}
	}
	return 0, r.WriteOpt(r.Arg(1), make([]byte, 8)) // struct timezone: UTC
}

func (a *Agent) time(r *Req) (int64, error) {
	ns, err := a.world.ReadClock(r.Tgid(), virt.ClockRealtime)
	if err != nil {
		return 0, err
	}
	sec := ns / 1e9
	return sec, r.WriteOpt(r.Arg(0), le64(sec))
}

func (a *Agent) clockGetres(r *Req) (int64, error) {
	ns, err := a.world.Resolution(int32(r.Arg(0)))
	if err != nil {
		return 0, clockErr(err)
	}
	if err := r.cpuClockSeen(int32(r.Arg(0)), false); err != nil {
		return 0, err
	}
	return 0, r.WriteOpt(r.Arg(1), timespec(ns))
}

func (a *Agent) times(r *Req) (int64, error) {
	if err := r.WriteOpt(r.Arg(0), make([]byte, 32)); err != nil { // struct tms: all zero
		return 0, err
	}
	return int64(a.world.Uptime(r.Tgid()) * userHZ / time.Second), nil
}

func (a *Agent) getrusage(r *Req) (int64, error) {
	switch int32(r.Arg(0)) {
	case unix.RUSAGE_SELF, unix.RUSAGE_CHILDREN, unix.RUSAGE_THREAD:
	default:
		return 0, syscall.EINVAL
	}
	return 0, r.Write(r.Arg(1), make([]byte, sizeofRusage))
}

func (a *Agent) clockNanosleep(r *Req) (int64, error) {
	id, abs := int32(r.Arg(0)), r.Arg(1)&timerAbstime != 0
	// As the kernel: is there such a clock, can it sleep (a negative id
	// is another process's CPU clock, or with its low bits 3 a dynamic
	// clock that cannot), then the timespec, then the CPU clock's owner.
	if _, err := virt.ClassOf(id); err != nil && id >= 0 {
		return 0, syscall.EINVAL
	}
	switch {
	case id < 0 && id&7 == 3,
		id == virt.ClockThreadCPUTime, id == virt.ClockMonotonicRaw,
		id == virt.ClockRealtimeCoarse, id == virt.ClockMonotonicCoarse:
		return 0, syscall.EOPNOTSUPP
	}
	t, err := r.readTimespec(r.Arg(2))
	if err != nil {
		return 0, err
	}
	if pid := ^(id >> 3); id < 0 && id&4 != 0 && (pid == 0 || pid == virt.NSPid(int32(r.Tid()))) {
		return 0, syscall.EINVAL // a thread cannot sleep on its own CPU clock
	}
	if err := r.cpuClockSeen(id, false); err != nil {
		return 0, err
	}
	d, err := a.world.SleepLength(r.Tgid(), id, abs, t)
	if err != nil {
		return 0, clockErr(err)
	}
	rem := r.Arg(3)
	if abs {
		rem = 0 // an absolute sleep has no time left to say
	}
	defer r.interruptible(id, abs, t, d, rem)()
	if tl := a.world.Timeline(); tl != nil && d > 0 {
		return 0, r.logSleep(tl, id, abs, t, d <= virt.RuntimeSleep)
	}
	end, err := a.world.Deadline(r.Tgid(), id, abs, t)
	if err == nil && d > 0 {
		err = r.sleepTimed(d, end)
	} else {
		err = r.sleep(d)
	}
	if err != nil {
		return 0, err
	}
	a.world.Slept(r.Tgid(), id, abs, t, d)
	return 0, nil
}

func (a *Agent) nanosleep(r *Req) (int64, error) {
	t, err := r.readTimespec(r.Arg(0))
	if err != nil {
		return 0, err
	}
	d := time.Duration(t)
	defer r.interruptible(virt.ClockMonotonic, false, t, d, r.Arg(1))()
	if tl := a.world.Timeline(); tl != nil && d > virt.RuntimeSleep {
		return 0, r.logSleep(tl, virt.ClockMonotonic, false, t, false)
	}
	if d > virt.RuntimeSleep { // a shorter one is a runtime's pause: it moves no time
		err = r.sleepTimed(d, a.world.WallNow(r.Tgid())+d)
	} else {
		err = r.sleep(d)
	}
	if err != nil {
		return 0, err
	}
	a.world.NanoSlept(r.Tgid(), d)
	return 0, nil
}

// sleepKey names this call, as the kernel restarts it.
func (r *Req) sleepKey() virt.SleepKey {
	a := r.Data.Args
	return virt.SleepKey{uint64(r.Data.Nr), a[0], a[1], a[2], a[3], a[4], a[5]}
}

// interruptible notes a sleep longer than a runtime's pause as one a
// timer may cut short (virt.Timers.Sleep), and returns what undoes that.
func (r *Req) interruptible(id int32, abs bool, t int64, d time.Duration, rem uint64) func() {
	end, err := r.a.world.Deadline(r.Tgid(), id, abs, t)
	if err != nil || d <= 0 {
		return func() {}
	}
	return r.a.world.Timers().Sleep(int32(r.Tid()), virt.Sleeping{Tgid: r.Tgid(), Start: end - d, End: end, Rem: rem, Key: r.sleepKey()})
}

// sleepTimed is sleep, for a sleep of d that ends at end (from the epoch)
// without a timeline: a timer of the process due by end (virt.Timers.Due)
// fires where its deadline falls (at end: the sleep runs its course, the
// signal is pending at its return), at once if it is due already (its process's time
// reached it, and this is its first wait since). The signal interrupts
// the sleep where a handler catches it (deliverTimer); where not, the
// sleep goes on to its end.
func (r *Req) sleepTimed(d, end time.Duration) error {
	ts, tgid, q := r.a.world.Timers(), r.Tgid(), r.a.world.Quiet()
	ff := d > shortSleep && r.a.world.FastForward()
	if d > shortSleep {
		// A long sleep waits (virt.Quiet.Still): a timer of another
		// process may fire meanwhile.
		q.Hold(int32(r.Tid()))
		defer q.Unhold(int32(r.Tid()))
	}
	start, began := end-d, time.Now()
	at := func(v time.Duration) time.Time { return began.Add(v - start) } // paced: virtual to real
	for {
		next := at(end)
		if id, gen, due, ok := ts.Due(tgid, end); ok {
			cut := max(due, start)
			if ff || !time.Now().Before(at(cut)) {
				ts.Fire(tgid, id, gen)
				if r.interrupted() {
					return errAnswered
				}
				continue
			}
			next = at(cut)
		}
		left := time.Until(next)
		if ff || (left <= 0 && next.Equal(at(end))) {
			break
		}
		time.Sleep(min(max(left, 0), sleepSlice))
		if err := r.Valid(); err != nil {
			return err
		}
	}
	if d <= shortSleep {
		q.WaitStill(int(tgid), r.Tid(), stillLimit)
	}
	return r.Valid()
}

// interrupted waits for the kernel to take back a notification a timer's
// signal interrupts (the signal is caught and not blocked: it will), and
// reports whether it did. Under load the thread may take milliseconds to
// run; answering meanwhile would end the sleep as if it had run its
// course, with the handler after it.
func (r *Req) interrupted() bool {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if r.Valid() != nil {
			return true
		}
		if !r.a.world.Timers().Pending(int32(r.Tid())) {
			return false // not one this signal interrupts
		}
		virt.Pause(100 * time.Microsecond)
	}
	return r.Valid() != nil
}

// logSleep holds a sleep until the run's time, which follows the input
// log, reaches its end (virt.Timeline): the clocks move there then. A
// short one (a runtime's pause) may end sooner, at virt.ShortLimit, and
// moves no clock then.
func (r *Req) logSleep(tl *virt.Timeline, id int32, abs bool, t int64, short bool) error {
	deadline, err := r.a.world.Deadline(r.Tgid(), id, abs, t)
	if err != nil {
		return clockErr(err)
	}
	_, err = tl.Sleep(int32(r.Pid), deadline, short, r.Valid)
	if errors.Is(err, virt.ErrInterrupted) {
		return errAnswered // the signal ends the call: the kernel's answer
	}
	return err
}

// sleepSlice bounds how long an interrupted sleeper keeps the agent
// waiting before it notices.
const sleepSlice = 20 * time.Millisecond

// Short sleeps are a runtime's own (Go's sysmon: 20 µs to 10 ms); they
// end only when the rest of the process is still, or after stillLimit.
const (
	shortSleep = 10 * time.Millisecond
	stillLimit = 50 * time.Millisecond
)

// sleep waits d of real time, so that sleeps last as long as they say
// (a replay fast-forwards: virt.World.FastForward, but a short sleep is a
// runtime's pause and still waits, see below). It stops early, with errAnswered, if the caller is interrupted (a signal):
// the kernel then restarts or fails the syscall itself.
//
// A short sleep (at most shortSleep) also waits until no other thread of
// the caller's process is running, for at most stillLimit (virt.Quiet.WaitStill).
func (r *Req) sleep(d time.Duration) error {
	if d > shortSleep && r.a.world.FastForward() {
		return r.Valid()
	}
	end := time.Now().Add(d)
	for {
		left := time.Until(end)
		if left <= 0 {
			if d <= shortSleep {
				r.a.world.Quiet().WaitStill(int(r.Tgid()), int(r.Pid), stillLimit)
			}
			return r.Valid()
		}
		virt.Pause(min(left, sleepSlice))
		if err := r.Valid(); err != nil {
			return err
		}
	}
}
