//go:build linux

package tracer

import (
	"errors"
	"fmt"
	"os"

	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// errGone is returned by an injection whose thread exited meanwhile; its
// exit status waits in t.pending for the event loop.
var errGone = errors.New("tracee gone")

type waited struct {
	tid int
	ws  unix.WaitStatus
}

// syscallIn runs syscall nr(args) in thread tid, stopped at a ptrace stop,
// from the syscall instruction at insn, and returns its result. It starts
// from regs; the caller restores the thread's own registers afterwards.
func (t *Tracer) syscallIn(tid int, regs unix.PtraceRegs, insn, nr uint64, args ...uint64) (int64, error) {
	r := regs
	r.Rip = insn
	r.Rax, r.Orig_rax = nr, ^uint64(0) // no syscall to restart at this stop
	for i, p := range []*uint64{&r.Rdi, &r.Rsi, &r.Rdx, &r.R10, &r.R8, &r.R9} {
		if i < len(args) {
			*p = args[i]
		}
	}
	if err := unix.PtraceSetRegs(tid, &r); err != nil {
		return 0, err
	}
	for range 2 { // its entry stop, then its exit stop
		if err := t.toSyscallStop(tid); err != nil {
			return 0, err
		}
	}
	if err := unix.PtraceGetRegs(tid, &r); err != nil {
		return 0, err
	}
	return int64(r.Rax), nil
}

// toSyscallStop resumes thread tid to its next syscall entry or exit stop.
// A signal that stops it meanwhile is kept for redeliver; a seccomp or
// group stop is passed.
func (t *Tracer) toSyscallStop(tid int) error {
	for {
		if err := unix.PtraceSyscall(tid, 0); err != nil {
			return err
		}
		var ws unix.WaitStatus
		_, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOTHREAD, nil)
		for err == unix.EINTR {
			_, err = unix.Wait4(tid, &ws, unix.WALL|unix.WNOTHREAD, nil)
		}
		if err != nil {
			return err
		}
		if ws.Exited() || ws.Signaled() {
			t.pending = append(t.pending, waited{tid, ws})
			return errGone
		}
		sig, event := ws.StopSignal(), int(ws>>16)&0xff
		switch {
		case sig == syscallStop:
			return nil
		case event != 0: // a seccomp stop of a traced call, a group stop
		case sig == unix.SIGSTOP && t.wakeStop(tid):
			// The wake-up watch's (an execve that woke another process):
			// dropped, not redelivered as a real stop. That one wake-up
			// goes unordered; the fork hold has ordered the exec's parent.
		default:
			th := t.thread(tid)
			th.deferred = append(th.deferred, sig)
		}
	}
}

// redeliver resends the signals that stopped thread tid while the tracer
// ran syscalls in it.
func (t *Tracer) redeliver(tid int) {
	th := t.threads[tid]
	if th == nil {
		return
	}
	for _, sig := range th.deferred {
		unix.Tgkill(int(t.tgid(tid)), tid, sig)
	}
	th.deferred = nil
}

// clockMap is where a process's clock page is: its address, a syscall
// instruction to inject from, and a NUL byte (memfd_create's name).
type clockMap struct {
	page, insn, name uint64
}

// mapClock makes a clock page and maps it into thread tid's process,
// MAP_FIXED at cm.page if fixed (a forked child replacing its parent's),
// and returns this side's mapping and the page's address there.
func (t *Tracer) mapClock(tid int, regs unix.PtraceRegs, cm clockMap, fixed bool) ([]byte, uint64, error) {
	fd, err := t.syscallIn(tid, regs, cm.insn, unix.SYS_MEMFD_CREATE, cm.name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, 0, err
	}
	if fd < 0 {
		return nil, 0, fmt.Errorf("clock page: memfd_create in pid %d: %w", tid, unix.Errno(-fd))
	}
	mem, err := shareFD(tid, int(fd))
	flags, addr := uint64(unix.MAP_SHARED), uint64(0)
	if fixed {
		flags, addr = flags|unix.MAP_FIXED, cm.page
	}
	var got int64
	if err == nil {
		got, err = t.syscallIn(tid, regs, cm.insn, unix.SYS_MMAP, addr, virt.PageSize, unix.PROT_READ|unix.PROT_WRITE, flags, uint64(fd), 0)
	}
	if err == nil {
		var closed int64
		closed, err = t.syscallIn(tid, regs, cm.insn, unix.SYS_CLOSE, uint64(fd))
		if err == nil && closed != 0 {
			err = fmt.Errorf("clock page: close in pid %d: %w", tid, unix.Errno(-closed))
		}
	}
	if err == nil && got < 0 && got > -4096 {
		err = fmt.Errorf("clock page: mmap in pid %d: %w", tid, unix.Errno(-got))
	}
	if err != nil {
		if mem != nil {
			unix.Munmap(mem)
		}
		return nil, 0, err
	}
	return mem, uint64(got), nil
}

// shareFD maps thread tid's file fd (a new memfd) into this process, one
// page long.
func shareFD(tid, fd int) ([]byte, error) {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", tid, fd), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("clock page: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(virt.PageSize); err != nil {
		return nil, fmt.Errorf("clock page: %w", err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, virt.PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("clock page: mmap: %w", err)
	}
	return mem, nil
}
