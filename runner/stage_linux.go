//go:build linux

package runner

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"unsafe"

	"github.com/lockstep-run/lockstep/seccomp"
	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

const (
	initArg0 = "lockstep-init"
	execArg0 = "lockstep-exec"
	// The socket between stage 1 and stage 3 is fd 3 in stages 2 and 3.
	socketFD = 3
	// Exit statuses of stage 3 when it cannot start the command (as
	// shells and `docker run` use them).
	exitCannotRun = 126
	exitNotFound  = 127
	exitRuntime   = 125
)

func init() {
	if len(os.Args) > 0 && os.Args[0] == execArg0 {
		// The seccomp filter is installed on this thread and this thread
		// execs: keep the main goroutine on it.
		runtime.LockOSThread()
	}
}

// MaybeRunStage runs stage 2 or 3 if this process is one, and then exits.
func MaybeRunStage() {
	if len(os.Args) == 0 {
		return
	}
	switch os.Args[0] {
	case initArg0:
		os.Exit(stageInit(os.Args[1:]))
	case execArg0:
		os.Exit(stageExec(os.Args[1:]))
	}
}

func fail(code int, format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "lockstep: "+format+"\n", args...)
	return code
}

// stageInit is PID 1 of the run's namespaces. args: hostname, command...
func stageInit(args []string) int {
	if len(args) < 2 {
		return fail(exitRuntime, "init: no command")
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail(exitRuntime, "init: make mounts private: %v", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fail(exitRuntime, "init: mount /proc: %v", err)
	}
	if err := unix.Sethostname([]byte(args[0])); err != nil {
		return fail(exitRuntime, "init: set hostname: %v", err)
	}
	// One P, held for good by the raw wait4 below: this process starts no
	// thread while the command runs, so it takes none of the command's PIDs.
	runtime.GOMAXPROCS(1)
	pid, err := startExec(args[1:])
	if err != nil {
		return fail(exitRuntime, "init: %v", err)
	}
	// Reap everything; exit with the command's status. Exiting kills
	// whatever else is left in the namespace.
	for {
		var ws unix.WaitStatus
		got, _, e := unix.RawSyscall6(unix.SYS_WAIT4, ^uintptr(0), uintptr(unsafe.Pointer(&ws)), 0, 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return fail(exitRuntime, "init: wait: %v", e)
		}
		if int(got) != pid {
			continue
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// PIDs in the run's namespace: the command is commandPID, and the first
// process it starts is firstChildPID, whatever threads the Go stages made.
const (
	commandPID    = 10
	firstChildPID = 100
	pidAttempts   = 5
)

// startExec starts stage 3 as commandPID.
func startExec(args []string) (int, error) {
	sock := os.NewFile(socketFD, "lockstep-socket")
	defer sock.Close()
	for i := 0; i < pidAttempts; i++ {
		if err := setLastPID(commandPID - 1); err != nil {
			return 0, err
		}
		p, err := os.StartProcess("/proc/self/exe", append([]string{execArg0}, args...), &os.ProcAttr{
			Files: []*os.File{os.Stdin, os.Stdout, os.Stderr, sock},
		})
		if err != nil {
			return 0, fmt.Errorf("start: %w", err)
		}
		if p.Pid == commandPID {
			return p.Pid, nil
		}
		p.Kill() // a runtime thread took the PID: try again
		p.Wait()
	}
	return 0, fmt.Errorf("could not start the command as PID %d", commandPID)
}

// setLastPID makes pid+1 the next PID this namespace hands out.
func setLastPID(pid int) error {
	if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(fmt.Sprint(pid)), 0); err != nil {
		return fmt.Errorf("set ns_last_pid: %w", err)
	}
	return nil
}

// stageExec prepares this thread and execs the command. args: command...
func stageExec(args []string) int {
	path, err := exec.LookPath(args[0])
	if err != nil {
		code := exitNotFound
		if !errors.Is(err, exec.ErrNotFound) && !errors.Is(err, os.ErrNotExist) {
			code = exitCannotRun
		}
		return fail(code, "%s: %v", args[0], unwrapExecError(err))
	}
	if err := noASLR(); err != nil {
		return fail(exitRuntime, "turn ASLR off: %v", err)
	}
	if err := setRlimits(); err != nil {
		return fail(exitRuntime, "%v", err)
	}
	// The file mode mask and the nice value are the world's too, as in a
	// runc container: the caller's would show in the modes of the files
	// the command makes, and in nice and getpriority.
	unix.Umask(0o022)
	if err := unix.Setpriority(unix.PRIO_PROCESS, 0, 0); err != nil {
		return fail(exitRuntime, "set the nice value to 0: %v", err)
	}
	// Handshake with stage 1 (see docs/exec.md): send our PID, wait to
	// be seized, arm rdtsc trapping (the tracer now emulates it), install
	// the filter, send its listener, wait for the agent, exec.
	creds := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())})
	if err := unix.Sendmsg(socketFD, []byte{'P'}, creds, nil, 0); err != nil {
		return fail(exitRuntime, "send PID: %v", err)
	}
	if err := await('S'); err != nil {
		return fail(exitRuntime, "%v: not starting %s", err, args[0])
	}
	if err := unix.Prctl(unix.PR_SET_TSC, unix.PR_TSC_SIGSEGV, 0, 0, 0); err != nil {
		return fail(exitRuntime, "make rdtsc trap: %v", err)
	}
	listener, err := seccomp.Install(seccomp.Rules())
	if err != nil {
		return fail(exitRuntime, "%v", err)
	}
	// The listener's number, written: the agent takes the descriptor
	// with pidfd_getfd. A sendmsg would be one the filter notifies, with
	// no agent yet to answer it.
	msg := binary.NativeEndian.AppendUint32([]byte{'L'}, uint32(listener))
	if _, err := unix.Write(socketFD, msg); err != nil {
		return fail(exitRuntime, "send seccomp listener: %v", err)
	}
	if err := await('G'); err != nil {
		return fail(exitRuntime, "%v: not starting %s", err, args[0])
	}
	unix.Close(listener)
	lastPID, err := os.OpenFile("/proc/sys/kernel/ns_last_pid", os.O_WRONLY, 0)
	if err != nil {
		return fail(exitRuntime, "set ns_last_pid: %v", err)
	}
	argv0, err := syscall.BytePtrFromString(path)
	if err != nil {
		return fail(exitCannotRun, "exec %s: %v", args[0], err)
	}
	argv, err := syscall.SlicePtrFromStrings(args)
	if err != nil {
		return fail(exitCannotRun, "exec %s: %v", args[0], err)
	}
	envv, err := syscall.SlicePtrFromStrings(os.Environ())
	if err != nil {
		return fail(exitCannotRun, "exec %s: %v", args[0], err)
	}
	last := []byte(fmt.Sprint(firstChildPID - 1))
	defaultSignals()
	// The command gets stdin, stdout and stderr only: whatever else the
	// caller had open (a shell's redirections, a CI runner's pipes) would
	// show in /proc/self/fd and in the first fd the command opens. They
	// are closed at the execve, not now: the Go runtime's own (its epoll
	// fd) must stay open until then.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fail(exitRuntime, "close inherited files: %v", err)
	}
	// The last PID is set right before the execve, both raw calls: a
	// syscall through the runtime may hand this thread's P to a new
	// thread, whose clone would take firstChildPID (the command's first
	// fork was 101 in one CI run in 20).
	if _, _, e := syscall.RawSyscall(syscall.SYS_WRITE, lastPID.Fd(), uintptr(unsafe.Pointer(&last[0])), uintptr(len(last))); e != 0 {
		return fail(exitRuntime, "set ns_last_pid: %v", e)
	}
	runtime.KeepAlive(lastPID)
	_, _, e := syscall.RawSyscall(syscall.SYS_EXECVE, uintptr(unsafe.Pointer(argv0)), uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envv[0])))
	return fail(exitCannotRun, "exec %s: %v", args[0], e)
}

