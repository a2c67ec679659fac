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
// names the namespace. blocking lists the calls that wait for another
// party (virt.BlockingCalls): a woken thread has reached its next wait
// when it sleeps in one of them.
func WatchWakes(blocking []int) (*Wakes, error) {
	w := &Wakes{}
	if err := loadWakeObjects(&w.objs, nil); err != nil {
		return nil, fmt.Errorf("ebpf: load the wake-up watch (root, BPF and the kernel's BTF, /sys/kernel/btf/vmlinux, are needed): %w", err)
	}
	for _, nr := range blocking {
		if err := w.objs.Blocking.Update(uint32(nr), uint8(1), ebpf.UpdateAny); err != nil {
			w.Close()
			return nil, fmt.Errorf("ebpf: the wake-up watch's calls: %w", err)
		}
	}
	for name, p := range map[string]*ebpf.Program{
		"sys_enter":          w.objs.WakeEnter,
		"sys_exit":           w.objs.WakeExit,
		"sched_waking":       w.objs.WakeWaking,
		"sched_switch":       w.objs.WakeSwitch,
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

// Enable watches the PID namespace of process pid, but not process
// untraced (a host process ID, 0 for none) in it: a process the tracer
// does not trace could not be held, and the watch's SIGSTOP would stop it
// for good (lockstep exec's init).
func (w *Wakes) Enable(pid, untraced int) error {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid), &st); err != nil {
		return fmt.Errorf("ebpf: PID namespace of %d: %w", pid, err)
	}
	return w.objs.Target.Update(uint32(0), wakeTarget{Dev: uint64(st.Dev), Ino: st.Ino, Untraced: uint32(untraced)}, ebpf.UpdateAny)
}

// Woke reports whether thread tid (a host ID) was sent a SIGSTOP for a
// wake-up, the process (host ID) it woke and how many threads that
// process had then, and what reports whether the thread it woke has gone
// to a wait since (or is gone). It forgets the entry.
func (w *Wakes) Woke(tid int) (tgid, threads int, waited func() bool, ok bool) {
	var v wakeWake
	if err := w.objs.Woken.LookupAndDelete(uint32(tid), &v); err != nil {
		return 0, 0, nil, false
	}
	return int(v.Tgid), int(v.Threads), func() bool {
		var t wakeTask
		if err := w.objs.Tasks.Lookup(v.Task, &t); err != nil {
			return true
		}
		return t.Waits > v.Waits
	}, true
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
