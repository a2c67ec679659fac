//go:build linux

package tracer

import (
	"errors"
	"fmt"
	"slices"
	"time"
	"unsafe"

	"github.com/lockstep-run/lockstep/hostcap"
	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

const options = unix.PTRACE_O_TRACESYSGOOD | unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_TRACECLONE |
	unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK | unix.PTRACE_O_TRACESECCOMP | unix.PTRACE_O_EXITKILL

const syscallStop = unix.SIGTRAP | 0x80 // PTRACE_O_TRACESYSGOOD

// exitFixup runs at a thread's syscall-exit stop with its registers.
type exitFixup func(tid int, regs *unix.PtraceRegs) error

type thread struct {
	announced   bool          // its creator's fork or clone stop has been seen (or it is the root)
	parked      time.Time     // when stopped at its first stop until it is announced, else zero
	exit        exitFixup     // pending syscall-exit work, or nil
	busyTG      int32         // thread group marked busy in the world's Quiet until the exit, or 0
	deferred    []unix.Signal // signals that stopped it while the tracer ran syscalls in it
	forkedBy    int32         // a new process with memory of its own: its parent's (give it a clock page)
	await       func() bool   // takes back a timed wait's registration with the timeline (awaitLog), or nil
	interrupted bool          // the tracer interrupted it for its timeline (awaitLog), and it has yet to stop for that
	awaited     bool          // it has been in awaitLog: a PTRACE_EVENT_STOP is an interrupt's, not a first stop
}

// Tracer traces one process tree. All its methods must be called from the
// one OS thread that called Seize (runtime.LockOSThread); children given to
// Reap must have been forked by that thread.
type Tracer struct {
	world      *virt.World
	cpuidFault bool // the CPU can fault on cpuid: arm it at every exec

	threads   map[int]*thread // by thread ID
	others    map[int]bool    // untraced children to reap (an init process)
	held      map[int]*hold   // threads held at their clone stop, by thread ID
	spinUntil time.Time       // release polls without sleeping until then
	throttle  map[int]bool    // threads held for the I/O tracer (Throttle)
	taken     uint64          // the Throttle's SIGSTOPs taken so far
	parked    int             // threads parked at their first stop
	root      int
	status    unix.WaitStatus // root's, once it has exited
	exited    bool
	clocks    map[int32]clockMap // by process: where its clock page is
	pending   []waited           // statuses an injection took from wait4, for the loop
	bell      bell               // wakes the loop for a timeline (awaitLog)
	Execs     int                // execve calls seen
	// RootNumber is the root's number in its world (virt.World.Root;
	// 0 is 1): a container's n-th process handed over is number n+1.
	RootNumber uint64
	// OnFirstExec, if set, runs at the first execve's stop, before the
	// new program runs (the I/O tracer starts recording there).
	OnFirstExec func()
	// Throttle, if set, is the I/O tracer's back-pressure.
	Throttle Throttle
	// Wakes, if set, names the process a SIGSTOP'd thread woke (ebpf.Wakes).
	Wakes Wakes
	// OnFail, if set, is told why the tracer fails before it kills the
	// tracees: a reason written to their stderr then reaches whoever
	// reads it, before the writers die and the reader sees its end.
	OnFail func(error)
}

// Throttle is the back-pressure of the eBPF I/O tracer (ebpf.Tracer): when
// its ring buffer is past half full it sends the thread that wrote SIGSTOP,
// at the end of the syscall. The tracer takes that signal at its delivery
// stop, does not deliver it, and holds the thread while the I/O tracer is
// Behind. The program sees no signal, no stop and no interrupted syscall.
type Throttle interface {
	Stops() uint64 // SIGSTOPs sent so far
	Behind() bool
}

// Wakes is the eBPF wake-up watch (ebpf.Wakes): a thread of the run that
// woke a thread of another of its processes in a syscall is sent SIGSTOP
// as the syscall returns. The tracer takes that signal at its delivery
// stop, does not deliver it, and holds the thread until the woken process
// waits again (or holdLimit passes), as it holds a process's starter
// until the new process waits: the woken process runs to its next wait
// first, and what both then write to a shared pipe or file, or what a
// third sees ready in select, comes in that order.
type Wakes interface {
	// Woke says whether thread tid's SIGSTOP is the watch's, the process
	// it woke and how many threads it had then, and what reports whether
	// the thread it woke has gone to a wait since.
	Woke(tid int) (tgid, threads int, waited func() bool, ok bool)
}

// New returns a tracer serving w. It arms CPUID faulting at every exec
// where this host can (hostcap measures it once per process).
func New(w *virt.World) *Tracer {
	return &Tracer{world: w, cpuidFault: cpuidFaulting(), threads: map[int]*thread{}, others: map[int]bool{}, held: map[int]*hold{}, throttle: map[int]bool{}, clocks: map[int32]clockMap{}}
}

// cpuidFaulting reports whether cpuid faults on this host once armed.
func cpuidFaulting() bool {
	leaks, err := hostcap.Leaks()
	return err == nil && !slices.Contains(leaks, hostcap.CPUID)
}

// Seize attaches to thread tid, the root of the tree; its status is the
// one Wait returns.
func (t *Tracer) Seize(tid int) error {
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(tid), 0, options, 0, 0); e != 0 {
		return fmt.Errorf("ptrace seize %d: %w", tid, e)
	}
	t.root = tid
	t.threads[tid] = &thread{announced: true}
	t.world.Root(int32(tid), max(t.RootNumber, 1))
	pin(tid)
	return nil
}

