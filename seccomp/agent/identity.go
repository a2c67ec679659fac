//go:build linux

package agent

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	grndAll            = unix.GRND_NONBLOCK | unix.GRND_RANDOM | 0x4 // GRND_INSECURE
	grndRandomInsecure = unix.GRND_RANDOM | 0x4
	maxGetrandom       = 1 << 20 // bytes served per call
	sizeofCPUMask      = 8
	sizeofGetcpuOut    = 4
)

func (a *Agent) registerIdentity() {
	a.handle(unix.SYS_GETRANDOM, "getrandom", a.getrandom)
	a.handle(unix.SYS_UNAME, "uname", func(r *Req) (int64, error) { return 0, r.Write(r.Arg(0), a.world.Uname()) })
	a.handle(unix.SYS_SYSINFO, "sysinfo", func(r *Req) (int64, error) { return 0, r.Write(r.Arg(0), a.world.Sysinfo(r.Tgid())) })
	a.handle(unix.SYS_GETCPU, "getcpu", a.getcpu)
	a.handle(unix.SYS_SCHED_GETAFFINITY, "sched_getaffinity", a.schedGetaffinity)
}

// getrandom serves the seeded stream. Large requests are served in part,
// as the kernel may do; callers loop.
func (a *Agent) getrandom(r *Req) (int64, error) {
	// As the kernel: flags is an unsigned int (the register's upper half
	// is ignored), and GRND_RANDOM with GRND_INSECURE is invalid.
	flags := uint64(uint32(r.Arg(2)))
	if flags&^grndAll != 0 || flags&grndRandomInsecure == grndRandomInsecure {
		return 0, syscall.EINVAL
	}
	n := int(min(r.Arg(1), maxGetrandom))
	b := make([]byte, n)
	if err := r.Valid(); err != nil {
		return 0, err
	}
	if err := a.world.Random(r.Tgid(), b); err != nil {
		return 0, err
	}
	// As the kernel: what fits before an unmapped page is written and
	// counted. The stream has moved by all of b either way.
	w, err := r.WritePrefix(r.Arg(0), b)
	return int64(w), err
}

// getcpu: always CPU 0 on node 0.
func (a *Agent) getcpu(r *Req) (int64, error) {
	zero := make([]byte, sizeofGetcpuOut)
	if err := r.WriteOpt(r.Arg(0), zero); err != nil {
		return 0, err
	}
	return 0, r.WriteOpt(r.Arg(1), zero)
}

func (a *Agent) schedGetaffinity(r *Req) (int64, error) {
	// As the kernel: len is an unsigned int, and its size in bits is
	// computed in an unsigned int (so 2^29 bytes and more wrap around).
	size := uint32(r.Arg(1))
	if size%8 != 0 || size*8 == 0 {
		return 0, syscall.EINVAL
	}
	// As the kernel: pid is an int, 0 is the caller, another must exist
	// in the caller's view of processes.
	if pid := int32(r.Arg(0)); pid < 0 {
		return 0, syscall.ESRCH
	} else if pid > 0 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/proc/%d", r.Tid(), pid)); err != nil {
			return 0, syscall.ESRCH
		}
	}
	return sizeofCPUMask, r.Write(r.Arg(2), a.world.CPUMask())
}
