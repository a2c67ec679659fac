//go:build linux

package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// A process's exit is reported (the Wait call, the TaskExit event) only
// once its output has been read out of its stdout and stderr FIFOs.
//
// Why: the containerd client's task.Delete (1.6 and 1.7, and so ctr and
// nerdctl) calls cio's Cancel, which closes the client's end of the FIFOs,
// before it waits for its copy of the output. A client that deletes the
// task as soon as Wait returns loses whatever output runc's shim has not
// yet copied into the FIFOs, or the client not yet read out of them: up
// to about 160 KiB, with exit status 0, when the host is busy. It happens
// with plain runc shims too; for replicas compared by their output, a lost
// tail is a wrong answer, so this shim holds the exit back instead.
//
// Drained means: runc's copy for the FIFO has ended (it closes its own
// descriptors of the FIFO when the container's pipe reaches end of file)
// and the FIFO is empty (FIONREAD). The wait gives up, with a warning, if
// nothing moves for drainPatience: a client that does not read (ctr run
// -d) or a background process still holding the output pipe does not hold
// the exit back for longer than that.
const drainPatience = 2 * time.Second

// stdio is the FIFO paths of the processes' output, by stdioKey.
type stdio struct {
	mu    sync.Mutex
	paths map[string][]string
}

func stdioKey(containerID, execID string) string { return containerID + "/" + execID }

// add records a process's output paths; those that are not FIFOs (files,
// binary:// loggers, none) need no wait.
func (s *stdio) add(containerID, execID string, paths ...string) {
	var fifos []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		// As /proc/self/fd shows it.
		p, err := filepath.EvalSymlinks(p)
		if st, serr := os.Stat(p); err == nil && serr == nil && st.Mode()&os.ModeNamedPipe != 0 {
			fifos = append(fifos, p)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paths == nil {
		s.paths = map[string][]string{}
	}
	s.paths[stdioKey(containerID, execID)] = fifos
}

// remove forgets a process, or with execID "" the container and all its
// processes.
func (s *stdio) remove(containerID, execID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if execID != "" {
		delete(s.paths, stdioKey(containerID, execID))
		return
	}
	for k := range s.paths {
		if strings.HasPrefix(k, containerID+"/") {
			delete(s.paths, k)
		}
	}
}

// wait returns when the process's output has been drained, or when it
// stops moving for drainPatience.
func (s *stdio) wait(ctx context.Context, containerID, execID string) {
	s.mu.Lock()
	paths := s.paths[stdioKey(containerID, execID)]
	s.mu.Unlock()
	for _, p := range paths {
		if err := waitDrained(ctx, p, drainPatience); err != nil {
			log.G(ctx).WithField("id", containerID).WithField("exec", execID).Warnf("lockstep: reporting the exit before the output is read: %v", err)
		}
	}
}

// waitDrained waits until this process holds the FIFO at path open for
// writing no more (runc's copy has ended) and the FIFO holds no bytes.
func waitDrained(ctx context.Context, path string, patience time.Duration) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil // gone: the client has finished with it
	}
	defer unix.Close(fd)
	lastN, lastW := -1, -1
	deadline := time.Now().Add(patience)
	for pause := 100 * time.Microsecond; ; pause = min(2*pause, 5*time.Millisecond) {
		n, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
		if err != nil {
			return fmt.Errorf("FIONREAD %s: %w", path, err)
		}
		w := writersInSelf(path)
		if n == 0 && w == 0 {
			return nil
		}
		if n != lastN || w != lastW {
			lastN, lastW = n, w
			deadline = time.Now().Add(patience)
		} else if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d bytes unread, %d writers still open, nothing moved for %v", path, n, w, patience)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// writersInSelf counts this process's descriptors that refer to path and
// are open for writing.
func writersInSelf(path string) int {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	count := 0
	for _, name := range names {
		fd := "/proc/self/fd/" + name
		l, err := os.Readlink(fd)
		if err != nil || (l != path && l != path+" (deleted)") {
			continue
		}
		// The link's mode is the descriptor's access mode.
		if st, err := os.Lstat(fd); err == nil && st.Mode().Perm()&0o200 != 0 {
			count++
		}
	}
	return count
}

// drainingPublisher holds a TaskExit event back until the process's
// output is drained, as Wait does; other events pass straight through
// (in order: runc's shim publishes from one goroutine).
type drainingPublisher struct {
	shim.Publisher
	stdio *stdio
}

func (p drainingPublisher) Publish(ctx context.Context, topic string, event events.Event) error {
	if e, ok := event.(*eventstypes.TaskExit); ok {
		execID := e.ID
		if execID == e.ContainerID {
			execID = ""
		}
		p.stdio.wait(ctx, e.ContainerID, execID)
	}
	return p.Publisher.Publish(ctx, topic, event)
}
