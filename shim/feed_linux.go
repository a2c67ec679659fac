//go:build linux

package shim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/lockstep-run/lockstep/feed"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// startFeed connects to the provider's feed (io.lockstep.input): the
// container's stdin becomes a pipe the world's timeline writes the
// stream's inputs to, at the points where its clocks reach their times
// (virt.Timeline).
func (a *containerAgent) startFeed() error {
	path := a.cfg.Settings.Input
	i := slices.Index(a.cfg.Stdio, 0)
	if i < 0 {
		return fmt.Errorf("%s: the container's stdin is not a FIFO the shim opened (a terminal, or a user namespace): it cannot follow an input stream", AnnotationInput)
	}
	c, err := net.DialTimeout("unix", path, 10*time.Second)
	if err != nil {
		return fmt.Errorf("%s: the provider's feed: %w", AnnotationInput, err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		c.Close()
		return err
	}
	unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, stdinPipeSize)
	a.stdio[i].Close() // the FIFO: nobody writes to it
	a.stdio[i] = r
	var mu sync.Mutex // one frame at a time on the way back
	send := func(f feed.Frame) {
		mu.Lock()
		defer mu.Unlock()
		feed.Write(c, f)
	}
	to := virt.Stream{Stdin: w, Stop: a.stop}
	// Served connections (a port), and outbound ones (egress) in any run.
	to.Net = a.newServed(a.cfg.Settings.Port, send)
	tl := a.world.NewTimeline(to,
		func(deadline int64) { send(feed.Frame{Kind: feed.Wait, Time: deadline}) },
		func(n int64) { send(feed.Frame{Kind: feed.Consumed, Seq: n}) })
	go func() {
		err := receive(bufio.NewReaderSize(c, 1<<20), tl)
		switch {
		case errors.Is(err, errFeedGone):
			// Nothing will ever come: the run cannot go on as its log
			// says. Its container is stopped, as at a stop entry (it may
			// have ended already: the provider closes the feed then).
			fmt.Fprintf(os.Stderr, "lockstep agent: container %s: %v: stopping it\n", a.cfg.ID, err)
			a.stop()
		case err != nil:
			a.die(fmt.Errorf("input stream: %w", err))
		}
	}()
	return nil
}

// stdinPipeSize is the stdin pipe's capacity: delivered inputs wait in it
// for the program, not in the timeline.
const stdinPipeSize = 1 << 20

// errFeedGone is the end of a feed before its stream's end entry: the
// provider went away (it was killed, its host failed).
var errFeedGone = errors.New("the input feed closed before the stream's end (its provider went away)")

// receive hands the feed's entries to the timeline until the stream ends,
// or the provider goes away (errFeedGone).
func receive(r *bufio.Reader, tl *virt.Timeline) error {
	for {
		f, err := feed.Read(r)
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
			tl.End()
			return errFeedGone
		}
		if err != nil {
			return err
		}
		in := virt.Input{Seq: f.Seq, Time: f.Time}
		switch f.Kind {
		case feed.Input:
			in.Payload = f.Payload
		case feed.EOF:
			in.EOF = true
		case feed.Tick:
			in.Tick = true
		case feed.Open, feed.Data, feed.Close:
			if len(f.Payload) < 8 {
				return fmt.Errorf("entry %d: a connection's frame without its number", f.Seq)
			}
			in.Conn = logd.ConnID(f.Payload)
			in.Net = map[byte]virt.NetOp{feed.Open: virt.NetOpen, feed.Data: virt.NetData, feed.Close: virt.NetClose}[f.Kind]
			in.Payload = f.Payload[8:]
		case feed.Stop:
			in.Stop = true
		case feed.End:
			tl.End()
			return nil
		default:
			return fmt.Errorf("unexpected frame %q from the provider", f.Kind)
		}
		for tl.Pending() > maxPending {
			time.Sleep(time.Millisecond)
		}
		if err := tl.Receive(in); err != nil {
			return fmt.Errorf("entry %d: %w", f.Seq, err)
		}
	}
}

// maxPending bounds the inputs received and not yet delivered.
const maxPending = 256
