//go:build linux

package hostcap

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/btf"
	"github.com/lockstep-run/lockstep/ebpf"
	"github.com/lockstep-run/lockstep/seccomp"
	"golang.org/x/sys/unix"
)

// seccompCheck installs a filter that notifies getppid on one locked
// thread (it exits with the thread), makes the call there, and answers it
// from here with SECCOMP_IOCTL_NOTIF_ADDFD: the call returns the new fd.
func seccompCheck() Check {
	c := Check{Name: "seccomp-notify", Need: Required,
		How:     "a filter notifying getppid on one thread; the notification is answered with SECCOMP_IOCTL_NOTIF_ADDFD, then SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP is set",
		Without: "the agent cannot answer clocks, randomness, identity and files", Fix: "a kernel with CONFIG_SECCOMP_FILTER (5.9+ for ADDFD; 6.6+ for synchronous wake-ups), run as root"}
	type res struct {
		fd  int
		err error
	}
	listener, got := make(chan res, 1), make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread and its filter end with this goroutine
		fd, err := seccomp.Install([]seccomp.Rule{{Name: "getppid", Nr: unix.SYS_GETPPID, Action: seccomp.ActNotify}})
		listener <- res{fd, err}
		if err != nil {
			return
		}
		// Syscall, not RawSyscall: the runtime then knows the thread is in
		// a system call and does not preempt it with SIGURG, which ends
		// the notification ("no longer valid") when the answer comes
		// after 10 ms, as it did once in CI under load.
		r, _, e := unix.Syscall(unix.SYS_GETPPID, 0, 0, 0)
		got <- res{int(r), map[bool]error{true: e, false: nil}[e != 0]}
	}()
	l := <-listener
	if l.err != nil {
		c.Found = l.err.Error()
		return c
	}
	defer unix.Close(l.fd)
	fds := []unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 2000); n != 1 {
		c.Found = fmt.Sprintf("no notification within 2 s (%v)", err)
		return c
	}
	var n seccomp.Notif
	if err := seccomp.Recv(l.fd, &n); err != nil {
		c.Found = "SECCOMP_IOCTL_NOTIF_RECV: " + err.Error()
		return c
	}
	src, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		c.Found = err.Error()
		return c
	}
	defer unix.Close(src)
	added, err := seccomp.AddFDSend(l.fd, n.ID, src, true)
	if err != nil {
		c.Found = err.Error()
		return c
	}
	r := <-got
	unix.Close(added) // the filtered thread shares this process's files
	if r.err != nil || r.fd != added {
		c.Found = fmt.Sprintf("getppid returned %d (%v), not the fd %d that ADDFD installed", r.fd, r.err, added)
		return c
	}
	c.OK, c.Found = true, "notification received, answered with ADDFD"
	if err := seccomp.SyncWakeUp(l.fd); err != nil {
		c.Found += "; no synchronous wake-ups (" + err.Error() + "): each answer costs a cross-CPU wake-up"
	} else {
		c.Found += ", synchronous wake-ups available"
	}
	return c
}

// ptraceCheck starts a traced child, sets the tracer's options at its
// exec stop, finds __vdso_clock_gettime in its vDSO and writes those bytes
// back through /proc/PID/mem, as the tracer patches them.
func ptraceCheck() Check {
	c := Check{Name: "ptrace-vdso", Need: Required,
		How:     "a child stopped at execve: PTRACE_SETOPTIONS (TRACESECCOMP, TRACEEXEC, TRACECLONE, TRACEFORK, TRACEVFORK, EXITKILL), then __vdso_clock_gettime found in its vDSO's dynsym and rewritten through /proc/PID/mem",
		Without: "the tracer cannot patch the vDSO's clocks (which never enter the kernel), rewrite AT_RANDOM or emulate rdtsc", Fix: "run as root; kernel.yama.ptrace_scope below 3"}
	found, err := tracedVDSO()
	c.OK, c.Found = err == nil, found
	if err != nil {
		c.Found = err.Error()
	}
	return c
}

