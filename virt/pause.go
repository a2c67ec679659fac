package virt

import (
	"syscall"
	"time"
)

// Pause sleeps d. Go's timers wake a sleeper no sooner than about a
// millisecond when the rest of the process is idle (the runtime's
// netpoller blocks in whole milliseconds: a 20 µs time.Sleep took 1.06 ms
// here), which made every poll of the run's stillness, and every short
// sleep the agent serves, a millisecond long. Below a millisecond the
// thread sleeps in nanosleep itself (~60 µs for 20 µs asked, in a VM).
func Pause(d time.Duration) {
	if d >= time.Millisecond {
		time.Sleep(d)
		return
	}
	ts := syscall.NsecToTimespec(int64(max(d, 0)))
	syscall.Nanosleep(&ts, nil)
}
