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
	base := aux[atSysinfoEhdr]
	patches, err := patchVDSO(tid, mem, base)
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
	if len(patches) == 0 {
		return resume(tid, 0) // no vDSO mapped: every clock read is a syscall already
	}
	// The rest runs syscalls in the new program before its first
	// instruction, from its execve's exit stop.
	if err := t.toSyscallStop(tid); err != nil {
		return err
	}
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(tid, &regs); err != nil {
		return err
	}
	stub := patches[0].Addr + stubSyscallOffset
	if t.cpuidFault {
		// CPUID faulting is cleared by execve: re-arm it.
		if r, err := t.syscallIn(tid, regs, stub, unix.SYS_ARCH_PRCTL, archSetCPUID, 0); err != nil {
			return err
		} else if r != 0 {
			return fmt.Errorf("exec: arm CPUID faulting in pid %d: errno %d", tid, -r)
		}
	}
	cm := clockMap{insn: stub, name: base + elfPadding}
	page, addr, err := t.mapClock(tid, regs, cm, false)
	if err != nil {
		return err
	}
	cm.page = addr
	if cm.insn, err = writeClock(mem, patches, addr); err != nil {
		unix.Munmap(page)
		return fmt.Errorf("exec of %s: %w", exe, err)
	}
	return t.startClock(tid, regs, cm, page, true)
}

// startClock gives process tid its clock page, restores the registers the
// tracer's syscalls started from, and lets the process run.
func (t *Tracer) startClock(tid int, regs unix.PtraceRegs, cm clockMap, page []byte, exec bool) error {
	t.clocks[int32(tid)] = cm
	if err := t.world.AttachClock(int32(tid), page, func() { unix.Munmap(page) }, exec); err != nil {
		return err
	}
	if err := unix.PtraceSetRegs(tid, &regs); err != nil {
		return ignoreGone(err)
	}
	t.redeliver(tid)
	return resume(tid, 0)
}

// elfPadding is the offset of a NUL byte in any ELF image (e_ident's
// padding): the vDSO's serves as memfd_create's empty name.
const elfPadding = 9

// writeClock writes the clock block for a page at addr over the vDSO's
// clock_gettime, and jumps to it over gettimeofday and time. It returns
// the address of a syscall instruction in the block.
func writeClock(mem *os.File, patches []Patch, addr uint64) (uint64, error) {
	block, err := assembleClock(addr)
	if err != nil {
		return 0, err
	}
	at := map[string]Patch{}
	for _, p := range patches {
		at[p.Symbol] = p
	}
	cg := at["__vdso_clock_gettime"]
	if cg.Size != 0 && cg.Size < uint64(len(block.code)) {
		return 0, fmt.Errorf("vdso: clock_gettime has %d bytes, the clock code needs %d", cg.Size, len(block.code))
	}
	writes := []Patch{
		{Addr: cg.Addr, Code: block.code},
		{Addr: at["__vdso_gettimeofday"].Addr, Code: jmpRel32(at["__vdso_gettimeofday"].Addr, cg.Addr+uint64(block.gettimeofday))},
		{Addr: at["__vdso_time"].Addr, Code: jmpRel32(at["__vdso_time"].Addr, cg.Addr+uint64(block.time))},
	}
	for _, w := range writes {
		if _, err := mem.WriteAt(w.Code, int64(w.Addr)); err != nil {
			return 0, fmt.Errorf("write clock code: %w", err)
		}
	}
	return cg.Addr + uint64(block.syscall), nil
}

// firstRun resumes a new thread at its first stop. A new process with
// memory of its own first gets a clock page of its own, at the address of
// the parent's it inherited (whose code reads it there).
func (t *Tracer) firstRun(tid int, th *thread) error {
	parent := th.forkedBy
	th.forkedBy = 0
	cm, ok := t.clocks[parent]
	if !ok {
		return resume(tid, 0)
	}
	if sameMemory(tid, int(parent)) { // clone(CLONE_VM) without CLONE_VFORK
		return resume(tid, 0)
	}
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(tid, &regs); err != nil {
		return ignoreGone(err)
	}
	page, _, err := t.mapClock(tid, regs, cm, true)
	if err == errGone || err != nil && dying(tid) {
		return nil
	}
	if err != nil {
		return err
	}
	return t.startClock(tid, regs, cm, page, false)
}

// sameMemory reports whether processes a and b share their memory.
func sameMemory(a, b int) bool {
	const kcmpVM = 1
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), kcmpVM, 0, 0, 0)
	return e == 0 && r == 0
}

// patchVDSO turns the vDSO at base into syscall stubs and returns the
// patches (none if no vDSO is mapped).
func patchVDSO(tid int, mem *os.File, base uint64) ([]Patch, error) {
	if base == 0 {
		return nil, nil
	}
	size, err := vdsoSize(tid, base)
	if err != nil {
		return nil, err
	}
	img := make([]byte, size)
	if _, err := mem.ReadAt(img, int64(base)); err != nil {
		return nil, fmt.Errorf("read vdso: %w", err)
	}
	patches, err := PlanVDSO(img, base)
	if err != nil {
		return nil, err
	}
	for _, p := range patches {
		if _, err := mem.WriteAt(p.Code, int64(p.Addr)); err != nil {
			return nil, fmt.Errorf("patch %s: %w", p.Symbol, err)
		}
	}
	return patches, nil
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

const archSetCPUID = 0x1012
