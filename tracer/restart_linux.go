//go:build linux

package tracer

import (
	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// Return values by which the kernel restarts a syscall a signal
// interrupted (include/linux/errno.h).
const (
	erestartsys          = 512
	erestartnointr       = 513
	erestartnohand       = 514
	erestartRestartblock = 516
)

// noRestart ends, with EINTR, a sleep a timer's signal interrupted where
// the agent served it (virt.Timers.Interrupted): the seccomp notification
// returns ERESTARTSYS, which the kernel would restart after a handler with
// SA_RESTART, where a native sleep a handler interrupted always fails with
// EINTR. At the signal's delivery stop the return value is still there to
// change.
func (t *Tracer) noRestart(tid int) error {
	ts := t.world.Timers()
	key, ok := ts.Interrupting(int32(tid))
	if !ok {
		return nil
	}
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(tid, &regs); err != nil {
		return ignoreGone(err)
	}
	switch -int64(regs.Rax) {
	case erestartsys, erestartnointr, erestartnohand, erestartRestartblock:
	default:
		return nil
	}
	if regs.Orig_rax != key[0]&^(virt.RestartAsIs|virt.SleptOut) {
		return nil
	}
	ts.Restarted(int32(tid), key) // taken: the sleep ends here
	switch {
	case key[0]&virt.RestartAsIs != 0:
		return nil
	case key[0]&virt.SleptOut != 0:
		regs.Rax = 0
	default:
		regs.Rax = ^uint64(unix.EINTR) + 1 // -EINTR
	}
	return ignoreGone(unix.PtraceSetRegs(tid, &regs))
}
