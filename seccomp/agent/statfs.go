//go:build linux

package agent

import (
	"fmt"
	"strings"
	"syscall"

	"github.com/lockstep-run/lockstep/virt"

	"golang.org/x/sys/unix"
)

func (a *Agent) registerStatfs() {
	a.handle(unix.SYS_FSTATFS, "fstatfs", func(r *Req) (int64, error) {
		fd, err := dupTargetFD(r.Tid(), int(int32(r.Arg(0))))
		if err != nil {
			return 0, err
		}
		defer unix.Close(fd)
		return r.answerStatfs(fd, r.Arg(1))
	})
	a.handle(unix.SYS_STATFS, "statfs", func(r *Req) (int64, error) {
		p, err := r.ReadString(r.Arg(0), pathMax)
		if err != nil {
			return 0, err
		}
		if p == "" {
			return 0, syscall.ENOENT // as the kernel: statfs has no AT_EMPTY_PATH
		}
		fd, err := openInRoot(r.Tid(), r.Tgid(), p)
		if err != nil {
			return 0, err
		}
		defer unix.Close(fd)
		return r.answerStatfs(fd, r.Arg(1))
	})
}

// openInRoot opens path p of thread tid (relative to its working
// directory) as an O_PATH fd, resolving it inside the thread's root.
func openInRoot(tid int, tgid int32, p string) (int, error) {
	abs, err := resolve(tid, atFDCWD, p)
	if err != nil {
		return -1, errAnswered // the caller is gone
	}
	abs = procSelf(tid, tgid, abs)
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", tid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, errAnswered
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, abs, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
	if err != nil {
		return -1, err.(syscall.Errno)
	}
	return fd, nil
}

// procSelf rewrites /proc/self and /proc/thread-self in abs to the
// caller's own PIDs in its namespace: in the caller's root they are magic
// links that would resolve to the agent, which has no PID there.
func procSelf(tid int, tgid int32, abs string) string {
	for _, self := range []string{"/proc/self", "/proc/thread-self"} {
		rest, ok := strings.CutPrefix(abs, self)
		if !ok || (rest != "" && rest[0] != '/') {
			continue
		}
		pid := virt.NSPid(tgid)
		if self == "/proc/self" {
			return fmt.Sprintf("/proc/%d%s", pid, rest)
		}
		return fmt.Sprintf("/proc/%d/task/%d%s", pid, virt.NSPid(int32(tid)), rest)
	}
	return abs
}

// answerStatfs writes fd's struct statfs, with fixed sizes, to addr.
func (r *Req) answerStatfs(fd int, addr uint64) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return 0, err.(syscall.Errno)
	}
	FixStatfs(&st)
	return r.writeStruct(addr, &st, func([]byte) {})
}

const blockSize = 4096

// FixStatfs reports a fixed-size, half-empty filesystem of the same type
// and flags: 64 GiB of 4 KiB blocks.
func FixStatfs(st *unix.Statfs_t) {
	st.Bsize, st.Frsize = blockSize, blockSize
	st.Blocks, st.Bfree, st.Bavail = 1<<24, 1<<23, 1<<23
	st.Files, st.Ffree = 1<<22, 1<<21
	st.Fsid = unix.Fsid{}
}
