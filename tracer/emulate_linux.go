//go:build linux

package tracer

import (
	"bytes"
	"unsafe"

	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

const siKernel = 0x80 // si_code of a #GP fault (rdtsc or cpuid faulting)

var (
	insnRdtsc  = []byte{0x0f, 0x31}
	insnRdtscp = []byte{0x0f, 0x01, 0xf9}
	insnCpuid  = []byte{0x0f, 0xa2}
)

// emulate handles a SIGSEGV that rdtsc, rdtscp or cpuid raised because
// the tracee runs with PR_TSC_SIGSEGV or CPUID faulting. It reports
// whether it emulated the instruction (the signal is then dropped).
func (t *Tracer) emulate(tid int) (bool, error) {
	var info [sizeofSiginfo]byte
	if err := ptrace(unix.PTRACE_GETSIGINFO, tid, 0, uintptr(unsafe.Pointer(&info[0]))); err != nil {
		return false, ignoreGone(err)
	}
	if int32(le.Uint32(info[8:])) != siKernel {
		return false, nil // a real fault
	}
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(tid, &regs); err != nil {
		return false, ignoreGone(err)
	}
	code, err := readMem(tid, regs.Rip, 3)
	if err != nil {
		return false, nil
	}
	switch {
	case bytes.HasPrefix(code, insnRdtsc), bytes.HasPrefix(code, insnRdtscp):
		tsc, err := t.world.ReadClock(t.tgid(tid), virt.ClockMonotonic)
		if err != nil {
			return false, err
		}
		regs.Rax, regs.Rdx = uint64(tsc)&0xffffffff, uint64(tsc)>>32
		if bytes.HasPrefix(code, insnRdtscp) {
			regs.Rcx = 0 // TSC_AUX: CPU 0, node 0
			regs.Rip += 3
		} else {
			regs.Rip += 2
		}
	case bytes.HasPrefix(code, insnCpuid):
		a, b, c, d := VirtualCPUID(uint32(regs.Rax), uint32(regs.Rcx))
		regs.Rax, regs.Rbx, regs.Rcx, regs.Rdx = uint64(a), uint64(b), uint64(c), uint64(d)
		regs.Rip += 2
	default:
		return false, nil
	}
	return true, ignoreGone(unix.PtraceSetRegs(tid, &regs))
}
