//go:build linux

package agent

import "golang.org/x/sys/unix"

// pending reports whether a notification waits to be received on fd.
func pending(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, 0)
	return err == nil && n > 0 && p[0].Revents&unix.POLLIN != 0
}
