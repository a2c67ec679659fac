//go:build linux

package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/lockstep-run/lockstep/ebpf"
	"github.com/lockstep-run/lockstep/hostcap"
	"github.com/lockstep-run/lockstep/logd/wire"
	"github.com/lockstep-run/lockstep/seccomp/agent"
	"github.com/lockstep-run/lockstep/tracer"
	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// AgentArg0 is argv[0] of a container's agent process: the shim binary
// re-executed. main calls MaybeRunAgent first.
const AgentArg0 = "lockstep-agent"

// The agent's listening sockets, made by the shim before runc runs.
const (
	seccompListenerFD = 3
	execListenerFD    = 4
	stdioFD           = 5 // and on: the init's stdio FIFOs, agentConfig.Stdio
)

// agentConfig is the agent process's one argument, as JSON.
type agentConfig struct {
	ID       string
	Settings Settings
	Stderr   string // the container's stderr (a fifo or file), for the reason it was killed
	Helper   string // lockstep-shim-exec on the host
	// Stdio lists which of fds 0, 1, 2 the init gets from the FIFOs the
	// shim opened (stdio_linux.go), passed at stdioFD, stdioFD+1, ...
	Stdio []int `json:",omitempty"`
	// Created is when the shim was asked to create the container: file
	// times from then on (the mounts runc makes, such as /proc's) are the
	// run's, not the image's, whenever the agent starts (virt.World.Began).
	Created time.Time
}

// First PIDs: the init's first child is firstChildPID, the n-th exec'd
// process's first child is n*execPIDStride + firstChildPID.
const (
	firstChildPID = 100
	execPIDStride = 1000
)

// MaybeRunAgent runs the agent if this process is one, and then exits.
func MaybeRunAgent() {
	if len(os.Args) == 2 && os.Args[0] == AgentArg0 {
		os.Exit(runAgent(os.Args[1]))
	}
}

// containerAgent serves one container: a notify agent per seccomp
// listener runc sends (init and every exec), and a tracer, on its own OS
// thread, per process the exec helper hands over. All share one world.
type containerAgent struct {
	cfg       agentConfig
	world     *virt.World
	log       *virt.Log
	fatal     chan error
	once      sync.Once
	reported  sync.Once // the reason is written once, by the first to fail
	killStuck func()    // set before fatal is sent: the callers a failed agent left waiting

	mu        sync.Mutex
	handovers int        // guarded by mu: processes handed over so far
	nsPid     int        // guarded by mu: the first one, in the container's PID namespace
	stdio     []*os.File // the init's stdio, until it is handed over

	// The eBPF tracer, when digests or an audit were asked for.
	io     *ebpf.Tracer
	wakes  *ebpf.Wakes // the wake-up watch, for every process of the container
	chains *ebpf.Chains
	audit  *ebpf.Audit
}

func runAgent(arg string) int {
	var cfg agentConfig
	if err := json.Unmarshal([]byte(arg), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "lockstep agent: bad configuration: %v\n", err)
		return 2
	}
	// Measured before anything is traced: the probes are children, and
	// the tracer reaps every child.
	if _, err := hostcap.Leaks(); err != nil {
		fmt.Fprintf(os.Stderr, "lockstep agent: %v\n", err)
		return 1
	}
	a := &containerAgent{cfg: cfg, fatal: make(chan error, 1)}
	for i := range cfg.Stdio {
		unix.CloseOnExec(stdioFD + i) // not for the helper run by setLastPID
		a.stdio = append(a.stdio, os.NewFile(uintptr(stdioFD+i), "stdio"))
	}
	if err := a.openWorld(); err != nil {
		a.report(err)
		return 1
	}
	if a.cfg.Settings.Input != "" {
		if err := a.startFeed(); err != nil {
			a.report(err)
			return 1
		}
	}
	seccompLn, err := listenerFromFD(seccompListenerFD, "seccomp")
	if err != nil {
		a.report(err)
		return 1
	}
	execLn, err := listenerFromFD(execListenerFD, "exec")
	if err != nil {
		a.report(err)
		return 1
	}
	go a.acceptSeccomp(seccompLn)
	go a.acceptExec(execLn)

	term := make(chan os.Signal, 1)
	signal.Notify(term, unix.SIGTERM, unix.SIGINT)
	select {
	case <-term:
		// The shim is deleting the container: nothing is left to serve.
		if err := a.finishIO(); err != nil {
			a.report(err)
			return 1
		}
		if a.log != nil {
			if err := a.log.Close(); err != nil {
				a.report(err)
				return 1
			}
		}
		return 0
	case err := <-a.fatal:
		// The reason goes to the container's stderr first, while it is
		// read. Then the container's processes die, and only after them
		// the callers the agent left waiting (see runner's serveListener).
		// The shim sees this exit and kills whatever is left.
		a.report(err)
		a.stop()
		if a.killStuck != nil {
			a.killStuck()
		}
		return 1
	}
}

