//go:build linux

package seccomp

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Data is struct seccomp_data: the syscall as the filter saw it.
type Data struct {
	Nr   int32
	Arch uint32
	IP   uint64
	Args [6]uint64
}

// Notif is struct seccomp_notif. Pid is the thread ID of the caller in the
// listener's PID namespace.
type Notif struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Data  Data
}

// Resp is struct seccomp_notif_resp.
type Resp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

type notifAddFD struct {
	ID         uint64
	Flags      uint32
	SrcFD      uint32
	NewFD      uint32
	NewFDFlags uint32
}

// FlagContinue lets the kernel run the syscall as if it were allowed.
const FlagContinue = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE

// ErrGone reports a notification whose caller is gone or was interrupted.
var ErrGone = errors.New("seccomp: notification no longer valid")

func ioctl(fd int, req uint, arg unsafe.Pointer) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		case unix.ENOENT:
			return ErrGone
		}
		return e
	}
}

// Recv waits for the next notification on listener fd.
func Recv(fd int, n *Notif) error {
	*n = Notif{}
	return ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n))
}

// Respond answers notification id with val (errno 0) or -errno.
func Respond(fd int, r *Resp) error {
	return ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(r))
}

// IDValid reports whether notification id is still pending: call it after
// reading the caller's memory and before any side effect.
func IDValid(fd int, id uint64) error {
	return ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id))
}

// AddFDSend installs src in the caller as its syscall's result (the new fd
// number), atomically answering notification id.
//
// The ioctl marks the notification answered, then waits for the caller to
// take the fd. A signal in that wait (a SIGCHLD, the Go runtime's own)
// makes the kernel drop the fd but leave the answer: restarted, the ioctl
// fails EINPROGRESS, and the caller's syscall returns 0 with no fd. So the
// calling thread blocks every signal for the ioctl's length.
func AddFDSend(fd int, id uint64, src int, cloexec bool) (int, error) {
	a := notifAddFD{ID: id, Flags: unix.SECCOMP_ADDFD_FLAG_SEND, SrcFD: uint32(src)}
	if cloexec {
		a.NewFDFlags = unix.O_CLOEXEC
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	all := unix.Sigset_t{}
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	var old unix.Sigset_t
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &all, &old); err != nil {
		return -1, fmt.Errorf("seccomp addfd: block signals: %w", err)
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_ADDFD, uintptr(unsafe.Pointer(&a)))
	switch e {
	case 0:
		return int(r), nil
	case unix.ENOENT, unix.ESRCH: // gone before, or interrupted while it waited
		return -1, ErrGone
	}
	return -1, fmt.Errorf("seccomp addfd: %w", e)
}

// Install loads rules as a seccomp filter on the calling thread (which
// must stay locked to its goroutine) and returns the listener fd. It sets
// no_new_privs first.
func Install(rules []Rule) (int, error) {
	raw, err := Assemble(rules)
	if err != nil {
		return -1, err
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return -1, fmt.Errorf("set no_new_privs: %w", err)
	}
	fd, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, uintptr(unsafe.Pointer(&prog)))
	if e != 0 {
		return -1, fmt.Errorf("install seccomp filter: %w", e)
	}
	return int(fd), nil
}

// SyncWakeUp asks the kernel to wake the agent and the caller on the same
// CPU (Linux 6.6+), which takes a cross-CPU wakeup off every answer.
func SyncWakeUp(fd int) error {
	var flags uint64 = unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_SET_FLAGS, uintptr(flags))
	if e != 0 {
		return fmt.Errorf("seccomp: sync wake-up: %w", e)
	}
	return nil
}
