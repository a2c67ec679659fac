//go:build linux

package agent

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"

	"github.com/lockstep-run/lockstep/seccomp"
	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

const (
	atFDCWD    = -100
	pathMax    = 4096
	rcvLowat   = 1 << 30 // reads of an entropy stream wait until full
	streamSize = 64 << 10
)

func (a *Agent) registerFiles() {
	a.handle(unix.SYS_OPEN, "open", func(r *Req) (int64, error) {
		return a.open(r, atFDCWD, r.Arg(0), r.Arg(1))
	})
	a.handle(unix.SYS_OPENAT, "openat", func(r *Req) (int64, error) {
		return a.open(r, int32(r.Arg(0)), r.Arg(1), r.Arg(2))
	})
	a.handle(unix.SYS_OPENAT2, "openat2", func(r *Req) (int64, error) {
		how, err := r.Read(r.Arg(2), 8)
		if err != nil {
			return 0, err
		}
		return a.open(r, int32(r.Arg(0)), r.Arg(1), binary.LittleEndian.Uint64(how))
	})
	a.handle(unix.SYS_GETDENTS64, "getdents64", func(r *Req) (int64, error) { return a.getdents(r, dirent64) })
	a.handle(unix.SYS_GETDENTS, "getdents", func(r *Req) (int64, error) { return a.getdents(r, direntOld) })
}

// virtualBase holds the last path element of every path that may be
// served, so that most opens continue without resolving their path.
var virtualBase = map[string]bool{}

func init() {
	for _, p := range virt.Paths() {
		virtualBase[path.Base(p)] = true
	}
	for _, n := range virt.ProcFileNames {
		virtualBase[n] = true
	}
	virtualBase["mtab"] = true
}

// open serves reads of virtual files and entropy devices; every other open
// runs natively (SECCOMP_USER_NOTIF_FLAG_CONTINUE).
func (a *Agent) open(r *Req, dirfd int32, pathAddr, flags uint64) (int64, error) {
	if flags&(unix.O_ACCMODE|unix.O_PATH|unix.O_CREAT|unix.O_DIRECTORY|unix.O_TRUNC) != unix.O_RDONLY {
		return 0, errContinue
	}
	p, err := r.ReadString(pathAddr, pathMax)
	if err != nil {
		return 0, err
	}
	if !virtualBase[path.Base(p)] {
		return 0, errContinue
	}
	abs, err := resolve(r.Tid(), dirfd, p)
	if err != nil {
		return 0, errContinue // let the kernel give the real error
	}
	cloexec := flags&unix.O_CLOEXEC != 0
	if virt.IsEntropyDevice(abs) {
		return a.serveEntropy(r, abs, cloexec)
	}
	if pf, ok := virt.ParseProcFile(abs); ok {
		return a.serveProcFile(r, abs, pf, cloexec)
	}
	if abs == "/etc/mtab" && mtabIsMounts(r.Tid()) {
		return a.serveProcFile(r, abs, virt.ProcFile{PID: "self", Name: "mounts"}, cloexec)
	}
	if !virt.IsVirtual(abs) {
		return 0, errContinue
	}
	if virt.ServedIfPresent(abs) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/root%s", r.Tid(), abs)); err != nil {
			return 0, errContinue
		}
	}
	b, ok, err := a.world.File(r.Tgid(), abs)
	if err != nil || !ok {
		return 0, err
	}
	return a.serveBytes(r, abs, b, cloexec)
}

