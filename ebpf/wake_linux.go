//go:build linux

package ebpf

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Wakes watches one PID namespace for wake-ups across its processes
// (bpf/wake.bpf.c): a thread that, in a syscall, wakes a thread of
// another process of the namespace is sent SIGSTOP as the syscall
// returns, and Woke names the process it woke. Lockstep's ptrace tracer
// takes those stops and holds the thread until that process waits again.
type Wakes struct {
	objs  wakeObjects
	links []link.Link
}

// WatchWakes loads the programs and attaches them; they watch once Enable
// names the namespace.
func WatchWakes() (*Wakes, error) {
	w := &Wakes{}
	if err := loadWakeObjects(&w.objs, nil); err != nil {
		return nil, fmt.Errorf("ebpf: load the wake-up watch (root and BPF are needed): %w", err)
	}
	for name, p := range map[string]*ebpf.Program{
		"sys_enter":          w.objs.WakeEnter,
		"sys_exit":           w.objs.WakeExit,
		"sched_waking":       w.objs.WakeWaking,
		"sched_process_free": w.objs.WakeFree,
	} {
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: name, Program: p})
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("ebpf: attach the wake-up watch to the %s raw tracepoint: %w", name, err)
		}
		w.links = append(w.links, l)
	}
	return w, nil
}

// Enable watches the PID namespace of process pid.
func (w *Wakes) Enable(pid int) error {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid), &st); err != nil {
		return fmt.Errorf("ebpf: PID namespace of %d: %w", pid, err)
	}
	return w.objs.Target.Update(uint32(0), wakeTarget{Dev: uint64(st.Dev), Ino: st.Ino}, ebpf.UpdateAny)
}

// Woke reports whether thread tid (a host ID) was sent a SIGSTOP for a
// wake-up, and the process (host ID) it woke; it forgets the entry.
func (w *Wakes) Woke(tid int) (int, bool) {
	var tgid uint32
	if err := w.objs.Woken.LookupAndDelete(uint32(tid), &tgid); err != nil {
		return 0, false
	}
	return int(tgid), true
}

// Count returns how many wake-ups across processes the watch saw.
func (w *Wakes) Count() uint64 {
	var n uint64
	w.objs.Counts.Lookup(uint32(0), &n)
	return n
}

// Close detaches and unloads the programs.
func (w *Wakes) Close() {
	for _, l := range w.links {
		l.Close()
	}
	w.objs.Close()
}
