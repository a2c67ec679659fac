package virt

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-run/lockstep/seccomp"
)

// Quiet makes a notified or traced syscall look instantaneous to the other threads
// of its process: a sleep (nanosleep, clock_nanosleep) does not end while
// another thread of the sleeper's process is inside a notified syscall (the
// agent) or stopped in a traced one (the tracer), or while a notification
// is waiting to be received.
//
// Why: a traced syscall takes ~100 µs, a notified one ~25 µs. Go's sysmon
// thread sleeps 20 µs at a time (nanosleep) and takes the processor from a
// goroutine it sees in the same syscall on two wake-ups; the goroutine may
// then resume on another runtime thread, whose random state (map order,
// unseeded math/rand) differs. With sleeps held back, sysmon never sees
// such a syscall span two of its wake-ups. The cost falls on sleepers only,
// and is at most one such syscall's time.
type Quiet struct {
	mu       sync.Mutex
	cond     *sync.Cond
	busy     map[int32]int   // by thread group: fast notifications being served
	tgids    map[int32]int32 // thread ID -> thread group ID
	sleeping map[int32]bool  // threads in a notified syscall that waits (a sleep)
	held     map[int32]bool  // threads a Timeline holds until the log's time
	waking   map[int32]bool  // threads a Timeline woke that their tracer has yet to resume
	feeds    map[uint64]bool // inodes of the sockets the agent feeds (entropy devices)
	files    procCache       // the threads' /proc files, kept open
}

func newQuiet() *Quiet {
	q := &Quiet{}
	q.cond = sync.NewCond(&q.mu)
	q.busy = map[int32]int{}
	q.tgids = map[int32]int32{}
	q.sleeping = map[int32]bool{}
	q.held = map[int32]bool{}
	q.waking = map[int32]bool{}
	q.feeds = map[uint64]bool{}
	return q
}

// Sleep and Wake bracket a notified syscall of thread tid that waits by
// its nature (a sleep the agent serves): Running counts that thread as
// waiting. In every other notified syscall it counts as running: it is
// being answered and goes on at once.
func (q *Quiet) Sleep(tid int32) { q.mark(q.sleeping, tid, true) }
func (q *Quiet) Wake(tid int32)  { q.mark(q.sleeping, tid, false) }

// mark adds tid to the set, or removes it.
func (q *Quiet) mark(set map[int32]bool, tid int32, on bool) {
	q.mu.Lock()
	if on {
		set[tid] = true
	} else {
		delete(set, tid)
	}
	q.mu.Unlock()
}

func (q *Quiet) in(set map[int32]bool, tid int32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return set[tid]
}

// Hold and Unhold bracket a sleep a Timeline holds: Still counts only
// such sleepers as waiting, not a sleep the agent has yet to hand it.
func (q *Quiet) Hold(tid int32)   { q.mark(q.held, tid, true) }
func (q *Quiet) Unhold(tid int32) { q.mark(q.held, tid, false) }

// Waking and Woken bracket the time between a Timeline's waking a thread
// blocked in the kernel (Timeline.Await) and its tracer's resuming it:
// the thread counts as running then, though the kernel still has it
// asleep.
func (q *Quiet) Waking(tid int32) { q.mark(q.waking, tid, true) }
func (q *Quiet) Woken(tid int32)  { q.mark(q.waking, tid, false) }

// Feed and Unfeed bracket the life of a socket (by inode) whose bytes the
// agent writes as the program reads them (an entropy device): a thread
// blocked reading it waits for the agent, not for anything the program
// or its input does, and counts as running.
func (q *Quiet) Feed(ino uint64)   { q.mu.Lock(); q.feeds[ino] = true; q.mu.Unlock() }
func (q *Quiet) Unfeed(ino uint64) { q.mu.Lock(); delete(q.feeds, ino); q.mu.Unlock() }

// readsFeed reports whether a thread of tgid, blocked in call nr with
// first argument fd (hex, as /proc/TID/syscall shows it), is reading a
// socket the agent feeds.
func (q *Quiet) readsFeed(tgid int, nr int, fd string) bool {
	q.mu.Lock()
	none := len(q.feeds) == 0
	q.mu.Unlock()
	switch {
	case none:
		return false
	case nr != 0 && nr != 17 && nr != 19 && nr != 45 && nr != 47 && nr != 295 && nr != 327: // read, pread64, readv, recvfrom, recvmsg, preadv, preadv2
		return false
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(fd, "0x"), 16, 32)
	if err != nil {
		return false
	}
	link, err := os.Readlink("/proc/" + strconv.Itoa(tgid) + "/fd/" + strconv.FormatUint(n, 10))
	if err != nil {
		return false
	}
	ino, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return false
	}
	i, err := strconv.ParseUint(strings.TrimSuffix(ino, "]"), 10, 64)
	if err != nil {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.feeds[i]
}