// serveProcFile serves a process's procfs file (virt.ProcFile: stat,
// status, mountinfo, maps, ...) as the caller's procfs has it, rewritten by
// the world (virt.World.ProcFile). Where the file cannot be read (the
// process is gone) the open runs natively and fails as it would; a file
// the world cannot parse stops the agent, as any answer it cannot make.
func (a *Agent) serveProcFile(r *Req, abs string, pf virt.ProcFile, cloexec bool) (int64, error) {
	pid, task := pf.PID, ""
	if pf.TID != "" {
		task = "/task/" + pf.TID
	}
	self := strconv.Itoa(int(virt.NSPid(r.Tgid())))
	switch pf.PID {
	case "self":
		pid = self
	case "thread-self":
		pid, task = self, "/task/"+strconv.Itoa(int(virt.NSPid(int32(r.Tid()))))
	}
	nspid, err := strconv.Atoi(pid)
	if err != nil || nspid == 0 {
		return 0, errContinue
	}
	var host int32 // the caller's host TGID where it reads its own file
	if pid == self {
		host = r.Tgid()
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/proc/%s%s/%s", r.Tid(), pid, task, pf.Name))
	if err != nil {
		return 0, errContinue
	}
	out, err := a.world.ProcFile(pf.Name, int32(nspid), host, b)
	if err != nil {
		return 0, err
	}
	return a.serveBytes(r, abs, out, cloexec)
}

// mtabIsMounts reports whether /etc/mtab in the caller's root is the usual
// link to /proc/self/mounts.
func mtabIsMounts(tid int) bool {
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/root/etc/mtab", tid))
	return err == nil && (path.Clean(l) == "/proc/self/mounts" || path.Clean(l) == "../proc/self/mounts" || path.Clean(l) == "/proc/mounts")
}

// resolve turns a path as the caller named it into an absolute path in
// the caller's root.
func resolve(tid int, dirfd int32, p string) (string, error) {
	if strings.HasPrefix(p, "/") {
		return path.Clean(p), nil
	}
	link := fmt.Sprintf("/proc/%d/cwd", tid)
	if dirfd != atFDCWD {
		link = fmt.Sprintf("/proc/%d/fd/%d", tid, dirfd)
	}
	dir, err := os.Readlink(link)
	if err != nil {
		return "", err
	}
	root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", tid))
	if err != nil {
		return "", err
	}
	if root != "/" {
		dir = strings.TrimPrefix(dir, root)
	}
	return path.Join("/", dir, p), nil
}

// serveBytes installs a read-only file holding b as the open's result.
func (a *Agent) serveBytes(r *Req, name string, b []byte, cloexec bool) (int64, error) {
	mfd, err := unix.MemfdCreate("lockstep:"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return 0, fmt.Errorf("memfd: %w", err)
	}
	defer unix.Close(mfd)
	if _, err := unix.Write(mfd, b); err != nil {
		return 0, fmt.Errorf("memfd write: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(mfd), unix.F_ADD_SEALS, seals); err != nil {
		return 0, fmt.Errorf("memfd seal: %w", err)
	}
	ro, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", mfd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("reopen memfd: %w", err)
	}
	defer unix.Close(ro)
	return a.install(r, ro, cloexec)
}

// serveEntropy installs one end of a socket pair fed with a seeded stream.
// SO_RCVLOWAT makes each read wait until it is full, as reads of
// /dev/urandom are.
func (a *Agent) serveEntropy(r *Req, dev string, cloexec bool) (int64, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socketpair: %w", err)
	}
	defer unix.Close(fds[1])
	if err := unix.SetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_RCVLOWAT, rcvLowat); err != nil {
		unix.Close(fds[0])
		return 0, fmt.Errorf("entropy stream: %w", err)
	}
	unix.Shutdown(fds[0], unix.SHUT_RD)
	src, err := a.world.OpenEntropy(r.Tgid(), dev)
	if err != nil {
		unix.Close(fds[0])
		return 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fds[1], &st); err != nil {
		unix.Close(fds[0])
		return 0, fmt.Errorf("entropy stream: %w", err)
	}
	q := a.world.Quiet()
	q.Feed(st.Ino) // before the program can read it
	fd, err := a.install(r, fds[1], cloexec)
	if err != errAnswered || fd < 0 {
		q.Unfeed(st.Ino)
		unix.Close(fds[0])
		return 0, err
	}
	go func() {
		feed(fds[0], src)
		q.Unfeed(st.Ino)
	}()
	return fd, errAnswered
}

// feed writes src to fd until the reader closes its end.
func feed(fd int, src io.Reader) {
	defer unix.Close(fd)
	buf := make([]byte, streamSize)
	for {
		io.ReadFull(src, buf)
		for b := buf; len(b) > 0; {
			n, err := unix.Write(fd, b)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return
			}
			b = b[n:]
		}
	}
}

// install sends fd to the caller as its syscall's result.
func (a *Agent) install(r *Req, fd int, cloexec bool) (int64, error) {
	n, err := seccompAddFD(a.fd, r.ID, fd, cloexec)
	if err == errAnswered {
		return -1, err // the caller is gone
	}
	if err != nil {
		return 0, syscall.EMFILE
	}
	return int64(n), errAnswered
}

func seccompAddFD(listener int, id uint64, fd int, cloexec bool) (int, error) {
	n, err := seccomp.AddFDSend(listener, id, fd, cloexec)
	if err == seccomp.ErrGone {
		return 0, errAnswered
	}
	return n, err
}
