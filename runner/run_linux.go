//go:build linux

package runner

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"github.com/lockstep-run/lockstep/ebpf"
	"github.com/lockstep-run/lockstep/seccomp/agent"
	"github.com/lockstep-run/lockstep/tracer"
	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// Options describe one deterministic run.
type Options struct {
	Config virt.Config
	Log    *virt.Log // nil: no record or replay
	Argv   []string
	Env    []string  // the command's environment, KEY=VALUE; its PATH finds Argv[0]
	Stdin  io.Reader // nil: /dev/null
	Stdout io.Writer
	Stderr io.Writer
	// Digests, if not nil, receives the run's I/O, traced with eBPF: the
	// bytes every process writes and reads, by stream (docs/ebpf.md).
	Digests *ebpf.Chains
	// Audit, if not nil, receives the nondeterministic syscalls and files
	// the run touched that the profile does not answer.
	Audit *ebpf.Audit
	// Trace, if not nil, receives every traced event's bytes (with
	// Digests), to show a divergence byte by byte.
	Trace *ebpf.TraceWriter
	// UnorderedWakes leaves out the wake-up watch (ebpf.Wakes): a process
	// that wakes another runs on at once, as natively.
	UnorderedWakes bool
}

// Result is how a run ended.
type Result struct {
	ExitCode int // the command's status, or 128+signal
	Execs    int // execve calls traced
}

// ErrNotRoot is returned when the run cannot have the privileges it needs.
var ErrNotRoot = errors.New("lockstep exec needs root (CAP_SYS_ADMIN for namespaces, CAP_SYS_PTRACE for the tracer): run it as root")

// Run runs o.Argv deterministically and waits for it. An error means the
// run could not be made deterministic (or the replay did not match): the
// process tree has been killed.
func Run(o Options) (Result, error) {
	if len(o.Argv) == 0 {
		return Result{}, errors.New("no command given")
	}
	if os.Geteuid() != 0 {
		return Result{}, ErrNotRoot
	}
	world, err := virt.New(o.Config, o.Log)
	if err != nil {
		return Result{}, err
	}
	// The eBPF tracer (~15 ms: its ring's allocation and the verifier)
	// loads while the run starts; it is needed at the command's first
	// execve.
	var loading *loadingIO
	if o.Digests != nil || o.Audit != nil {
		loading = &loadingIO{done: make(chan struct{})}
		rec := ebpf.NewRecorder(o.Digests, o.Audit, o.Trace)
		go func() {
			defer close(loading.done)
			loading.tr, loading.err = ebpf.Start(ebpf.Record{IO: o.Digests != nil, Audit: o.Audit != nil, Throttle: true}, rec.Add)
		}()
		defer func() {
			if tr, _ := loading.wait(); tr != nil {
				tr.Close()
			}
		}()
	}
	// The wake-up watch (ebpf.Wakes) loads meanwhile too.
	wakes := make(chan *ebpf.Wakes, 1)
	go func() {
		if o.UnorderedWakes {
			wakes <- nil
			return
		}
		w, err := ebpf.WatchWakes(virt.BlockingCalls())
		if err != nil {
			fmt.Fprintf(os.Stderr, "lockstep: %v: processes that wake each other run in the host's order\n", err)
		}
		wakes <- w
	}()
	defer func() {
		if w := <-wakes; w != nil {
			w.Close()
		}
	}()
	// ptrace requests must come from the thread that seized, and
	// Pdeathsig follows the thread that forked.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	stdio, closeChild, waitOutput, err := files(o)
	if err != nil {
		return Result{}, err
	}
	defer waitOutput()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return Result{}, fmt.Errorf("socketpair: %w", err)
	}
	parent, child := fds[0], os.NewFile(uintptr(fds[1]), "lockstep-socket")
	defer unix.Close(parent)
	if err := unix.SetsockoptInt(parent, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return Result{}, err
	}
	init, err := os.StartProcess("/proc/self/exe", append([]string{initArg0, o.Config.Hostname}, o.Argv...), &os.ProcAttr{
		Env:   append([]string{}, o.Env...), // not nil: nil would be lockstep's own
		Files: append(stdio, child),
		Sys: &syscall.SysProcAttr{
			// A cgroup namespace: /proc/self/cgroup shows "/", not the
			// caller's cgroup (a host's session or service).
			Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWCGROUP,
			Pdeathsig:  unix.SIGKILL,
		},
	})
	child.Close()
	if err != nil {
		return Result{}, fmt.Errorf("start %s: %w", o.Argv[0], err)
	}
	closeChild()
	res, err := supervise(world, parent, init.Pid, loading, wakes)
	if loading != nil {
		tr, ioErr := loading.wait()
		if ioErr != nil {
			return res, ioErr // the command was killed at its first execve
		}
		if err == nil {
			err = tr.Drain()
		}
	}
	return res, err
}

// loadingIO is the eBPF tracer while it loads.
type loadingIO struct {
	done chan struct{}
	tr   *ebpf.Tracer
	err  error
}

func (l *loadingIO) wait() (*ebpf.Tracer, error) {
	<-l.done
	return l.tr, l.err
}