// Tgid returns the thread group (process) of thread tid.
func (q *Quiet) Tgid(tid uint32) int32 {
	q.mu.Lock()
	tg, ok := q.tgids[int32(tid)]
	q.mu.Unlock()
	if ok {
		return tg
	}
	tg = readTgid(int(tid))
	q.mu.Lock()
	q.tgids[int32(tid)] = tg
	q.mu.Unlock()
	return tg
}

// Forget drops what Tgid knows of tid, a thread that has exited: its ID
// may be given to another.
func (q *Quiet) Forget(tid int32) {
	q.mu.Lock()
	delete(q.tgids, tid)
	q.mu.Unlock()
	q.files.forget(int(tid), nil)
}

func readTgid(tid int) int32 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return int32(tid) // gone: nothing will wait on it
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Tgid:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return int32(n)
			}
		}
	}
	return int32(tid)
}

func (q *Quiet) Enter(tg int32) {
	q.mu.Lock()
	q.busy[tg]++
	q.mu.Unlock()
}

func (q *Quiet) Leave(tg int32) {
	q.mu.Lock()
	if q.busy[tg]--; q.busy[tg] <= 0 {
		delete(q.busy, tg)
	}
	q.mu.Unlock()
	q.cond.Broadcast()
}

// Changed wakes waiters after a notification was received.
func (q *Quiet) Changed() { q.cond.Broadcast() }

// Enter and Leave bracket a syscall of thread group tg being answered.
//
// WaitIdle waits until no syscall of tg is being answered and pending (the
// agent's listener has a notification waiting) is false. It gives up after
// maxHold: a hold is never worth a hang.
func (q *Quiet) WaitIdle(tg int32, pending func() bool) {
	deadline := time.Now().Add(maxHold)
	for time.Now().Before(deadline) {
		q.mu.Lock()
		for q.busy[tg] > 0 {
			q.cond.Wait()
		}
		q.mu.Unlock()
		if !pending() {
			return
		}
		time.Sleep(5 * time.Microsecond) // the agent's loop is receiving it
	}
}

const maxHold = 10 * time.Millisecond

// Running reports whether a thread of process tgid, other than those skip
// names, is on a CPU or waiting for one, stopped by its tracer (which
// resumes it soon), or in a notified syscall the agent has yet to answer
// (other than a sleep): not in an interruptible sleep (a futex, a read, a
// notified sleep), stopped by a signal, or gone. It reads the state field
// of /proc/TGID/task/TID/stat, and the kernel stack of a sleeping thread.
// Under load the agent may take milliseconds to answer a notification
// (an open that is not served), and a thread waiting for that answer is
// not waiting for anything the program does.
func (q *Quiet) Running(tgid int, skip func(tid int) bool) bool {
	return q.running(tgid, skip, func(tid int32) bool { return q.in(q.sleeping, tid) }, false)
}

// running is Running, with waiting telling which threads in a notified
// syscall wait; with zombies, a thread that exited counts as running
// while it is still in the run (its tracer has yet to pass its exit on
// to its parent, which then wakes).
func (q *Quiet) running(tgid int, skip func(tid int) bool, waiting func(int32) bool, zombies bool) bool {
	dir, names := q.tasks(tgid)
	var buf [4096]byte
	for _, name := range names {
		tid, _ := strconv.Atoi(name)
		if skip(tid) {
			continue
		}
		if q.in(q.waking, int32(tid)) {
			return true
		}
		b, err := q.taskFile(dir, name, taskStat, buf[:])
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			continue
		}
		switch b[i+2] {
		case 'R', 'D', 't':
			return true
		case 'Z', 'X':
			if zombies {
				return true
			}
		case 'S':
			nr, arg, known := q.syscallOf(dir, name)
			// In a notification: the kernel stack says (not wchan: it
			// reads 0 for a thread in a notification here). Only a call
			// the profile notifies can be in one, and reading the stack
			// costs four times reading the call.
			if !known || notifiedCalls[nr] {
				if st, _ := q.taskFile(dir, name, taskStack, buf[:]); bytes.Contains(st, []byte("seccomp_do_user_notif")) && !waiting(int32(tid)) {
					return true
				}
			}
			if known && !q.waits(tgid, nr, arg) {
				return true
			}
		}
	}
	return false
}

// WaitStill waits until no thread of tgid other than tid runs (Running),
// seen on two looks in a row, or limit passes. A short sleep ends there:
// a runtime's watchdog thread (Go's sysmon sleeps 20 µs to 10 ms at a
// time) then acts only at points where the rest of the process waits, not
// at whatever point of a computation the host's timing put it, where it
// would take the processor from the goroutine (preemption) and move it to
// another thread with other random state.
func (q *Quiet) WaitStill(tgid, tid int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	still := 0
	pause := 20 * time.Microsecond
	for still < 2 && time.Now().Before(deadline) {
		if q.Running(tgid, func(t int) bool { return t == tid }) {
			still = 0
			Pause(pause)
			pause = min(2*pause, time.Millisecond)
			continue
		}
		still++
	}
}

