package serve

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"

	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
)

// The providers' fetch mode (lockstep run --fetch providers,
// docs/egress.md): an outbound TCP connection is made by every replica's
// provider (Gateway.Fetch), not once by the guard. Each fetch's dial
// result, bytes and end are appended to the log as fetch entries, which
// the replicas are not fed; the replicas get, as open, data and close
// entries, what a majority of the fetches got: the dial's result a
// majority had, and the bytes a majority read alike, voted as a stream
// exactly as the replicas' answers are. What the replicas send goes, once
// a majority of them sent it, to every fetch.

// fetch is one outbound connection made by every provider.
type fetch struct {
	id      uint64
	v       votes // of the fetches: odd or gone
	c       *conn // the vote on their bytes; it releases data entries
	resets  int   // fetches that ended with a reset
	streams []replicate.Stream
}

// fetchEach makes outbound connection id to to, a TCP address, with every
// fetcher, and appends what a majority of them got.
func (g *Gateway) fetchEach(id uint64, to string) {
	if !g.admit(id, to, to, "connected to "+to) {
		return
	}
	n := len(g.Fetch)
	f := &fetch{id: id, v: votes{need: n/2 + 1, odd: make([]string, n), gone: make([]bool, n)}, streams: make([]replicate.Stream, n)}
	errnos := make([]syscall.Errno, n)
	ctx, cancel := context.WithTimeout(context.Background(), DialTimeout)
	var wg sync.WaitGroup
	for i, fr := range g.Fetch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := fr.Fetch(ctx, to)
			if err != nil {
				errnos[i] = replicate.DialErrno(err)
				if g.Log != nil && !errors.As(err, new(syscall.Errno)) && !errors.Is(err, context.DeadlineExceeded) {
					g.Log(fmt.Sprintf("outbound connection %d: the fetch by %s failed: %v", id&^logd.EgressConn, fr.Name(), err))
				}
			}
			f.streams[i] = s
		}()
	}
	wg.Wait()
	cancel()
	for i, e := range errnos {
		g.emit(fetchEntry(id, i, 'o', errnoBytes(e)))
	}
	errno, ok := majority(errnos, f.v.need)
	g.mu.Lock()
	if !ok {
		g.fetchOdd = append(g.fetchOdd, fmt.Sprintf("outbound connection %d: no majority of the fetches' dials agree (%s), so it was refused", id&^logd.EgressConn, errnoNames(errnos)))
		errno = syscall.ECONNREFUSED
	}
	for i, e := range errnos {
		if ok && e != errno {
			f.v.odd[i] = fmt.Sprintf("outbound connection %d: its dial got %s, the majority's %s", id&^logd.EgressConn, errnoName(e), errnoName(errno))
			g.fetchOdd = append(g.fetchOdd, g.Fetch[i].Name()+": "+f.v.odd[i])
		}
	}
	g.mu.Unlock()
	if errno != 0 {
		f.Close()
		g.emit(egressOpen(id, errno, to))
		return
	}
	for i, s := range f.streams {
		f.v.gone[i] = s == nil // its dial failed, where the majority's connected
	}
	if !g.keep(id, f, nil) {
		return
	}
	g.mu.Lock()
	f.c = newConn(id, n, newWriter(&fetched{g: g, f: f}))
	g.mu.Unlock()
	g.emit(egressOpen(id, 0, to))
	for i, s := range f.streams {
		if s != nil {
			wg.Add(1)
			go func() { defer wg.Done(); g.readFetch(f, i, s) }()
		}
	}
	wg.Wait()
	f.Close()
	g.mu.Lock()
	delete(g.remotes, f)
	g.mu.Unlock()
}

