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
		return r.writeStruct(r.Arg(1), &st, func(b []byte) { tracer.FixStat(b, a.world, r.Tgid()) })
	})
}

// writeStruct answers a syscall that fills a struct: it encodes v as the
// kernel lays it out (little-endian, x86_64), lets fix rewrite the bytes,
// and copies them to the caller's addr.
func (r *Req) writeStruct(addr uint64, v any, fix func([]byte)) (int64, error) {
	b, err := binary.Append(nil, binary.LittleEndian, v)
	if err != nil {
		return 0, err
	}
	fix(b)
	if err := r.Write(addr, b); err != nil {
		if err == errAnswered {
			return 0, err
		}
		return 0, syscall.EFAULT
	}
	return 0, nil
}
