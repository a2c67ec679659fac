//go:build linux

package agent

import (
	"bytes"
	"encoding/binary"
	"syscall"

	"github.com/lockstep-run/lockstep/seccomp"
	"golang.org/x/sys/unix"
)

// Req is one notification being served.
type Req struct {
	a *Agent
	seccomp.Notif
}

// Arg returns syscall argument i.
func (r *Req) Arg(i int) uint64 { return r.Data.Args[i] }

// Tid is the calling thread's ID in the agent's PID namespace.
func (r *Req) Tid() int { return int(r.Pid) }

// Tgid is the calling process's ID (its thread group's) in the agent's PID
// namespace.
func (r *Req) Tgid() int32 { return r.a.world.Quiet().Tgid(r.Pid) }

// memErr turns a failed remote access into what the caller should see.
func memErr(err error) error {
	if err == unix.ESRCH {
		return errAnswered // the caller is gone
	}
	return syscall.EFAULT
}

// Read copies n bytes from the caller's memory at addr.
func (r *Req) Read(addr uint64, n int) ([]byte, error) {
	b := make([]byte, n)
	if n == 0 {
		return b, nil
	}
	got, err := unix.ProcessVMReadv(r.Tid(), []unix.Iovec{{Base: &b[0], Len: uint64(n)}},
		[]unix.RemoteIovec{{Base: uintptr(addr), Len: n}}, 0)
	if err != nil || got != n {
		return nil, memErr(err)
	}
	return b, nil
}

// ReadString reads a NUL-terminated string of at most max bytes, a page
// at a time so that it never reads past the string's last mapped page.
func (r *Req) ReadString(addr uint64, max int) (string, error) {
	var out []byte
	for len(out) < max {
		chunk := 4096 - int(addr%4096)
		b, err := r.Read(addr, chunk)
		if err != nil {
			return "", err
		}
		if i := bytes.IndexByte(b, 0); i >= 0 {
			return string(append(out, b[:i]...)), nil
		}
		out = append(out, b...)
		addr += uint64(chunk)
	}
	return "", syscall.ENAMETOOLONG
}

// Valid checks that the notification is still pending: the caller has not
// been interrupted, so what was read from its memory still belongs to it.
func (r *Req) Valid() error {
	if err := seccomp.IDValid(r.a.fd, r.ID); err != nil {
		return errAnswered
	}
	return nil
}

// Write checks the notification is still valid, then copies b into the
// caller's memory at addr.
func (r *Req) Write(addr uint64, b []byte) error {
	if err := r.Valid(); err != nil {
		return err
	}
	if len(b) == 0 {
		return nil
	}
	got, err := unix.ProcessVMWritev(r.Tid(), []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}},
		[]unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}, 0)
	if err != nil || got != len(b) {
		return memErr(err)
	}
	return nil
}

// WritePrefix copies as much of b into the caller's memory at addr as is
// mapped writable there, as the kernel's copies do: it returns how many
// bytes it wrote, EFAULT if none.
func (r *Req) WritePrefix(addr uint64, b []byte) (int, error) {
	if err := r.Valid(); err != nil {
		return 0, err
	}
	n := 0
	for n < len(b) {
		chunk := min(len(b)-n, pageSize-int((addr+uint64(n))%pageSize))
		got, err := unix.ProcessVMWritev(r.Tid(), []unix.Iovec{{Base: &b[n], Len: uint64(chunk)}},
			[]unix.RemoteIovec{{Base: uintptr(addr) + uintptr(n), Len: chunk}}, 0)
		if got > 0 {
			n += got
		}
		if err == unix.ESRCH {
			return 0, errAnswered
		}
		if err != nil || got != chunk {
			break
		}
	}
	if n == 0 && len(b) > 0 {
		return 0, syscall.EFAULT
	}
	return n, nil
}

const pageSize = 4096

// WriteOpt writes b at addr unless addr is NULL.
func (r *Req) WriteOpt(addr uint64, b []byte) error {
	if addr == 0 {
		return nil
	}
	return r.Write(addr, b)
}

// le64 encodes 64-bit little-endian words.
func le64(v ...int64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return b
}

// readTimespec reads and validates a struct timespec.
func (r *Req) readTimespec(addr uint64) (int64, error) {
	b, err := r.Read(addr, 16)
	if err != nil {
		return 0, err
	}
	sec := int64(binary.LittleEndian.Uint64(b))
	nsec := int64(binary.LittleEndian.Uint64(b[8:]))
	if sec < 0 || nsec < 0 || nsec >= 1e9 {
		return 0, syscall.EINVAL
	}
	const maxSec = (1<<63 - 1) / 1_000_000_000
	if sec >= maxSec {
		sec = maxSec - 1 // saturate: a sleep "forever"
	}
	return sec*1e9 + nsec, nil
}
