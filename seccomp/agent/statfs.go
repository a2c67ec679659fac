//go:build linux

package agent

import (
	"fmt"
	"syscall"

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
		fd, err := openInRoot(r.Tid(), p)
		if err != nil {
			return 0, err
		}
		defer unix.Close(fd)
		return r.answerStatfs(fd, r.Arg(1))
	})
}

// openInRoot opens path p of thread tid (relative to its working
// directory) as an O_PATH fd, resolving it inside the thread's root.
func openInRoot(tid int, p string) (int, error) {
	abs, err := resolve(tid, atFDCWD, p)
	if err != nil {
		return -1, errAnswered // the caller is gone
	}
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
