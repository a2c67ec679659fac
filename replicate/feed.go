package replicate

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/lockstep-run/lockstep/feed"
	"github.com/lockstep-run/lockstep/logd"
)

// errStdinClosed ends a feed whose container went away before the end of
// the stream (it exited, or closed its stdin).
var errStdinClosed = errors.New("the container stopped taking its input")

// listenFeed makes the socket a container's runtime connects to for its
// input stream (shim.AnnotationInput), in a directory of its own that
// done removes.
func listenFeed() (ln *net.UnixListener, path string, done func(), err error) {
	dir, err := os.MkdirTemp("", "lockstep-feed-")
	if err != nil {
		return nil, "", nil, err
	}
	path = filepath.Join(dir, "s")
	ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", nil, fmt.Errorf("the input feed's socket: %w", err)
	}
	return ln, path, func() { ln.Close(); os.RemoveAll(dir) }, nil
}

// acceptFeed waits for the runtime's connection, made when the container
// is created.
func acceptFeed(ctx context.Context, ln *net.UnixListener) (*net.UnixConn, error) {
	ln.SetDeadline(time.Now().Add(feedTimeout))
	defer context.AfterFunc(ctx, func() { ln.SetDeadline(time.Now()) })()
	c, err := ln.AcceptUnix()
	if ctx.Err() != nil {
		if c != nil {
			c.Close()
		}
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("the runtime did not connect to the input feed in %v (is the shim io.containerd.lockstep.v1 older than this lockstep?): %w", feedTimeout, err)
	}
	return c, nil
}

const feedTimeout = 30 * time.Second

// frameKinds are the feed's frames for the entries a runtime is given
// (the seed and config entries are the provider's).
var frameKinds = map[logd.Kind]byte{
	logd.KindInput: feed.Input, logd.KindEOF: feed.EOF, logd.KindTick: feed.Tick, logd.KindEnd: feed.End,
	logd.KindOpen: feed.Open, logd.KindData: feed.Data, logd.KindClose: feed.Close, logd.KindStop: feed.Stop,
}

// serveFeed sends the stream's entries (es first, then the follower's) to
// the container's runtime until the end entry, and passes on what the
// runtime says: the deadlines it waits for (out.Waiting) and the entries
// its program took (out.Consumed), which it returns.
func serveFeed(ctx context.Context, c *net.UnixConn, f entrySource, es []logd.Entry, out Sink) (int64, error) {
	var read atomic.Int64
	read.Store(1) // the seed
	back := make(chan error, 1)
	go func() {
		r := bufio.NewReader(c)
		for {
			fr, err := feed.Read(r)
			if err != nil {
				back <- err
				return
			}
			switch fr.Kind {
			case feed.Wait:
				out.Waiting(fr.Time)
			case feed.Consumed:
				read.Store(max(read.Load(), fr.Seq))
				out.Consumed(fr.Seq)
			case feed.Response:
				if len(fr.Payload) >= 8 {
					out.Response(logd.ConnID(fr.Payload), fr.Payload[8:])
				}
			case feed.Finished:
				if len(fr.Payload) >= 8 {
					out.Finished(logd.ConnID(fr.Payload))
				}
			case feed.Dial:
				if len(fr.Payload) >= 8 {
					out.Dial(logd.ConnID(fr.Payload), string(fr.Payload[8:]))
				}
			}
		}
	}()
	w := bufio.NewWriterSize(c, 256<<10)
	for {
		for _, e := range es {
			fr := feed.Frame{Seq: int64(e.Seq), Time: e.Time, Payload: e.Payload}
			var ok bool
			if fr.Kind, ok = frameKinds[e.Kind]; !ok {
				continue
			}
			if err := feed.Write(w, fr); err != nil {
				return read.Load(), errStdinClosed
			}
			if e.Kind == logd.KindEnd {
				if err := w.Flush(); err != nil {
					return read.Load(), errStdinClosed
				}
				read.Store(int64(e.Seq) + 1)
				out.Consumed(read.Load())
				return read.Load(), nil
			}
		}
		if err := w.Flush(); err != nil {
			return read.Load(), errStdinClosed
		}
		var err error
		if es, err = f.Next(ctx, 10*time.Second); err != nil {
			return read.Load(), err
		}
		select {
		case <-back:
			return read.Load(), errStdinClosed
		default:
		}
	}
}
