package virt

import (
	"os"
	"strconv"
	"sync"
	"syscall"
)

// The files of /proc/TGID/task/TID that Quiet reads on every look at a
// run, kept open: a pread at offset 0 makes the kernel write them afresh,
// at a quarter of the cost of an open, read and close (stat: 0.9 against
// 4.3 µs here), and a look at a Go service reads some 30 of them.
const (
	taskStat = iota
	taskStack
	taskSyscall
	taskSchedstat
	taskFileKinds
)

var taskFileNames = [taskFileKinds]string{"stat", "stack", "syscall", "schedstat"}

// taskFiles are one thread's open files (-1: not opened yet).
type taskFiles struct {
	task string // /proc/TGID/task/TID
	fd   [taskFileKinds]int
}

// procCache holds the open files of the threads Quiet looks at, by
// thread ID. A thread that exits is dropped when its tracer says so
// (Quiet.Forget) or when a read of its files fails (its ID may have been
// given to another thread by then: the files are opened again).
type procCache struct {
	mu    sync.Mutex
	tasks map[int]*taskFiles
	dirs  map[int]int // process ID -> its open /proc/TGID/task/
}

// list returns the names in dir, process tgid's /proc/TGID/task/, read
// afresh from its start on a directory kept open (none if the process is
// gone).
func (c *procCache) list(dir string, tgid int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dirs == nil {
		c.dirs = map[int]int{}
	}
	fd, ok := c.dirs[tgid]
	if !ok {
		var err error
		if fd, err = syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0); err != nil {
			return nil
		}
		c.dirs[tgid] = fd
	}
	var names []string
	var buf [4096]byte
	_, err := syscall.Seek(fd, 0, 0)
	for err == nil {
		var n int
		if n, err = syscall.ReadDirent(fd, buf[:]); n <= 0 {
			break
		}
		_, _, names = syscall.ParseDirent(buf[:n], -1, names)
	}
	if err != nil || len(names) == 0 { // gone: its ID may be given again
		syscall.Close(fd)
		delete(c.dirs, tgid)
		return nil
	}
	return names
}

// read reads file which of thread tid, whose /proc/TGID/task/TID is task,
// into buf.
func (c *procCache) read(task string, tid, which int, buf []byte) ([]byte, error) {
	c.mu.Lock()
	if c.tasks == nil {
		c.tasks = map[int]*taskFiles{}
	}
	t := c.tasks[tid]
	if t != nil && t.task != task {
		t.close()
		t = nil
	}
	if t == nil {
		t = &taskFiles{task: task, fd: [taskFileKinds]int{-1, -1, -1, -1}}
		c.tasks[tid] = t
	}
	fd := t.fd[which]
	if fd < 0 {
		var err error
		fd, err = syscall.Open(task+"/"+taskFileNames[which], syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
		t.fd[which] = fd
	}
	// The lock is held across the read (a microsecond): a file closed
	// meanwhile could have its number given to another.
	n, err := syscall.Pread(fd, buf, 0)
	if err != nil {
		t.close()
		delete(c.tasks, tid)
	}
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// forget closes the files of thread tid (those of t only, if t is not
// nil: another look may have opened new ones).
func (c *procCache) forget(tid int, t *taskFiles) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fd, ok := c.dirs[tid]; ok && t == nil { // a process's first thread
		syscall.Close(fd)
		delete(c.dirs, tid)
	}
	if cur := c.tasks[tid]; cur != nil && (t == nil || cur == t) {
		cur.close()
		delete(c.tasks, tid)
	}
}

func (t *taskFiles) close() {
	for i, fd := range t.fd {
		if fd >= 0 {
			syscall.Close(fd)
			t.fd[i] = -1
		}
	}
}

// taskFile reads file which of thread name (a TID, as /proc lists it) in
// dir (/proc/TGID/task/) into buf, from the open files if it can.
func (q *Quiet) taskFile(dir, name string, which int, buf []byte) ([]byte, error) {
	tid, err := strconv.Atoi(name)
	if err != nil {
		return nil, os.ErrNotExist
	}
	return q.files.read(dir+name, tid, which, buf)
}