// openWorld makes the container's world, recording to or replaying from
// its log.
func (a *containerAgent) openWorld() error {
	cfg := a.cfg.Settings.Config
	if p := a.cfg.Settings.Log; p != "" {
		if _, err := os.Stat(p); err == nil {
			l, h, err := virt.OpenLog(p)
			if err != nil {
				return err
			}
			if !a.cfg.Settings.EpochSet {
				cfg.Epoch = h.Epoch // the recording's start
			}
			if !h.Config().Equal(cfg) {
				l.Close()
				return fmt.Errorf("the log %s was recorded with other settings (%+v) than this container's (%+v)", p, h.Config(), cfg)
			}
			a.log = l
		} else {
			if !a.cfg.Settings.EpochSet {
				cfg.Epoch = time.Now().UTC() // a record starts at the real time, as exec --log's
			}
			l, err := virt.CreateLog(p, virt.Header{Seed: cfg.Seed, Epoch: cfg.Epoch, CPUs: cfg.CPUs,
				MemBytes: cfg.MemBytes, Hostname: cfg.Hostname, Argv: []string{a.cfg.ID}})
			if err != nil {
				return err
			}
			a.log = l
		}
	}
	w, err := virt.New(cfg, a.log)
	if err != nil {
		return err
	}
	w.Began(a.cfg.Created)
	a.world = w
	return nil
}

func (a *containerAgent) die(err error) { a.dieKilling(err, nil) }

// dieKilling is die, with kill to run once the reason is reported.
func (a *containerAgent) dieKilling(err error, kill func()) {
	a.once.Do(func() {
		a.killStuck = kill
		a.fatal <- err
	})
}

// report says why the container is being killed, in the shim's log and on
// the container's stderr.
func (a *containerAgent) report(err error) {
	a.reported.Do(func() { a.writeReport(err) })
}

func (a *containerAgent) writeReport(err error) {
	msg := fmt.Sprintf("lockstep: container %s: %v; killing it (the runtime fails closed)\n", a.cfg.ID, err)
	os.Stderr.WriteString(msg)
	if a.cfg.Stderr == "" {
		return
	}
	if f, err := os.OpenFile(a.cfg.Stderr, os.O_WRONLY|os.O_APPEND|unix.O_NONBLOCK, 0); err == nil {
		f.WriteString(msg)
		f.Close()
	}
}

func listenerFromFD(fd int, name string) (*net.UnixListener, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("%s listener (fd %d): %w", name, fd, err)
	}
	return ln.(*net.UnixListener), nil
}

// acceptSeccomp takes the listener fds runc sends (runc's listenerPath
// protocol: the JSON container process state with one fd by SCM_RIGHTS).
func (a *containerAgent) acceptSeccomp(ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			a.die(fmt.Errorf("seccomp listener: %w", err))
			return
		}
		fd, err := receiveSeccompFD(c)
		c.Close()
		if err != nil {
			a.die(err)
			return
		}
		go func() {
			ag := agent.New(fd, a.world)
			if err := ag.Run(); err != nil {
				// fd stays open until the agent exits: closed now, it would
				// answer the caller left waiting ENOSYS, and the caller
				// would run on before the reason is reported and it is
				// killed (runAgent).
				a.dieKilling(err, ag.KillStuck)
				return
			}
			unix.Close(fd)
		}()
	}
}

