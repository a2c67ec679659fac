//go:build linux

package ebpf

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ring is the consumer side of a BPF ring buffer, read in place: a
// record's bytes are handed out where the kernel wrote them and the space
// is given back after, so the consumer copies nothing (with 64 KiB writes
// a copy out of the ring cost it a fifth of its time). The kernel maps the
// data pages twice in a row, so a record that wraps around is contiguous.
type ring struct {
	cons, prod []byte  // the consumer page (read-write) and the producer page and data (read-only)
	consPos    *uint64 // ours to advance
	prodPos    *uint64 // the kernel's
	data       []byte  // size bytes, mapped twice in a row
	size, mask uint64
	epfd       int // the ring's fd and wake, for waiting
	wake       int // an eventfd that ends a wait early
}

// Record header flags (include/uapi/linux/bpf.h).
const (
	ringBusy    = 1 << 31 // reserved, not yet committed
	ringDiscard = 1 << 30 // committed as discarded
	ringHeader  = 8
)

// giveBack is how many consumed bytes the reader holds before it moves
// the consumer position: each move is a cache line the producers must
// fetch again.
const giveBack = 256 << 10

func openRing(m *ebpf.Map) (*ring, error) {
	size := int(m.MaxEntries())
	page := os.Getpagesize()
	r := &ring{epfd: -1, wake: -1}
	var err error
	if r.cons, err = unix.Mmap(m.FD(), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("ebpf: map the ring buffer's consumer page: %w", err)
	}
	if r.prod, err = unix.Mmap(m.FD(), int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		r.close()
		return nil, fmt.Errorf("ebpf: map the ring buffer's data: %w", err)
	}
	r.consPos = (*uint64)(unsafe.Pointer(&r.cons[0]))
	r.prodPos = (*uint64)(unsafe.Pointer(&r.prod[0]))
	r.data = r.prod[page:]
	r.size, r.mask = uint64(size), uint64(size-1)
	if r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		r.close()
		return nil, fmt.Errorf("ebpf: epoll: %w", err)
	}
	if r.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		r.close()
		return nil, fmt.Errorf("ebpf: eventfd: %w", err)
	}
	for _, fd := range []int{m.FD(), r.wake} {
		if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			r.close()
			return nil, fmt.Errorf("ebpf: epoll: %w", err)
		}
	}
	return r, nil
}

// consume hands each committed record to f, in order, until the ring is
// empty or its next record is not committed yet, and returns how far it
// read. f must not keep the bytes it is given.
func (r *ring) consume(f func([]byte) error) (uint64, error) {
	cons := atomic.LoadUint64(r.consPos)
	given := cons
	defer func() { atomic.StoreUint64(r.consPos, cons) }()
	for {
		prod := atomic.LoadUint64(r.prodPos)
		if cons == prod {
			return cons, nil
		}
		// The length is read atomically: the kernel's commit (an xchg)
		// clears the busy bit after the record's bytes are written.
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[cons&r.mask])))
		if hdr&ringBusy != 0 {
			return cons, nil
		}
		n := uint64(hdr &^ (ringBusy | ringDiscard))
		start := (cons + ringHeader) & r.mask
		next := cons + ringHeader + (n+7)&^7
		if next > prod {
			return cons, fmt.Errorf("ebpf: ring buffer record of %d bytes past the producer", n)
		}
		if hdr&ringDiscard == 0 {
			if err := f(r.data[start : start+n : start+n]); err != nil {
				return cons, err
			}
		}
		cons = next
		if cons-given >= giveBack {
			atomic.StoreUint64(r.consPos, cons)
			given = cons
		}
	}
}

// backlog is how many bytes wait to be read.
func (r *ring) backlog() uint64 { return atomic.LoadUint64(r.prodPos) - atomic.LoadUint64(r.consPos) }

// produced is how far the producers have reserved.
func (r *ring) produced() uint64 { return atomic.LoadUint64(r.prodPos) }

// wait blocks until the ring is woken, the eventfd is written or ms pass.
func (r *ring) wait(ms int) error {
	var evs [2]unix.EpollEvent
	n, err := unix.EpollWait(r.epfd, evs[:], ms)
	if err == unix.EINTR {
		return nil
	}
	for _, ev := range evs[:max(n, 0)] {
		if int(ev.Fd) == r.wake {
			var b [8]byte
			unix.Read(r.wake, b[:])
		}
	}
	return err
}

// interrupt ends the reader's wait.
func (r *ring) interrupt() {
	b := [8]byte{1}
	unix.Write(r.wake, b[:])
}

func (r *ring) close() {
	for _, fd := range []int{r.epfd, r.wake} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	for _, b := range [][]byte{r.cons, r.prod} {
		if b != nil {
			unix.Munmap(b)
		}
	}
	r.epfd, r.wake, r.cons, r.prod = -1, -1, nil, nil
}