// supervise seizes the command, receives its seccomp listener, serves it
// and waits for the tree to end. The tracer's loop runs on this (locked)
// thread from the seize on, because the command traps on rdtsc from then.
// The I/O tracer, if loading, starts recording at the first execve, and its
// back-pressure goes through the tracer (tracer.Throttle).
func supervise(world *virt.World, sock, initPid int, loading *loadingIO, wakes chan *ebpf.Wakes) (Result, error) {
	tr := tracer.New(world)
	tr.OnFirstExec = func() {
		w := <-wakes
		wakes <- w // for Run to close
		if w != nil {
			if err := w.Enable(initPid, initPid); err != nil {
				fmt.Fprintf(os.Stderr, "lockstep: %v: processes that wake each other run in the host's order\n", err)
			} else {
				tr.Wakes = w
			}
		}
		if loading == nil {
			return
		}
		ebpfTracer, err := loading.wait()
		if err == nil {
			err = ebpfTracer.Enable(initPid)
		}
		if err != nil {
			loading.err = err                // Run returns it
			unix.Kill(initPid, unix.SIGKILL) // fail closed: an untraced run cannot be compared
			return
		}
		tr.Throttle = ebpfTracer
	}
	tr.Reap(initPid)
	killTree := func() { tracer.KillNamespace(initPid) }
	pid, err := receivePID(sock)
	if err != nil {
		// Stage 3 failed before it could exec, and said why: its status
		// is init's.
		var ws unix.WaitStatus
		if _, werr := unix.Wait4(initPid, &ws, 0, nil); werr == nil {
			return Result{ExitCode: exitCode(ws)}, nil
		}
		return Result{}, err
	}
	if err := tr.Seize(pid); err != nil {
		killTree()
		tr.Wait()
		return Result{}, err
	}
	stop := forwardSignals(pid)
	defer stop()
	var (
		wg       sync.WaitGroup
		agentErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		agentErr = serveListener(sock, pid, world, killTree)
	}()
	ws, err := tr.Wait()
	if err != nil {
		killTree()
	}
	wg.Wait()
	if agentErr != nil {
		err = agentErr // the cause: what the tracer saw next came of the kill
	}
	if err != nil {
		return Result{}, err
	}
	return Result{ExitCode: exitCode(ws), Execs: tr.Execs}, nil
}

// serveListener finishes the handshake and runs the agent until every
// process using the filter has exited. If the agent fails it kills the
// tree (fail closed), then the callers it left unanswered, before it
// closes the listener: closed first, the kernel would answer a waiting
// caller ENOSYS and it would run on (a replay mismatch reached stdout);
// killed before the tree, its parent could see it die and run on.
func serveListener(sock, pid int, world *virt.World, kill func()) error {
	if _, err := unix.Write(sock, []byte{'S'}); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	fd, err := receiveListener(sock, pid)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	a := agent.New(fd, world)
	done := make(chan error, 1)
	go func() { done <- a.Run() }()
	if _, err := unix.Write(sock, []byte{'G'}); err != nil {
		kill()
		<-done
		return fmt.Errorf("handshake: %w", err)
	}
	err = <-done
	if err != nil {
		kill()
		a.KillStuck()
	}
	return err
}

// receivePID reads stage 3's (host) PID from its credentials.
func receivePID(sock int) (int, error) {
	msgs, err := receive(sock)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		if c, err := unix.ParseUnixCredentials(&m); err == nil && c.Pid > 0 {
			return int(c.Pid), nil
		}
	}
	return 0, errors.New("the command's setup sent no credentials")
}

// receiveListener takes stage 3's (pid's) seccomp listener: stage 3
// writes its number, and this process, its tracer, copies the descriptor
// with pidfd_getfd (a sendmsg with the descriptor would be notified by
// the filter it belongs to).
func receiveListener(sock, pid int) (int, error) {
	var b [5]byte
	n, err := unix.Read(sock, b[:])
	if n != len(b) || b[0] != 'L' {
		return -1, fmt.Errorf("the command's setup sent no seccomp listener (%v)", err)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open of the command: %w", err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, int(binary.NativeEndian.Uint32(b[1:])), 0)
	if err != nil {
		return -1, fmt.Errorf("take the command's seccomp listener (pidfd_getfd): %w", err)
	}
	unix.CloseOnExec(fd)
	return fd, nil
}

func receive(sock int) ([]unix.SocketControlMessage, error) {
	buf, oob := make([]byte, 1), make([]byte, 128)
	n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("the command's setup ended early (%v)", err)
	}
	return unix.ParseSocketControlMessage(oob[:oobn])
}

// forwardSignals passes termination signals on to the command.
func forwardSignals(pid int) (stop func()) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-ch:
				unix.Kill(pid, s.(syscall.Signal))
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}

func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// files returns the command's stdin, stdout and stderr as files, with
// pipes and copying goroutines for readers and writers that are not. After
// the start, closeChild closes this process's copies of the command's
// ends; waitOutput waits until the output copies have drained.
func files(o Options) (out []*os.File, closeChild, waitOutput func(), err error) {
	var childEnds []*os.File
	var wg sync.WaitGroup
	out = make([]*os.File, 3)
	stdin := o.Stdin
	if stdin == nil {
		stdin = eofReader{}
	}
	for i, s := range []any{stdin, o.Stdout, o.Stderr} {
		if f, ok := s.(*os.File); ok {
			out[i] = f
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			return nil, nil, nil, err
		}
		if i == 0 {
			out[i] = r
			childEnds = append(childEnds, r)
			go func() { io.Copy(w, stdin); w.Close() }()
			continue
		}
		out[i] = w
		childEnds = append(childEnds, w)
		dst := s.(io.Writer)
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(dst, r); r.Close() }()
	}
	var once sync.Once
	closeChild = func() {
		once.Do(func() {
			for _, f := range childEnds {
				f.Close()
			}
		})
	}
	return out, closeChild, func() { closeChild(); wg.Wait() }, nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