func receiveSeccompFD(c *net.UnixConn) (int, error) {
	buf, oob := make([]byte, 64<<10), make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return -1, fmt.Errorf("receive runc's seccomp listener: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return -1, fmt.Errorf("runc's seccomp message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("runc sent %d seccomp fds, want 1", len(fds))
	}
	// The state JSON follows; it is not needed, and runc exec keeps the
	// connection open while it waits for its process, so read no more
	// than came with the fd. A message that does not start a JSON object
	// means something else is on this socket.
	if !bytes.HasPrefix(bytes.TrimSpace(buf[:n]), []byte("{")) {
		unix.Close(fds[0])
		return -1, errors.New("the seccomp listener got a message that is not runc's container process state")
	}
	unix.SetNonblock(fds[0], false)
	return fds[0], nil
}

// acceptExec seizes each process the exec helper hands over and traces
// its tree on a thread of its own.
func (a *containerAgent) acceptExec(ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			a.die(fmt.Errorf("exec listener: %w", err))
			return
		}
		go a.trace(c)
	}
}

func (a *containerAgent) trace(c *net.UnixConn) {
	defer c.Close()
	pid, err := peerPID(c)
	if err != nil {
		a.report(err)
		return
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'P' {
		return // the helper went away: it starts nothing
	}
	a.mu.Lock()
	n := a.handovers
	a.handovers++
	var stdio []*os.File
	if n == 0 {
		stdio, a.stdio = a.stdio, nil
		a.nsPid = pid
	}
	a.mu.Unlock()
	// Whatever happens, the agent holds the init's stdio no longer: the
	// client sees the end of the output when the container closes it.
	defer func() {
		for _, f := range stdio {
			f.Close()
		}
	}()
	if err := a.setLastPID(pid, n*execPIDStride+firstChildPID-1); err != nil {
		a.report(err)
		return
	}
	if n == 0 {
		if err := a.startIO(pid); err != nil {
			a.die(err)
			return
		}
	}
	// The thread that seizes is the tracer: it stays locked, and ends
	// with this goroutine.
	runtime.LockOSThread()
	tr := tracer.New(a.world)
	tr.RootNumber = uint64(n) + 1 // the handover's order, not the seize's
	tr.OnFail = a.report          // before the tracer kills the tree
	a.mu.Lock()
	io, wakes := a.io, a.wakes // set by the first handover's startIO, before any other
	a.mu.Unlock()
	if io != nil {
		tr.Throttle = io
	}
	if wakes != nil {
		tr.Wakes = wakes
	}
	if n == 0 {
		tr.OnFirstExec = func() {
			if wakes != nil {
				if err := wakes.Enable(pid, 0); err != nil {
					a.die(err)
				}
			}
			if io != nil {
				if err := io.Enable(pid); err != nil {
					a.die(err)
				}
			}
		}
	}
	if err := tr.Seize(pid); err != nil {
		a.report(err) // the helper sees no 'G' and exits 125
		return
	}
	if err := goAhead(c, a.cfg.Stdio, stdio); err != nil {
		tr.KillAll()
	}
	c.Close()
	for _, f := range stdio {
		f.Close()
	}
	stdio = nil
	if _, err := tr.Wait(); err != nil {
		a.die(err)
	}
}

// goAhead tells the helper to exec its command: "G", or, with the init's
// stdio, "G" and a byte whose bit i says that fd i follows (SCM_RIGHTS,
// in the order of std).
func goAhead(c *net.UnixConn, std []int, files []*os.File) error {
	if len(files) == 0 {
		_, err := c.Write([]byte{'G'})
		return err
	}
	var mask byte
	fds := make([]int, len(files))
	for i, f := range files {
		mask |= 1 << std[i]
		fds[i] = int(f.Fd())
	}
	_, _, err := c.WriteMsgUnix([]byte{'G', mask}, unix.UnixRights(fds...), nil)
	return err
}

// peerPID is the connecting process's PID in this (the host's) namespace.
func peerPID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var serr error
	raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if serr != nil {
		return 0, fmt.Errorf("exec helper's credentials: %w", serr)
	}
	return int(cred.Pid), nil
}