// Still reports whether no thread of the processes tgids runs (Running,
// but a thread in a notified syscall waits only if a Timeline holds it),
// on two looks between which none of them was scheduled (the run counts
// of /proc/TID/schedstat did not change): at some instant between the
// looks, every one of them was waiting.
func (q *Quiet) Still(tgids []int32) bool {
	first, ok := q.look(tgids)
	if !ok {
		return false
	}
	second, ok := q.look(tgids)
	return ok && first == second
}

// look returns a sum over the threads of tgids of their run counts, and
// false if one of them runs.
func (q *Quiet) look(tgids []int32) (uint64, bool) {
	var sum uint64
	for _, tg := range tgids {
		if q.running(int(tg), func(int) bool { return false }, func(tid int32) bool { return q.in(q.held, tid) }, true) {
			return 0, false
		}
		dir, names := q.tasks(int(tg))
		var buf [128]byte
		for _, name := range names {
			b, err := q.taskFile(dir, name, taskSchedstat, buf[:])
			if err != nil {
				continue
			}
			f := strings.Fields(string(b))
			if len(f) == 3 {
				n, _ := strconv.ParseUint(f[2], 10, 64)
				tid, _ := strconv.ParseUint(name, 10, 64)
				sum += n * (tid | 1)
			}
		}
	}
	return sum, true
}

// tasks returns /proc/TGID/task/ and the thread IDs in it (none if the
// process is gone).
func (q *Quiet) tasks(tgid int) (string, []string) {
	dir := "/proc/" + strconv.Itoa(tgid) + "/task/"
	return dir, q.files.list(dir, tgid)
}

// syscallOf returns the call thread name of dir (/proc/TGID/task/) is
// in, and its first argument (hex, as /proc/TID/syscall shows it); known
// is false when that is not known (unreadable, or not in a call:
// "running", "-1 ...").
func (q *Quiet) syscallOf(dir, name string) (nr int, arg string, known bool) {
	var buf [256]byte
	b, err := q.taskFile(dir, name, taskSyscall, buf[:])
	if err != nil {
		return 0, "", false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, "", false
	}
	nr, err = strconv.Atoi(f[0])
	if err != nil || nr < 0 {
		return 0, "", false
	}
	if len(f) > 1 {
		arg = f[1]
	}
	return nr, arg, true
}

// waits reports whether a thread of tgid asleep in the kernel (state S)
// in call nr, with first argument arg, waits for another party: it is in
// a call that waits (a read, a write to a full pipe, a poll, a futex, a
// wait for a child, a sleep, a lock), and not reading a socket the agent
// feeds (an entropy device: the read waits for the agent). Asleep in any
// other call (a path lookup waiting on a lock, an exit releasing a
// child's /proc entries, a page fault), it is in the middle of its own
// work and counts as running. A thread whose call is not known counts as
// waiting, as before this was known.
func (q *Quiet) waits(tgid, nr int, arg string) bool {
	if !blockingCalls[nr] {
		return false
	}
	return arg == "" || !q.readsFeed(tgid, nr, arg)
}

// notifiedCalls are the calls the determinism profile sends to the
// agent (seccomp.ActNotify, whatever the arguments): only in one of them
// can a thread wait for a notification's answer.
var notifiedCalls = func() map[int]bool {
	m := map[int]bool{}
	for _, r := range seccomp.Rules() {
		if r.Action == seccomp.ActNotify {
			m[int(r.Nr)] = true
		}
	}
	return m
}()

// BlockingCalls returns the numbers of the x86-64 calls that wait for
// another party (for the eBPF wake-up watch, ebpf.Wakes).
func BlockingCalls() []int {
	out := make([]int, 0, len(blockingCalls))
	for nr := range blockingCalls {
		out = append(out, nr)
	}
	return out
}

// blockingCalls are the x86-64 calls that wait for another party.
var blockingCalls = map[int]bool{
	0: true, 1: true, 7: true, 17: true, 18: true, 19: true, 20: true, 23: true, // read, write, poll, pread64, pwrite64, readv, writev, select
	34: true, 35: true, 40: true, 42: true, 43: true, 44: true, 45: true, 46: true, 47: true, // pause, nanosleep, sendfile, connect, accept, sendto, recvfrom, sendmsg, recvmsg
	61: true, 65: true, 69: true, 70: true, 72: true, 73: true, // wait4, semop, msgsnd, msgrcv, fcntl (F_SETLKW), flock
	128: true, 130: true, 202: true, 208: true, 220: true, 230: true, 232: true, // rt_sigtimedwait, rt_sigsuspend, futex, io_getevents, semtimedop, clock_nanosleep, epoll_wait
	242: true, 243: true, 247: true, 270: true, 271: true, 275: true, 276: true, 278: true, // mq_timedsend, mq_timedreceive, waitid, pselect6, ppoll, splice, tee, vmsplice
	281: true, 288: true, 295: true, 296: true, 299: true, 307: true, 327: true, 328: true, // epoll_pwait, accept4, preadv, pwritev, recvmmsg, sendmmsg, preadv2, pwritev2
	441: true, 449: true, // epoll_pwait2, futex_waitv
}