func tracedVDSO() (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd, err := start(progTrue, &syscall.SysProcAttr{Ptrace: true})
	if err != nil {
		return "", err
	}
	pid := cmd.Process.Pid
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil || !ws.Stopped() {
		return "", fmt.Errorf("the traced child did not stop at execve (%v, status %#x)", err, ws)
	}
	opts := unix.PTRACE_O_TRACESECCOMP | unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_TRACECLONE |
		unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK | unix.PTRACE_O_EXITKILL
	if err := unix.PtraceSetOptions(pid, opts); err != nil {
		return "", fmt.Errorf("PTRACE_SETOPTIONS: %w", err)
	}
	lo, hi, err := vdsoRange(pid)
	if err != nil {
		return "", err
	}
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer mem.Close()
	img := make([]byte, hi-lo)
	if _, err := mem.ReadAt(img, int64(lo)); err != nil {
		return "", fmt.Errorf("read the vDSO: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return "", fmt.Errorf("the vDSO is not ELF: %w", err)
	}
	syms, _ := f.DynamicSymbols()
	for _, s := range syms {
		if s.Name != "__vdso_clock_gettime" {
			continue
		}
		at := int64(lo) + int64(s.Value) - int64(vdsoBase(f))
		if _, err := mem.WriteAt(img[at-int64(lo):at-int64(lo)+2], at); err != nil {
			return "", fmt.Errorf("write the vDSO: %w", err)
		}
		return fmt.Sprintf("options set; __vdso_clock_gettime at %#x rewritten (%d symbols)", s.Value, len(syms)), nil
	}
	return "", fmt.Errorf("no __vdso_clock_gettime among %d vDSO symbols", len(syms))
}

// vdsoBase is the vDSO's link address (its first PT_LOAD's vaddr).
func vdsoBase(f *elf.File) uint64 {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			return p.Vaddr
		}
	}
	return 0
}

func vdsoRange(pid int) (lo, hi uint64, err error) {
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(maps), "\n") {
		if strings.HasSuffix(l, "[vdso]") {
			a, b, _ := strings.Cut(strings.Fields(l)[0], "-")
			lo, _ = strconv.ParseUint(a, 16, 64)
			hi, _ = strconv.ParseUint(b, 16, 64)
			return lo, hi, nil
		}
	}
	return 0, 0, fmt.Errorf("no [vdso] in /proc/%d/maps", pid)
}

// bpfCheck loads and attaches Lockstep's own I/O tracer.
func bpfCheck() Check {
	c := Check{Name: "bpf", Need: Info,
		How:     "the I/O tracer's programs loaded and attached (raw tracepoints sys_enter and sys_exit, a ring buffer), and the kernel's BTF read",
		Without: "--digests, --audit and the digest reports of the shim do not work; runs do", Fix: "a kernel with BPF, tracepoints and BTF (CONFIG_DEBUG_INFO_BTF), run as root"}
	start := time.Now()
	t, err := ebpf.Start(ebpf.Record{IO: true}, func(ebpf.Event) {})
	if err != nil {
		c.Found = err.Error()
		return c
	}
	t.Close()
	c.Found = fmt.Sprintf("I/O tracer loaded and attached in %d ms", time.Since(start).Milliseconds())
	if _, err := btf.LoadKernelSpec(); err != nil {
		c.Found += "; no kernel BTF: " + err.Error()
		return c
	}
	c.OK = true
	c.Found += "; kernel BTF present"
	return c
}

// branchCounterCheck looks for the PMU's retired-branch counter, which
// Hermit uses to deliver asynchronous signals at a counted point of a
// computation. Lockstep does not use it: a timer or signal due while a
// process computes without waiting fires late, where the host's timing
// puts it, with a warning (docs/determinism.md, "Timers").
func branchCounterCheck() Check {
	c := Check{Name: "branch-counter", Need: Info,
		How:     "perf_event_open of the hardware event PERF_COUNT_HW_BRANCH_INSTRUCTIONS for this process, user mode only",
		Without: "no counter of a computation's progress: a timer or signal due while a process computes without ever waiting lands where the host's timing puts it (Lockstep warns; it fires late, once the process has not waited for a second)",
		Fix:     "a host whose hypervisor exposes the PMU (Firecracker and many cloud VMs do not)"}
	attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_HARDWARE, Config: unix.PERF_COUNT_HW_BRANCH_INSTRUCTIONS,
		Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{})), Bits: unix.PerfBitExcludeKernel | unix.PerfBitExcludeHv | unix.PerfBitDisabled}
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		c.Found = "no hardware counters: " + err.Error()
		return c
	}
	unix.Close(fd)
	c.OK, c.Found = true, "present (not used yet)"
	return c
}