// readFetch appends what fetch i reads, and votes on it.
func (g *Gateway) readFetch(f *fetch, i int, s replicate.Stream) {
	buf := make([]byte, egressRead-2)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			g.emit(fetchEntry(f.id, i, 'd', buf[:n]))
			g.mu.Lock()
			g.settleFetch(f, f.c.add(&f.v, i, append([]byte(nil), buf[:n]...)))
			g.mu.Unlock()
		}
		if err == nil {
			continue
		}
		var errno syscall.Errno
		end := errors.Is(err, io.EOF) || errors.As(err, &errno)
		var why []byte
		if errno != 0 {
			why = errnoBytes(errno)
		}
		g.emit(fetchEntry(f.id, i, 'c', why))
		g.mu.Lock()
		if end {
			if errno == syscall.ECONNRESET {
				f.resets++
			}
			g.settleFetch(f, f.c.finish(&f.v, i))
		} else { // the provider, not the remote, failed: its fetch leaves the vote
			f.v.gone[i] = true
			g.settleFetch(f, f.c.vote(&f.v))
		}
		g.mu.Unlock()
		return
	}
}

// settleFetch takes the fetches the vote found odd out of it and votes
// again; g.mu is held.
func (g *Gateway) settleFetch(f *fetch, odd map[int]string) {
	for len(odd) > 0 {
		for i, why := range odd {
			f.v.odd[i] = why
			f.c.pend[i] = nil
			g.fetchOdd = append(g.fetchOdd, g.Fetch[i].Name()+": it read other bytes than the majority of the fetches: "+why)
		}
		odd = f.c.vote(&f.v)
	}
	if f.c.split && !f.c.told {
		f.c.told = true
		g.fetchOdd = append(g.fetchOdd, fmt.Sprintf("outbound connection %d: no majority of the fetches read the same after byte %d: it was reset there", f.id&^logd.EgressConn, f.c.sent))
	}
}

// fetched writes the bytes a majority of the fetches read as data
// entries, and their end as the close entry.
type fetched struct {
	g *Gateway
	f *fetch
}

func (w *fetched) Write(p []byte) (int, error) {
	for q := p; len(q) > 0; {
		n := min(len(q), egressRead)
		w.g.emit(logd.ConnEntry(logd.KindData, 0, w.f.id, q[:n]))
		q = q[n:]
	}
	return len(p), nil
}

func (w *fetched) Close() error {
	w.g.mu.Lock()
	reset := w.f.c.split || w.f.resets >= w.f.v.need
	w.g.mu.Unlock()
	var why []byte
	if reset {
		why = errnoBytes(syscall.ECONNRESET)
	}
	w.g.emit(logd.ConnEntry(logd.KindClose, 0, w.f.id, why))
	return nil
}

// Write sends what a majority of the replicas sent to every fetch.
func (f *fetch) Write(p []byte) (int, error) {
	for _, s := range f.streams {
		if s != nil {
			s.Write(p) // a fetch that failed is judged by what it reads
		}
	}
	return len(p), nil
}

// CloseWrite shuts every fetch's write side: a majority of the replicas
// closed theirs.
func (f *fetch) CloseWrite() error {
	for _, s := range f.streams {
		if s != nil {
			s.CloseWrite()
		}
	}
	return nil
}

func (f *fetch) Close() error {
	for _, s := range f.streams {
		if s != nil {
			s.Close()
		}
	}
	return nil
}

// majority is the errno at least need of errnos have.
func majority(errnos []syscall.Errno, need int) (syscall.Errno, bool) {
	count := map[syscall.Errno]int{}
	for _, e := range errnos {
		if count[e]++; count[e] >= need {
			return e, true
		}
	}
	return 0, false
}

func errnoName(e syscall.Errno) string {
	if e == 0 {
		return "a connection"
	}
	return e.Error()
}

func errnoNames(es []syscall.Errno) string {
	var s []string
	for _, e := range es {
		s = append(s, errnoName(e))
	}
	return strings.Join(s, ", ")
}

// fetchEntry is fetcher i's event on outbound connection id (a fetch
// entry: 'o' its dial's errno, 'd' bytes, 'c' its end).
func fetchEntry(id uint64, i int, what byte, p []byte) logd.Entry {
	return logd.ConnEntry(logd.KindFetch, 0, id, append([]byte{byte(i), what}, p...))
}

// errnoBytes is errno as an egress entry carries it: 4 bytes, big-endian.
func errnoBytes(e syscall.Errno) []byte { return binary.BigEndian.AppendUint32(nil, uint32(e)) }
