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
	if tl := a.world.Timeline(); tl != nil && d > 0 {
		return 0, r.logSleep(tl, id, abs, t, d <= virt.RuntimeSleep)
	}
	if err := r.sleep(d); err != nil {
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
	if tl := a.world.Timeline(); tl != nil && d > virt.RuntimeSleep {
		return 0, r.logSleep(tl, virt.ClockMonotonic, false, t, false)
	}
	if err := r.sleep(d); err != nil {
		return 0, err
	}
	a.world.NanoSlept(r.Tgid(), d)
	return 0, nil
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
		time.Sleep(min(left, sleepSlice))
		if err := r.Valid(); err != nil {
			return err
		}
	}
}