// Reap makes Wait also wait for pid, an untraced child of this process.
func (t *Tracer) Reap(pid int) { t.others[pid] = true }

// Wait runs the tracer until every tracee (and every child given to Reap)
// has exited, and returns the root's wait status. On an error it kills
// every tracee first.
func (t *Tracer) Wait() (unix.WaitStatus, error) {
	defer t.silenceBell()
	// A held thread's release is polled for every 20 µs (release): with
	// the default 50 µs of timer slack each poll would take 70.
	unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0)
	for len(t.threads) > 0 || len(t.others) > 0 {
		var ws unix.WaitStatus
		// __WNOTHREAD: only this thread's tracees and children, so that
		// several tracers can run in one process (one per container process
		// tree in the shim's agent).
		flags := unix.WALL | unix.WNOTHREAD
		if len(t.held) > 0 || t.parked > 0 || len(t.throttle) > 0 {
			flags |= unix.WNOHANG
		}
		var tid int
		var err error
		if len(t.pending) > 0 {
			tid, ws = t.pending[0].tid, t.pending[0].ws
			t.pending = t.pending[1:]
		} else {
			tid, err = unix.Wait4(-1, &ws, flags, nil)
		}
		if err == unix.EINTR {
			continue
		}
		if tid == 0 && err == nil { // WNOHANG, nothing to wait for
			if err := t.release(); err != nil {
				return ws, t.fail(err)
			}
			continue
		}
		if err == unix.ECHILD {
			break
		}
		if err != nil {
			return ws, t.fail(fmt.Errorf("tracer: wait: %w", err))
		}
		if tid == t.bell.pid {
			if err := t.rung(ws); err != nil {
				return ws, t.fail(err)
			}
			continue
		}
		if ws.Exited() || ws.Signaled() {
			if tid == t.root {
				t.status, t.exited = ws, true
			}
			if th := t.threads[tid]; th != nil {
				t.idle(th)
				if !th.parked.IsZero() {
					t.parked--
				}
				if th.await != nil {
					th.await()
				}
				t.woken(tid, th)
			}
			delete(t.threads, tid)
			delete(t.held, tid)
			delete(t.throttle, tid)
			delete(t.others, tid)
			if err := t.childExited(tid); err != nil {
				return ws, t.fail(err)
			}
			t.world.Exit(int32(tid))
			t.world.Quiet().Forget(int32(tid))
			delete(t.clocks, int32(tid))
			continue
		}
		if !ws.Stopped() {
			continue
		}
		if err := t.stopped(tid, ws); err != nil {
			return ws, t.fail(err)
		}
	}
	if !t.exited {
		return t.status, errors.New("tracer: the traced command vanished without an exit status")
	}
	return t.status, nil
}