// setRlimits gives the command Lockstep's resource limits (virt.Rlimits).
func setRlimits() error {
	for res, l := range virt.Rlimits {
		err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: l.Cur, Max: l.Max})
		if err == nil {
			continue
		}
		var host syscall.Rlimit
		if errors.Is(err, syscall.EPERM) && syscall.Getrlimit(res, &host) == nil {
			return fmt.Errorf("set %s to %s (hard %s): the hard limit here is %s, and raising it needs CAP_SYS_RESOURCE; "+
				"raise it (ulimit -H, systemd's Limit*) or run lockstep with CAP_SYS_RESOURCE",
				l.Name, virt.FormatLimit(l.Cur), virt.FormatLimit(l.Max), virt.FormatLimit(host.Max))
		}
		return fmt.Errorf("set %s: %v", l.Name, err)
	}
	return nil
}

// defaultSignals gives their default action back to the signals the caller
// ignored, and unblocks those it blocked, which execve would pass on: a
// script's background job ignores SIGINT and SIGQUIT, and Python then
// installs no KeyboardInterrupt handler. Go keeps SIGHUP and SIGINT
// ignored if they were at its start, and the caller's mask on its
// threads. The calling goroutine is locked to its thread, the one that
// execs.
func defaultSignals() {
	runtime.LockOSThread()
	var none uint64
	unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&none)), 0, 8, 0, 0)
	type sigaction struct{ handler, flags, restorer, mask uintptr } // the kernel's, x86_64
	const sigIgn = 1
	for sig := 1; sig <= 64; sig++ {
		var old sigaction
		_, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0)
		if e == 0 && old.handler == sigIgn {
			var dfl sigaction
			unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
		}
	}
}

// await reads one handshake byte from stage 1.
func await(want byte) error {
	var b [1]byte
	n, err := unix.Read(socketFD, b[:])
	if n != 1 || b[0] != want {
		return fmt.Errorf("the tracer is gone (%v)", err)
	}
	return nil
}

func unwrapExecError(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}

const addrNoRandomize = 0x0040000 // ADDR_NO_RANDOMIZE (linux/personality.h)

// noASLR sets ADDR_NO_RANDOMIZE, which execve and fork inherit.
func noASLR() error {
	const query = 0xffffffff
	cur, _, e := unix.RawSyscall(unix.SYS_PERSONALITY, query, 0, 0)
	if e != 0 {
		return e
	}
	if _, _, e := unix.RawSyscall(unix.SYS_PERSONALITY, cur|addrNoRandomize, 0, 0); e != 0 {
		return e
	}
	return nil
}
