//go:build linux

package agent

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"syscall"

	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// A directory is listed in name order, so that the order does not depend
// on the host filesystem's hash seed. The caller's file position holds the
// index of the next entry; it is the d_off cookie too, so telldir, seekdir
// and rewinddir keep working.

type dirent struct {
	ino  uint64 // host inode number
	typ  uint8
	name string
}

type direntFormat int

const (
	dirent64  direntFormat = iota // struct linux_dirent64
	direntOld                     // struct linux_dirent
)

func (f direntFormat) reclen(name string) int {
	n := 8 + 8 + 2 + 1 + len(name) + 1 // ino, off, reclen, type, name, NUL
	return (n + 7) &^ 7
}

// put encodes e at b (which holds reclen bytes).
func (f direntFormat) put(b []byte, ino uint64, off int64, typ uint8, name string) {
	le := binary.LittleEndian
	le.PutUint64(b, ino)
	le.PutUint64(b[8:], uint64(off))
	le.PutUint16(b[16:], uint16(len(b)))
	if f == dirent64 {
		b[18] = typ
		copy(b[19:], name)
	} else {
		copy(b[18:], name)
		b[len(b)-1] = typ
	}
}

type dirKey struct{ dev, ino uint64 }

// dirCache keeps the sorted listings of directories being read.
type dirCache struct {
	mu   sync.Mutex
	dirs map[dirKey][]dirent // guarded by mu
}

const dirCacheMax = 256

func (a *Agent) getdents(r *Req, f direntFormat) (int64, error) {
	fd, err := dupTargetFD(r.Tid(), int(int32(r.Arg(0))))
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, syscall.EBADF
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, syscall.ENOTDIR
	}
	count := int(uint32(r.Arg(2))) // as the kernel: an unsigned int, at most INT_MAX
	if count > math.MaxInt32 {
		return 0, syscall.EINVAL
	}
	pos, err := unix.Seek(fd, 0, 1)
	if err != nil {
		return 0, syscall.EINVAL
	}
	key := dirKey{st.Dev, st.Ino}
	ents, err := a.cache.listing(fd, key, pos == 0, a.world)
	if err != nil {
		return 0, err
	}
	out := make([]byte, 0, min(count, 1<<16))
	i := int(pos)
	for ; i < len(ents); i++ {
		e := ents[i]
		n := f.reclen(e.name)
		if len(out)+n > count {
			break
		}
		rec := make([]byte, n)
		f.put(rec, a.world.Ino(st.Dev, e.ino), int64(i+1), e.typ, e.name)
		out = append(out, rec...)
	}
	if len(out) == 0 && i < len(ents) {
		return 0, syscall.EINVAL // buffer too small for one entry
	}
	if err := r.Write(r.Arg(1), out); err != nil {
		return 0, err
	}
	if _, err := unix.Seek(fd, int64(i), 0); err != nil {
		return 0, fmt.Errorf("getdents: keep position: %w", err)
	}
	return int64(len(out)), nil
}

// listing returns the sorted entries of the directory open at fd, read
// afresh when fresh is set or when not cached. A sysfs listing loses the
// CPUs and nodes the world does not have (virt.World.SysfsHidden).
func (c *dirCache) listing(fd int, key dirKey, fresh bool, w *virt.World) ([]dirent, error) {
	c.mu.Lock()
	ents, ok := c.dirs[key]
	c.mu.Unlock()
	if ok && !fresh {
		return ents, nil
	}
	ents, err := readDir(fd)
	if err != nil {
		return nil, err
	}
	var sfs unix.Statfs_t
	if unix.Fstatfs(fd, &sfs) == nil && sfs.Type == unix.SYSFS_MAGIC {
		names := map[string]bool{}
		for _, e := range ents {
			names[e.name] = true
		}
		hidden := w.SysfsHidden(names)
		ents = slices.DeleteFunc(ents, func(e dirent) bool { return hidden(e.name) })
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dirs == nil || len(c.dirs) >= dirCacheMax {
		c.dirs = map[dirKey][]dirent{}
	}
	c.dirs[key] = ents
	return ents, nil
}

// readDir lists a directory through a new open file description, leaving
// the caller's position alone.
func readDir(fd int) ([]dirent, error) {
	d, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, syscall.EBADF
	}
	defer unix.Close(d)
	var ents []dirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(d, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err.(syscall.Errno)
		}
		if n == 0 {
			break
		}
		for b := buf[:n]; len(b) > 0; {
			reclen := int(binary.LittleEndian.Uint16(b[16:]))
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			ents = append(ents, dirent{ino: binary.LittleEndian.Uint64(b), typ: b[18], name: string(name)})
			b = b[reclen:]
		}
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
	return ents, nil
}

// pidfdThread is PIDFD_THREAD (Linux 6.9): a pidfd for one thread.
const pidfdThread = unix.O_EXCL

// dupTargetFD duplicates fd of thread tid into the agent; the copy shares
// the caller's open file description (and so its position).
func dupTargetFD(tid, fd int) (int, error) {
	pidfd, err := unix.PidfdOpen(tid, pidfdThread)
	if err != nil {
		return -1, errAnswered // the caller is gone
	}
	defer unix.Close(pidfd)
	d, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return -1, syscall.EBADF
	}
	return d, nil
}
