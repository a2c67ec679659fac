package virt

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
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
	mu    sync.Mutex
	cond  *sync.Cond
	busy  map[int32]int   // by thread group: fast notifications being served
	tgids map[int32]int32 // thread ID -> thread group ID
}

func newQuiet() *Quiet {
	q := &Quiet{}
	q.cond = sync.NewCond(&q.mu)
	q.busy = map[int32]int{}
	q.tgids = map[int32]int32{}
	return q
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
