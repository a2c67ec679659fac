//go:build linux

package hostcap

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// outcome is how a probe program ended.
type outcome struct {
	exit   int            // its exit status, if it exited
	signal syscall.Signal // the signal that killed it, or 0
}

func (o outcome) String() string {
	if o.signal != 0 {
		return "killed by " + unix.SignalName(o.signal)
	}
	return fmt.Sprintf("exit %d", o.exit)
}

// start writes p to a memory file and starts it with attr. The caller
// waits for it.
func start(p program, attr *syscall.SysProcAttr) (*exec.Cmd, error) {
	fd, err := unix.MemfdCreate("lockstep-probe", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "lockstep-probe")
	defer f.Close()
	if _, err := f.Write(p.image()); err != nil {
		return nil, err
	}
	// The kernel opens /proc/self/fd/N before execve closes N: an ELF
	// image runs from a close-on-exec memfd.
	cmd := &exec.Cmd{Path: fmt.Sprintf("/proc/self/fd/%d", fd), Args: []string{"lockstep-probe"}, SysProcAttr: attr}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start a probe program: %w", err)
	}
	return cmd, nil
}

// run runs p to its end.
func run(p program, attr *syscall.SysProcAttr) (outcome, error) {
	cmd, err := start(p, attr)
	if err != nil {
		return outcome{}, err
	}
	err = cmd.Wait()
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) || !ok {
		return outcome{}, fmt.Errorf("wait for a probe program: %v", err)
	}
	if ws.Signaled() {
		return outcome{signal: ws.Signal()}, nil
	}
	return outcome{exit: ws.ExitStatus()}, nil
}

// errnoOf reads a guarded program's failed set-up from its exit status.
func errnoOf(status int) syscall.Errno { return syscall.Errno(256 - status) }

// faults runs p, a guarded program that makes setup and then executes
// insn, and reports whether insn raised SIGSEGV, with what was seen.
func faults(p program, setup, insn string) (bool, string, error) {
	o, err := run(p, nil)
	switch {
	case err != nil:
		return false, "", err
	case o.signal == syscall.SIGSEGV:
		return true, insn + " raised SIGSEGV", nil
	case o.exit == 0:
		return false, setup + " succeeded, yet " + insn + " ran untrapped", nil
	case o.signal == 0:
		return false, fmt.Sprintf("%s: %v", setup, errnoOf(o.exit)), nil
	}
	return false, "the probe was " + o.String(), nil
}

// rdtscTraps runs rdtsc after PR_SET_TSC(PR_TSC_SIGSEGV) in a child.
func rdtscTraps() (bool, string, error) { return faults(progRdtsc, "prctl(PR_SET_TSC)", "rdtsc") }

// cpuidFaults runs cpuid after arch_prctl(ARCH_SET_CPUID, 0) in a child.
func cpuidFaults() (bool, string, error) {
	return faults(progCPUID, "arch_prctl(ARCH_SET_CPUID, 0)", "cpuid")
}

func measureLeaks() ([]string, error) {
	var out []string
	for _, c := range []struct {
		source string
		probe  func() (bool, string, error)
	}{{Rdtsc, rdtscTraps}, {CPUID, cpuidFaults}} {
		ok, _, err := c.probe()
		if err != nil {
			return nil, fmt.Errorf("measure %s: %w", c.source, err)
		}
		if !ok {
			out = append(out, c.source)
		}
	}
	return out, nil
}

// IA32Emulation reports whether int $0x80 reaches the kernel's i386
// syscalls here (without it, the caller gets SIGSEGV).
func IA32Emulation() (bool, error) {
	o, err := run(progInt80, nil)
	return err == nil && o == outcome{}, err
}
