package virt

import (
	"testing"
	"time"
)

func TestTimers(t *testing.T) {
	w, err := New(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Start()
	const tg = 4242 // a process the world does not know: the shared clock
	ts := w.Timers()
	var got []Expiry
	ts.Deliver = func(e Expiry) { got = append(got, e) }

	if a, b := ts.Create(tg, Timer{Signo: 10}), ts.Create(tg, Timer{Signo: 12}); a != 0 || b != 1 {
		t.Fatalf("IDs %d, %d: the kernel numbers a process's timers 0, 1, ...", a, b)
	}
	now := w.WallNow(tg)
	if left, _, err := ts.Set(tg, 0, now+5*time.Second, time.Second); err != nil || left != 0 {
		t.Fatalf("arming a disarmed timer: %v left, %v", left, err)
	}
	if left, iv, _ := ts.Get(tg, 0); left != 5*time.Second || iv != time.Second {
		t.Errorf("armed for 5 s every 1 s: Get says %v, %v", left, iv)
	}
	if _, _, err := ts.Get(tg, 7); err != ErrNoTimer {
		t.Errorf("Get of no timer: %v", err)
	}
	if left, _, _ := ts.SetAfter(tg, AlarmID, 2*time.Second, 0); left != 0 {
		t.Errorf("a first alarm had %v left", left)
	}

	// A periodic timer whose process's time jumped three periods past it
	// fires once, with three overruns, and is due next after the jump.
	ts.Set(tg, 1, now+10*time.Millisecond, 3*time.Millisecond)
	if _, _, _, ok := ts.Due(tg, now+9*time.Millisecond); ok {
		t.Fatal("a timer due at +10ms cuts a sleep that ends at +9ms")
	}
	_, gen, at, ok := ts.Due(tg, now+10*time.Millisecond)
	if !ok || at != now+10*time.Millisecond {
		t.Fatalf("Due: %v %v, want timer 1 at +10ms", at, ok)
	}
	w.pr.advance(tg, Wall, now+20*time.Millisecond, 0)
	if fired, next := ts.fire(tg, 1, gen, false); !fired || next != now+22*time.Millisecond || len(got) != 1 {
		t.Fatalf("fire: %d expiries", len(got))
	}
	if e := got[0]; e.Signo != 12 || e.ID != 1 || e.Overrun != 3 || e.At != now+10*time.Millisecond || e.Escaped {
		t.Errorf("expiry %+v", e)
	}
	if left, _, _ := ts.Get(tg, 1); left != 2*time.Millisecond {
		t.Errorf("after firing at +20ms, due again in %v, want 2ms (+22ms)", left)
	}
	if n, _ := ts.Overrun(tg, 1); n != 3 {
		t.Errorf("timer_getoverrun: %d", n)
	}
	ts.Set(tg, 1, now+time.Second, 0)
	if fired, _ := ts.fire(tg, 1, gen, false); fired {
		t.Error("a stale firing (the timer was set again since) fired")
	}

	// execve deletes timer_create's timers, not the alarm; exit all.
	ts.Exec(tg)
	if _, _, err := ts.Get(tg, 0); err != ErrNoTimer {
		t.Errorf("a timer survived execve")
	}
	if left, _, _ := ts.Get(tg, AlarmID); left != 2*time.Second-20*time.Millisecond {
		t.Errorf("the alarm after execve has %v left", left)
	}
	if id := ts.Create(tg, Timer{Signo: 10}); id != 0 {
		t.Errorf("the first timer after execve is %d", id)
	}
	if err := ts.Delete(tg, 0); err != nil || ts.Delete(tg, 0) != ErrNoTimer {
		t.Errorf("delete, then delete again: %v", err)
	}
	ts.Exit(tg)
	if _, _, _, ok := ts.Due(tg, now+time.Hour); ok {
		t.Error("a timer outlived its process")
	}

	// kill(2)'s signal, at its sender's time, cuts a sleep that ends
	// after it, not one that ends at it: the sleep ends first.
	ts.Signal(tg, 10, now+time.Second)
	if _, _, _, ok := ts.Due(tg, now+time.Second); ok {
		t.Error("a kill's signal cuts a sleep that ends as it is sent")
	}
	if id, _, at, ok := ts.Due(tg, now+time.Second+1); !ok || id >= AlarmID || at != now+time.Second {
		t.Errorf("Due: timer %d at %v (%v), want the kill's at +1s", id, at, ok)
	}
	ts.Exit(tg)

	// A CPU-time clock's timer keeps what it was set to and never fires.
	id := ts.Create(tg, Timer{Signo: 10, CPU: true})
	ts.SetAfter(tg, id, time.Second, 0)
	if _, _, _, ok := ts.Due(tg, now+time.Hour); ok {
		t.Error("a CPU-time timer is due")
	}
	if left, _, _ := ts.Get(tg, id); left != time.Second {
		t.Errorf("a CPU-time timer has %v left, want the 1 s it was set to", left)
	}
}
