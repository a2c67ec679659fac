//go:build linux

package shim

import (
	"fmt"
	"os"
	"path/filepath"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The container's init reads and writes the client's FIFOs itself.
//
// runc's shim puts pipes between the container and the client's FIFOs and
// copies every byte across, 32 KiB at a time, on a goroutine that wakes at
// each one: for a stream filter that is a third of the CPU time spent
// outside the container. This shim opens the FIFOs instead and the agent
// hands them to the exec helper with its go-ahead; the helper puts them on
// fds 0, 1 and 2 before it execs the command (docs/shim.md, "Stdio").
//
// What a process can tell changes in one place: readlink of fds 0-2 names
// the FIFO, not pipe:[inode] (docs/determinism.md). It is not done for a
// terminal (runc's console), for exec'd processes (runc's copy, as
// before), for binary:// or file:// outputs, or in a user namespace, where
// runc's pipes belong to the container's root and a FIFO reopened through
// /proc/self/fd would not.
type directStdio struct {
	paths [3]string  // the request's stdin, stdout and stderr
	given []*os.File // the container's ends, for fds std[0], std[1], ...
	std   []int      // which of 0, 1, 2 each of given becomes
	// keep holds the output FIFOs open for reading, as runc's shim does:
	// a client that goes away leaves the container's writes blocked on a
	// full FIFO, not failing (EPIPE, SIGPIPE).
	keep []int
}

// openDirectStdio opens the FIFOs of r for its init, or returns nil if
// the request's stdio is not all FIFOs (or none).
func openDirectStdio(r *taskAPI.CreateTaskRequest, spec *specs.Spec) (*directStdio, error) {
	if r.Terminal || hasNamespace(spec.Linux.Namespaces, specs.UserNamespace) {
		return nil, nil
	}
	paths := [3]string{r.Stdin, r.Stdout, r.Stderr}
	if paths == [3]string{} {
		return nil, nil
	}
	for _, p := range paths {
		if p == "" {
			continue
		}
		// A URI (binary://, file://, fifo://) or a file: runc's copy.
		st, err := os.Stat(p)
		if !filepath.IsAbs(p) || err != nil || st.Mode()&os.ModeNamedPipe == 0 {
			return nil, nil
		}
	}
	d := &directStdio{paths: paths}
	for i, p := range paths {
		if p == "" {
			continue
		}
		if i > 0 {
			// A reader first, so that opening the writer cannot block.
			keep, err := openFIFO(p, unix.O_RDONLY)
			if err != nil {
				d.close()
				return nil, err
			}
			d.keep = append(d.keep, keep)
		}
		mode := unix.O_WRONLY
		if i == 0 {
			mode = unix.O_RDONLY
		}
		fd, err := openFIFO(p, mode)
		if err == nil {
			err = unix.SetNonblock(fd, false)
		}
		if err != nil {
			d.close()
			return nil, err
		}
		d.given = append(d.given, os.NewFile(uintptr(fd), p))
		d.std = append(d.std, i)
	}
	return d, nil
}

func openFIFO(path string, mode int) (int, error) {
	fd, err := unix.Open(path, mode|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("lockstep: open the FIFO %s: %w", path, err)
	}
	return fd, nil
}

// handedOver closes this process's copies of the container's ends, once
// the agent has its own: the client sees the end of the output when the
// container's processes close theirs.
func (d *directStdio) handedOver() {
	if d == nil {
		return
	}
	for _, f := range d.given {
		f.Close()
	}
	d.given = nil
}

// close closes everything this process holds.
func (d *directStdio) close() {
	if d == nil {
		return
	}
	d.handedOver()
	for _, fd := range d.keep {
		unix.Close(fd)
	}
	d.keep = nil
}