// fail reports err (OnFail) and kills every tracee.
func (t *Tracer) fail(err error) error {
	if t.OnFail != nil {
		t.OnFail(err)
	}
	t.KillAll()
	return err
}

// KillAll kills every tracee (fail closed).
func (t *Tracer) KillAll() {
	for tid := range t.threads {
		unix.Kill(tid, unix.SIGKILL)
	}
}

func (t *Tracer) thread(tid int) *thread {
	th, ok := t.threads[tid]
	if !ok {
		th = &thread{}
		t.threads[tid] = th
	}
	return th
}

// stopped handles one ptrace stop and resumes the thread.
func (t *Tracer) stopped(tid int, ws unix.WaitStatus) error {
	th := t.thread(tid)

	sig := ws.StopSignal()
	event := int(ws>>16) & 0xff
	switch {
	case sig == syscallStop:
		return t.syscallExit(tid, th)
	case sig == unix.SIGSTOP && event == 0 && t.wokeOther(tid):
		return nil // resumed by release, with no signal
	case sig == unix.SIGSTOP && event == 0 && t.throttled(tid):
		t.throttle[tid] = true
		return nil // resumed by release, with no signal
	case event == unix.PTRACE_EVENT_STOP && sig != unix.SIGTRAP:
		// Group-stop (SIGSTOP and friends): stay stopped until SIGCONT.
		return ignoreGone(ptrace(unix.PTRACE_LISTEN, tid, 0, 0))
	case sig == unix.SIGTRAP && event != 0:
		return t.event(tid, th, event)
	case sig == unix.SIGSEGV:
		emulated, err := t.emulate(tid)
		if err != nil {
			return err
		}
		if emulated {
			return resume(tid, 0)
		}
	}
	if t.world.Timers().Pending(int32(tid)) {
		if err := t.noRestart(tid); err != nil {
			return err
		}
	}
	return resume(tid, int(sig))
}

func (t *Tracer) event(tid int, th *thread, event int) error {
	switch event {
	case unix.PTRACE_EVENT_EXEC:
		if former, err := unix.PtraceGetEventMsg(tid); err == nil && int(former) != tid {
			delete(t.threads, int(former))
		}
		if t.Execs == 0 {
			t.world.Start()
			if t.OnFirstExec != nil {
				t.OnFirstExec()
			}
		}
		t.Execs++
		return t.exec(tid, th)
	case unix.PTRACE_EVENT_STOP:
		if th.awaited { // awaitLog's PTRACE_INTERRUPT, which came after the wait ended
			t.woken(tid, th)
			return resume(tid, 0)
		}
		// A new tracee's first stop. It runs only once its creator's
		// fork or clone stop has named it (virt.World.Fork), so that
		// it never asks for entropy under no name.
		if !th.announced {
			th.parked = time.Now()
			t.parked++
			return nil
		}
		return t.firstRun(tid, th)
	case unix.PTRACE_EVENT_CLONE, unix.PTRACE_EVENT_FORK, unix.PTRACE_EVENT_VFORK:
		msg, err := unix.PtraceGetEventMsg(tid)
		if err != nil {
			return ignoreGone(err)
		}
		child := int(msg)
		q := t.world.Quiet()
		parent := q.Tgid(uint32(tid))
		process := event != unix.PTRACE_EVENT_CLONE || q.Tgid(uint32(child)) != parent
		ch := t.thread(child)
		if process {
			t.world.Fork(parent, int32(child))
			if event != unix.PTRACE_EVENT_VFORK {
				ch.forkedBy = parent
			}
		}
		ch.announced = true
		if err := t.unpark(child, ch); err != nil {
			return err
		}
		now := time.Now()
		h := &hold{until: now.Add(holdLimit)}
		if process {
			h.child = child
		}
		t.held[tid] = h
		t.spinUntil = now.Add(spinFor)
		return nil // resumed by release
	case unix.PTRACE_EVENT_SECCOMP:
		return t.seccompStop(tid, th)
	}
	return resume(tid, 0)
}

