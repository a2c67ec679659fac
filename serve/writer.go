package serve

import (
	"io"
	"sync"
)

// writer writes a client's released response bytes in order, on a
// goroutine of its own: a slow client holds up only itself. end closes
// the connection once what was pushed is written, or with half set (an
// outbound connection: the remote may still answer), shuts its write side.
type writer struct {
	c     io.WriteCloser
	half  bool
	mu    sync.Mutex
	cond  *sync.Cond
	queue [][]byte
	ended bool
}

func newWriter(c io.WriteCloser) *writer {
	w := &writer{c: c}
	w.cond = sync.NewCond(&w.mu)
	go w.run()
	return w
}

func (w *writer) push(p []byte) {
	w.mu.Lock()
	if !w.ended {
		w.queue = append(w.queue, p)
	}
	w.mu.Unlock()
	w.cond.Signal()
}

func (w *writer) end() {
	w.mu.Lock()
	w.ended = true
	w.mu.Unlock()
	w.cond.Signal()
}

func (w *writer) run() {
	failed := false
	for {
		w.mu.Lock()
		for len(w.queue) == 0 && !w.ended {
			w.cond.Wait()
		}
		q := w.queue
		w.queue = nil
		ended := w.ended
		w.mu.Unlock()
		for _, p := range q {
			if !failed {
				_, err := w.c.Write(p)
				failed = err != nil // the client went away: the vote goes on
			}
		}
		if ended && len(q) == 0 {
			if hc, ok := w.c.(interface{ CloseWrite() error }); ok && w.half {
				hc.CloseWrite()
			} else {
				w.c.Close()
			}
			return
		}
	}
}
