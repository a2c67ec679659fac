//go:build linux

package virt

import "syscall"

// Fixed virtual numbers of the kernel's internal filesystems, below the
// first-seen ones (firstDev): what a 6.1 kernel numbers them.
var (
	sockfsDev    = Mkdev(0, 8)
	pipefsDev    = Mkdev(0, 13)
	anonInodeDev = Mkdev(0, 15)
)

// pseudoDevs finds the host device numbers of the pipe, socket and
// anonymous inode filesystems (one each per kernel) by making one of each.
func pseudoDevs() map[uint64]uint64 {
	m := map[uint64]uint64{}
	var st syscall.Stat_t
	var p [2]int
	if syscall.Pipe2(p[:], syscall.O_CLOEXEC) == nil {
		if syscall.Fstat(p[0], &st) == nil {
			m[st.Dev] = pipefsDev
		}
		syscall.Close(p[0])
		syscall.Close(p[1])
	}
	if s, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0); err == nil {
		if syscall.Fstat(s[0], &st) == nil {
			m[st.Dev] = sockfsDev
		}
		syscall.Close(s[0])
		syscall.Close(s[1])
	}
	if fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err == nil {
		if syscall.Fstat(fd, &st) == nil {
			m[st.Dev] = anonInodeDev
		}
		syscall.Close(fd)
	}
	return m
}