// setLastPID sets the last PID handed out in the PID namespace of process
// pid, by running the exec helper inside that namespace from a thread that
// joined it (and is thrown away after).
func (a *containerAgent) setLastPID(pid, last int) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/pid", pid))
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWPID); err != nil {
			errc <- fmt.Errorf("join the container's PID namespace: %w", err)
			return
		}
		out, err := exec.Command(a.cfg.Helper, "--set-last-pid", strconv.Itoa(last)).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("set the container's next PID: %v: %s", err, out)
		}
		errc <- err
	}()
	return <-errc
}

// reportTrace sends the digest chains to logd as the replica's signed
// trace, if the settings name a logd.
func reportTrace(st Settings, cps []ebpf.Checkpoint) error {
	if st.Logd == "" {
		return nil
	}
	key, err := wire.ReadPrivateKey(st.Key)
	if err != nil {
		return fmt.Errorf("the trace's key: %w", err)
	}
	if cps == nil {
		cps = []ebpf.Checkpoint{}
	}
	b, err := json.Marshal(cps)
	if err != nil {
		return err
	}
	leaks, _ := hostcap.Leaks() // measured when the agent started
	t := wire.Trace{Stream: st.Stream, Replica: st.Replica, Checkpoints: b, Leaks: leaks}
	t.Sign(key)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := wire.PostTrace(ctx, st.Logd, t); err != nil {
		return fmt.Errorf("report the trace of replica %s to logd at %s: %w", st.Replica, st.Logd, err)
	}
	return nil
}

// startIO starts the eBPF tracer for the container's PID namespace (that
// of pid, its init) if digests or an audit were asked for. It records from
// the command's first execve on.
func (a *containerAgent) startIO(pid int) error {
	if w, err := ebpf.WatchWakes(virt.BlockingCalls()); err != nil {
		fmt.Fprintf(os.Stderr, "lockstep agent: %v: processes that wake each other run in the host's order\n", err)
	} else {
		a.mu.Lock()
		a.wakes = w
		a.mu.Unlock()
	}
	st := a.cfg.Settings
	if !st.Traced() && st.Audit == "" {
		return nil
	}
	if st.Traced() {
		a.chains = ebpf.NewChains(64 << 10)
	}
	if st.Audit != "" {
		a.audit = ebpf.NewAudit()
	}
	rec := ebpf.NewRecorder(a.chains, a.audit, nil)
	io, err := ebpf.Start(ebpf.Record{IO: a.chains != nil, Audit: a.audit != nil, Throttle: true}, rec.Add)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.io = io
	a.mu.Unlock()
	return nil
}

// finishIO drains the tracer, writes the digests and the audit, and
// reports the digests to logd as the replica's trace.
func (a *containerAgent) finishIO() error {
	if a.io == nil {
		return nil
	}
	defer a.io.Close()
	if err := a.io.Drain(); err != nil {
		return err
	}
	write := func(path string, v any) error {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(path, append(b, '\n'), 0o644)
	}
	if a.chains != nil {
		cps := a.chains.Finish()
		if st := a.cfg.Settings; st.Digests != "" {
			if err := ebpf.WriteCheckpoints(st.Digests, cps); err != nil {
				return err
			}
		}
		if err := reportTrace(a.cfg.Settings, cps); err != nil {
			return err
		}
	}
	if a.audit != nil {
		return write(a.cfg.Settings.Audit, a.audit.Findings())
	}
	return nil
}
