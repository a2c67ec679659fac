package virt

import (
	"os"

	"golang.org/x/sys/unix"
)

// pipeFull reports whether a write to the pipe f would block.
func pipeFull(f *os.File) bool {
	fd := int(f.Fd())
	size, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return true
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
	return err != nil || n >= size-pageSize
}

const pageSize = 4096