// sentByKernel reports whether the signal thread tid stops for was sent
// by the kernel (SI_KERNEL, as bpf_send_signal does; kill(2) and tgkill(2)
// say SI_USER or SI_TKILL).
func sentByKernel(tid int) bool {
	var si unix.Siginfo
	return ptrace(unix.PTRACE_GETSIGINFO, tid, 0, uintptr(unsafe.Pointer(&si))) == nil && si.Code == siKernel
}

// throttled reports whether thread tid's SIGSTOP is one of the Throttle's:
// sent by the kernel (SI_KERNEL, as bpf_send_signal does; kill(2) and
// tgkill(2) say SI_USER or SI_TKILL), and not more than it has sent.
func (t *Tracer) throttled(tid int) bool {
	if t.Throttle == nil || !sentByKernel(tid) {
		return false
	}
	if t.taken >= t.Throttle.Stops() {
		return false
	}
	t.taken++
	return true
}

// tgid returns thread tid's process.
func (t *Tracer) tgid(tid int) int32 { return t.world.Quiet().Tgid(uint32(tid)) }

// busy marks the thread's process as inside a traced syscall until its
// exit (virt.Quiet: sleeps of its other threads are held back).
func (t *Tracer) busy(tid int, th *thread) {
	if th.busyTG == 0 {
		q := t.world.Quiet()
		th.busyTG = q.Tgid(uint32(tid))
		q.Enter(th.busyTG)
	}
}

func (t *Tracer) idle(th *thread) {
	if th.busyTG != 0 {
		t.world.Quiet().Leave(th.busyTG)
		th.busyTG = 0
	}
}

func (t *Tracer) syscallExit(tid int, th *thread) error {
	defer t.idle(th)
	fix := th.exit
	th.exit = nil
	if fix != nil {
		var regs unix.PtraceRegs
		if err := unix.PtraceGetRegs(tid, &regs); err != nil {
			return ignoreGone(err)
		}
		if err := fix(tid, &regs); err != nil {
			return err
		}
	}
	// A fixup may leave a new one in th.exit for a later syscall (the
	// CPUID injection): it is reached through that syscall's seccomp stop.
	return resume(tid, 0)
}

func ptrace(req, pid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func resume(tid, sig int) error { return ignoreGone(unix.PtraceCont(tid, sig)) }

// ignoreGone drops ESRCH: a tracee killed under us is no error.
func ignoreGone(err error) error {
	if err == unix.ESRCH {
		return nil
	}
	return err
}

// readMem and writeMem access a tracee's memory.
func readMem(tid int, addr uint64, n int) ([]byte, error) {
	b := make([]byte, n)
	got, err := unix.ProcessVMReadv(tid, []unix.Iovec{{Base: &b[0], Len: uint64(n)}},
		[]unix.RemoteIovec{{Base: uintptr(addr), Len: n}}, 0)
	if err != nil || got != n {
		return nil, fmt.Errorf("read tracee %d memory at %#x: %v", tid, addr, err)
	}
	return b, nil
}

func writeMem(tid int, addr uint64, b []byte) error {
	got, err := unix.ProcessVMWritev(tid, []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
		[]unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}, 0)
	if err != nil || got != len(b) {
		return fmt.Errorf("write tracee %d memory at %#x: %v", tid, addr, err)
	}
	return nil
}
