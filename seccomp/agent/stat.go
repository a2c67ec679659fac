//go:build linux

package agent

import (
	"encoding/binary"
	"syscall"

	"github.com/lockstep-run/lockstep/tracer"
	"golang.org/x/sys/unix"
)

func (a *Agent) registerStat() {
	a.handle(unix.SYS_FSTAT, "fstat", func(r *Req) (int64, error) {
		fd, err := dupTargetFD(r.Tid(), int(int32(r.Arg(0))))
		if err != nil {
			return 0, err
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return 0, err.(syscall.Errno)
		}
		b := make([]byte, 0, 144)
		b, _ = binary.Append(b, binary.LittleEndian, &st)
		tracer.FixStat(b, a.world)
		if err := r.Write(r.Arg(1), b); err != nil {
			if err == errAnswered {
				return 0, err
			}
			return 0, syscall.EFAULT
		}
		return 0, nil
	})
}
