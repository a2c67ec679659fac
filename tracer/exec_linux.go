//go:build linux

package tracer

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// exec prepares a freshly exec'd image before its first instruction runs.
// A process killed meanwhile (its tree is being killed) is let go.
func (t *Tracer) exec(tid int, th *thread) error {
	err := t.prepareExec(tid, th)
	if err != nil && dying(tid) {
		return ignoreGone(resume(tid, 0))
	}
	return err
}

func (t *Tracer) prepareExec(tid int, th *thread) error {
	auxv, err := os.ReadFile(fmt.Sprintf("/proc/%d/auxv", tid))
	if err != nil {
		return ignoreGone(resume(tid, 0)) // killed during exec
	}
	aux := parseAuxv(auxv)
	mem, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", tid), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("exec: open tracee memory: %w", err)
	}
	defer mem.Close()
	stub, err := patchVDSO(tid, mem, aux[atSysinfoEhdr])
	if err != nil {
		return fmt.Errorf("exec of pid %d: %w", tid, err)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", tid))
	rnd, err := t.world.ExecRandom(int32(tid), exe) // after execve, tid is its process's ID
	if err != nil {
		return err
	}
	if aux[atRandom] == 0 {
		return fmt.Errorf("exec of %s: no AT_RANDOM in the auxiliary vector", exe)
	}
	if _, err := mem.WriteAt(rnd[:], int64(aux[atRandom])); err != nil {
		return fmt.Errorf("exec of %s: rewrite AT_RANDOM: %w", exe, err)
	}
	if !t.cpuidFault || stub == 0 {
		return resume(tid, 0)
	}
	// CPUID faulting is cleared by execve: re-arm it by running
	// arch_prctl(ARCH_SET_CPUID, 0) in the tracee once execve returns.
	th.exit = func(tid int, regs *unix.PtraceRegs) error { return t.injectCPUIDFault(tid, regs, stub) }
	return ignoreGone(unix.PtraceSyscall(tid, 0))
}

// patchVDSO turns the vDSO at base into syscall stubs and returns the
// address of one stub's syscall instruction (for injecting syscalls).
func patchVDSO(tid int, mem *os.File, base uint64) (uint64, error) {
	if base == 0 {
		return 0, nil // no vDSO mapped: every clock read is a syscall already
	}
	size, err := vdsoSize(tid, base)
	if err != nil {
		return 0, err
	}
	img := make([]byte, size)
	if _, err := mem.ReadAt(img, int64(base)); err != nil {
		return 0, fmt.Errorf("read vdso: %w", err)
	}
	patches, err := PlanVDSO(img, base)
	if err != nil {
		return 0, err
	}
	for _, p := range patches {
		if _, err := mem.WriteAt(p.Code, int64(p.Addr)); err != nil {
			return 0, fmt.Errorf("patch %s: %w", p.Symbol, err)
		}
	}
	return patches[0].Addr + stubSyscallOffset, nil
}

// vdsoSize finds the vDSO mapping's length in /proc/PID/maps.
func vdsoSize(tid int, base uint64) (uint64, error) {
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", tid))
	if err != nil {
		return 0, fmt.Errorf("read maps: %w", err)
	}
	for _, line := range bytes.Split(maps, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) < 6 || f[5] != "[vdso]" {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		l, err1 := strconv.ParseUint(lo, 16, 64)
		h, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil && l == base {
			return h - l, nil
		}
	}
	return 0, fmt.Errorf("no [vdso] mapping at %#x", base)
}

// injectCPUIDFault runs at execve's syscall-exit stop: it saves the
// registers, points the thread at a syscall instruction with
// arch_prctl(ARCH_SET_CPUID, 0) loaded, and restores them once that
// syscall has run.
func (t *Tracer) injectCPUIDFault(tid int, regs *unix.PtraceRegs, syscallInsn uint64) error {
	saved := *regs
	inj := *regs
	inj.Rip = syscallInsn
	inj.Rax, inj.Orig_rax = unix.SYS_ARCH_PRCTL, unix.SYS_ARCH_PRCTL
	inj.Rdi, inj.Rsi = archSetCPUID, 0
	if err := unix.PtraceSetRegs(tid, &inj); err != nil {
		return ignoreGone(err)
	}
	th := t.thread(tid)
	th.exit = func(tid int, regs *unix.PtraceRegs) error {
		if int64(regs.Rax) != 0 {
			return fmt.Errorf("exec: arm CPUID faulting in pid %d: errno %d", tid, -int64(regs.Rax))
		}
		return ignoreGone(unix.PtraceSetRegs(tid, &saved))
	}
	th.injecting = true
	return nil
}

const archSetCPUID = 0x1012
