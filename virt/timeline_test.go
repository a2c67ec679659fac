package virt

import (
	"os"
	"testing"
	"time"
)

// A run that is never still (here: no process has started) ends a short
// wait at ShortLimit of real time, moving no clock, and holds a longer
// one until the run's time reaches it.
func TestShortWaitLimit(t *testing.T) {
	w := world(t, 0)
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer wr.Close()
	tl := w.NewTimeline(Stream{Stdin: wr}, func(int64) {}, func(int64) {})
	before, _ := w.ReadClock(0, ClockMonotonic)
	deadline := time.Duration(before) + 5*time.Millisecond

	woke := make(chan time.Duration, 2)
	start := time.Now()
	_, shortEscaped := tl.Await(1, deadline, true, func() { woke <- time.Since(start) })
	cancelLong, _ := tl.Await(2, deadline+time.Hour, false, func() { woke <- -1 })
	select {
	case d := <-woke:
		if d < ShortLimit {
			t.Fatalf("a short wait ended after %v, before its limit %v, in a run that is not still", d, ShortLimit)
		}
	case <-time.After(10 * ShortLimit):
		t.Fatalf("a short wait did not end at its limit")
	}
	if !shortEscaped() {
		t.Fatal("a short wait ended at its limit does not say so: its clock would move")
	}
	if !cancelLong() {
		t.Fatal("a long wait ended in a run that was never still")
	}
	if ok, err := tl.Sleep(3, deadline, true, func() error { return nil }); ok || err != nil {
		t.Fatalf("a short sleep in a run never still: ok %v, err %v; want its limit", ok, err)
	}
	if v, _ := w.ReadClock(0, ClockMonotonic); v != before {
		t.Fatalf("the clock moved from %d to %d: a wait ended at its real-time limit moves none", before, v)
	}
}
