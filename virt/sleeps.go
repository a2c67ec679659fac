package virt

import "time"

// The sleeps the agent serves, as timers see them: a timer's signal may
// cut one short (the agent writes the time left, the tracer keeps the
// kernel from restarting it), and one in progress decides whether the
// run's being still may move its process's clock (Timers.run).

// Sleeping is a sleep the agent serves: a timer's signal may interrupt it.
type Sleeping struct {
	Tgid       int32
	Start, End time.Duration // from the epoch
	Rem        uint64        // where the time left is written if interrupted (0: nowhere)
	Key        SleepKey
	gen        uint64
}

// SleepKey names a sleep call: its number and arguments. The kernel
// restarts a call a signal interrupted (SA_RESTART) with the same ones.
type SleepKey [7]uint64

// RestartAsIs, set in an interrupted sleep's key's number, lets the
// kernel restart it as it would (the timer was due before the sleep
// began: as if the handler had run before the call).
const RestartAsIs = 1 << 63

// SleptOut, set in an interrupted sleep's key's number, ends the call
// with 0: the timer was due where the sleep ends, so the sleep ran its
// course and the signal is pending at its return, as where the kernel's
// two timers expire together.
const SleptOut = 1 << 62

// Sleep notes that thread tid is in sleep s, and returns what notes that
// it left it (unless it is in another sleep by then: the agent may see the
// next one before it is done with an interrupted one).
func (ts *Timers) Sleep(tid int32, s Sleeping) (awake func()) {
	ts.mu.Lock()
	ts.gen++
	ts.sleepGen++
	s.gen = ts.gen
	ts.sleeps[tid] = s
	ts.slept[s.Tgid] = time.Now()
	ts.mu.Unlock()
	return func() {
		ts.mu.Lock()
		ts.sleepGen++
		if ts.sleeps[tid].gen == s.gen {
			delete(ts.sleeps, tid)
		}
		ts.mu.Unlock()
	}
}

// Sleeps returns the sleeps of process tgid's threads, by TID.
func (ts *Timers) Sleeps(tgid int32) map[int32]Sleeping {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := map[int32]Sleeping{}
	for tid, s := range ts.sleeps {
		if s.Tgid == tgid {
			out[tid] = s
		}
	}
	return out
}

// Interrupted notes that a timer's signal interrupted thread tid's sleep
// key (the agent wrote the time left). Restarted reports, once, whether a
// sleep call is that one restarted by the kernel: it then fails with
// EINTR, as a sleep a handler interrupted does, with SA_RESTART or not.
func (ts *Timers) Interrupted(tid int32, key SleepKey) {
	ts.mu.Lock()
	ts.restarts[tid] = key
	ts.mu.Unlock()
}

// Pending reports whether thread tid's sleep was interrupted and its
// restart not yet seen.
func (ts *Timers) Pending(tid int32) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	_, ok := ts.restarts[tid]
	return ok
}

// Interrupting returns the sleep of thread tid a timer's signal is
// interrupting, if any.
func (ts *Timers) Interrupting(tid int32) (SleepKey, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	k, ok := ts.restarts[tid]
	return k, ok
}

func (ts *Timers) Restarted(tid int32, key SleepKey) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	k, ok := ts.restarts[tid]
	delete(ts.restarts, tid)
	return ok && k == key
}

// sleeps0 returns the count of sleeps begun and ended.
func (ts *Timers) sleeps0() uint64 {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.sleepGen
}

// sleeping reports whether a thread of process tgid is in a sleep the
// agent serves: the sleep fires the timer itself if the deadline falls in
// it (sleepTimed), and if it ends first the process goes on from there,
// so the run's being still must not move its clock. (The look at the run
// counts only if no sleep began or ended meanwhile.)
func (ts *Timers) sleeping(tgid int32) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, s := range ts.sleeps {
		if s.Tgid == tgid {
			return true
		}
	}
	return false
}
