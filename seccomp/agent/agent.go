//go:build linux

package agent

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/lockstep-run/lockstep/seccomp"
	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// Handler answers one notified syscall: a value, or a syscall.Errno the
// caller sees as -errno, or one of the sentinels below. Any other error is
// fatal to the agent.
type Handler func(r *Req) (int64, error)

var (
	// errContinue lets the kernel run the syscall natively.
	errContinue = errors.New("continue")
	// errAnswered means the handler answered already (ADDFD with SEND) or
	// the caller is gone.
	errAnswered = errors.New("answered")
)

type entry struct {
	name     string
	fn       Handler
	blocking bool // served on its own goroutine (sleeps)
}

// Agent serves one listener fd.
type Agent struct {
	fd       int
	world    *virt.World
	handlers map[int32]entry

	mu    sync.Mutex
	fatal error          // guarded by mu: first fatal error
	stuck []int          // guarded by mu: callers left unanswered by a fatal error
	wg    sync.WaitGroup // blocking handlers in flight
	cache dirCache

	serving atomic.Bool // the loop is serving a (non-blocking) notification
}

// New returns an agent answering notifications on listener fd from world.
func New(fd int, world *virt.World) *Agent {
	a := &Agent{fd: fd, world: world, handlers: map[int32]entry{}}
	a.registerTime()
	a.registerIdentity()
	a.registerFiles()
	a.registerStatfs()
	a.registerStat()
	a.registerNet()
	a.registerSendmsg()
	a.registerTimers()
	return a
}

func (a *Agent) handle(nr int, name string, fn Handler) {
	a.handlers[int32(nr)] = entry{name: name, fn: fn}
}

func (a *Agent) handleBlocking(nr int, name string, fn Handler) {
	a.handlers[int32(nr)] = entry{name: name, fn: fn, blocking: true}
}

// Run serves notifications until every process using the filter has
// exited (nil) or the agent cannot go on (an error: kill the tree).
func (a *Agent) Run() error {
	defer a.wg.Wait()
	// One thread receives and answers, so the kernel's synchronous
	// wake-up can hand the CPU straight between it and the caller.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := seccomp.SyncWakeUp(a.fd); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(a.fd), Events: unix.POLLIN}}
	var n seccomp.Notif
	for {
		if err := a.failed(); err != nil {
			return err
		}
		if _, err := unix.Poll(pfd, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("agent: poll listener: %w", err)
		}
		if pfd[0].Revents&unix.POLLIN == 0 {
			if pfd[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
				return a.failed()
			}
			continue
		}
		if err := seccomp.Recv(a.fd, &n); err != nil {
			if err == seccomp.ErrGone {
				continue
			}
			return fmt.Errorf("agent: receive notification: %w", err)
		}
		e, ok := a.handlers[n.Data.Nr]
		if !ok {
			a.fail(fmt.Errorf("agent: syscall %d notified but has no handler: profile and agent disagree", n.Data.Nr))
			a.respond(&seccomp.Resp{ID: n.ID, Error: -int32(unix.ENOSYS)})
			continue
		}
		req := &Req{a: a, Notif: n}
		if e.blocking {
			q := a.world.Quiet()
			q.Sleep(int32(n.Pid))
			a.wg.Add(1)
			go func() { defer a.wg.Done(); defer q.Wake(int32(n.Pid)); a.serve(req, e) }()
			q.Changed()
		} else {
			a.serving.Store(true)
			a.serve(req, e)
			a.serving.Store(false)
		}
	}
}

func (a *Agent) serve(r *Req, e entry) {
	val, err := e.fn(r)
	// No answer while another thread of the caller's process is stopped
	// in a traced syscall; a sleep also not while a notification waits
	// (the agent serves those one at a time). See virt.Quiet.
	q := a.world.Quiet()
	if e.blocking {
		q.WaitIdle(q.Tgid(r.Pid), func() bool { return a.serving.Load() || pending(a.fd) })
	} else {
		q.WaitIdle(q.Tgid(r.Pid), func() bool { return false })
	}
	resp := seccomp.Resp{ID: r.ID, Val: val}
	var errno syscall.Errno
	switch {
	case err == nil:
	case errors.Is(err, errAnswered):
		return
	case errors.Is(err, errContinue):
		resp.Flags = seccomp.FlagContinue
	case errors.As(err, &errno):
		resp.Val, resp.Error = 0, -int32(errno)
	default:
		a.fail(fmt.Errorf("%s: %w", e.name, err))
		if !e.blocking {
			// No answer: the caller waits in its syscall, and Run returns
			// before the next notification. Its owner kills the caller
			// (KillStuck) and the tree before it closes the listener, which
			// would answer ENOSYS: a replay mismatch so never reaches the
			// program's output. (A blocking handler's failure is answered
			// ENOSYS: Run sees it only at the next notification.)
			a.mu.Lock()
			a.stuck = append(a.stuck, int(r.Pid))
			a.mu.Unlock()
			return
		}
		resp.Val, resp.Error = 0, -int32(unix.ENOSYS)
	}
	a.respond(&resp)
}

func (a *Agent) respond(resp *seccomp.Resp) {
	if err := seccomp.Respond(a.fd, resp); err != nil && err != seccomp.ErrGone {
		a.fail(fmt.Errorf("agent: respond: %w", err))
	}
}

func (a *Agent) fail(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fatal == nil {
		a.fatal = err
	}
}

// KillStuck kills the callers a fatal error left unanswered. With SIGKILL
// pending they never return to user space, so the listener may close
// after it. Call it once Run has returned an error.
func (a *Agent) KillStuck() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, tid := range a.stuck {
		unix.Kill(tid, unix.SIGKILL)
	}
}

func (a *Agent) failed() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fatal
}
