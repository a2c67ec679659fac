//go:build linux

package ebpf

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Record says what the tracer records.
type Record struct {
	IO    bool // the bytes of I/O syscalls (EvWrite, EvRead, EvCount)
	Audit bool // audited syscalls (EvAudit)
	// Throttle: every traced thread is ptraced by a tracer that takes the
	// SIGSTOPs the programs send when the ring is past half full (Stops)
	// and holds their threads while Behind (tracer.Throttle). Without it a
	// writer faster than the consumer loses events, and the run fails.
	Throttle bool
}

// Tracer traces the I/O of one PID namespace.
type Tracer struct {
	objs    *ebpf.Collection
	links   []link.Link
	ring    *ring
	done    chan error         // the reader's error, when it stops on one
	flushed chan chan struct{} // Drain's, closed by the reader once it has read all
	stop    chan struct{}      // closed by Close
	stopped chan struct{}      // closed by the reader as it returns
}

// Start loads the programs and attaches them; they record once Enable
// names the PID namespace to trace. (Loading takes ~15 ms, mostly the
// ring's allocation and the verifier: a caller can do it while the traced
// command starts.) Each event goes to handle, from one goroutine, in ring
// buffer order; its Data is the ring's memory, valid only until handle
// returns.
func Start(what Record, handle func(Event)) (*Tracer, error) {
	spec, err := loadTrace()
	if err != nil {
		return nil, err
	}
	v := uint32(0)
	if what.Throttle {
		v = 1
	}
	if err := spec.Variables["throttle"].Set(v); err != nil {
		return nil, err
	}
	// Each program is loaded and attached only if needed: sys_exit does
	// the I/O, sys_enter the audit.
	var attach []string
	if what.IO {
		attach = append(attach, "sys_exit")
	} else {
		delete(spec.Programs, "sys_exit")
	}
	if what.Audit {
		attach = append(attach, "sys_enter")
	} else {
		delete(spec.Programs, "sys_enter")
	}
	t := &Tracer{done: make(chan error, 1), flushed: make(chan chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	if t.objs, err = ebpf.NewCollection(spec); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			log := ve.Log
			if len(log) > 8 {
				log = log[len(log)-8:]
			}
			return nil, fmt.Errorf("ebpf: the kernel's verifier refused the tracer: %v\n%s", ve.Cause, strings.Join(log, "\n"))
		}
		return nil, fmt.Errorf("ebpf: load the tracer (root, and a kernel with BPF ring buffers, are needed): %w", err)
	}
	for _, name := range attach {
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: name, Program: t.objs.Programs[name]})
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("ebpf: attach to the %s raw tracepoint: %w", name, err)
		}
		t.links = append(t.links, l)
	}
	if t.ring, err = openRing(t.objs.Maps["events"]); err != nil {
		t.Close()
		return nil, err
	}
	go t.read(handle)
	return t, nil
}

// read hands the ring's events to handle until Close. The programs wake
// it only when the ring passes 1 MiB; otherwise it polls every
// 20 ms, which bounds how long events wait.
func (t *Tracer) read(handle func(Event)) {
	defer close(t.stopped)
	each := func(b []byte) error {
		e, err := ParseEvent(b)
		if err != nil {
			return err
		}
		handle(e)
		return nil
	}
	for {
		if _, err := t.ring.consume(each); err != nil {
			t.done <- err
			return
		}
		select {
		case <-t.stop:
			return
		case ack := <-t.flushed:
			// The traced processes have exited: every event is committed
			// up to the producer position, and is read before the ack.
			end := t.ring.produced()
			for {
				at, err := t.ring.consume(each)
				if err != nil {
					t.done <- err
					return
				}
				if at >= end {
					break
				}
				t.ring.wait(1)
			}
			close(ack)
		default:
		}
		if err := t.ring.wait(20); err != nil {
			t.done <- fmt.Errorf("ebpf: wait for the ring buffer: %w", err)
			return
		}
	}
}

// Enable starts recording the PID namespace of process pid (at the traced
// command's first execve, while it is stopped there).
func (t *Tracer) Enable(pid int) error {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid), &st); err != nil {
		return fmt.Errorf("ebpf: PID namespace of %d: %w", pid, err)
	}
	return t.objs.Maps["target"].Update(uint32(0), traceTarget{Dev: uint64(st.Dev), Ino: st.Ino}, ebpf.UpdateAny)
}

// Drain waits until every event committed so far has been handled (call
// it after the traced processes have exited).
func (t *Tracer) Drain() error {
	ack := make(chan struct{})
	t.flushed <- ack
	t.ring.interrupt()
	select {
	case <-ack:
	case err := <-t.done:
		return err
	}
	return t.Lost()
}

// Stops is how many SIGSTOPs the programs have sent to threads that wrote
// while the ring was past half full.
func (t *Tracer) Stops() uint64 {
	var n uint64
	if err := t.objs.Maps["stops"].Lookup(uint32(0), &n); err != nil {
		return 0
	}
	return n
}

// Behind reports whether the consumer is still behind: more than an
// eighth of the ring waits to be read. Threads stopped for it are held
// until it is not. A reader that has stopped (on an error, which fails the
// run at Drain) is behind no more: its threads run on rather than hang.
func (t *Tracer) Behind() bool {
	select {
	case <-t.stopped:
		return false
	default:
		return t.ring.backlog() > t.ring.size/8
	}
}

// Lost reports events the ring buffer had no room for: the trace is
// incomplete, and the run cannot be compared.
func (t *Tracer) Lost() error {
	var n uint64
	if err := t.objs.Maps["lost"].Lookup(uint32(0), &n); err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("ebpf: %d events did not fit in the ring buffer: the trace is incomplete", n)
	}
	return nil
}

// Close detaches and unloads the tracer.
func (t *Tracer) Close() error {
	for _, l := range t.links {
		l.Close()
	}
	if t.ring != nil {
		close(t.stop)
		t.ring.interrupt()
		<-t.stopped // the reader reads the ring's memory until then
		t.ring.close()
	}
	if t.objs != nil {
		t.objs.Close()
	}
	return nil
}
