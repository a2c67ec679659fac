//go:build linux

package ebpf

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Record says what the tracer records.
type Record struct {
	IO    bool // the bytes of I/O syscalls (EvWrite, EvRead, EvCount)
	Audit bool // audited syscalls (EvAudit)
}

// Tracer traces the I/O of one PID namespace.
type Tracer struct {
	objs    traceObjects
	links   []link.Link
	rd      *ringbuf.Reader
	done    chan error
	flushed chan chan struct{} // Drain's, closed by the reader at the flush
}

// Start loads the programs and attaches them for the PID namespace of
// process pid (e.g. a run's init); they record once Enable is called. Each
// event goes to handle, from one goroutine, in ring buffer order.
func Start(pid int, what Record, handle func(Event)) (*Tracer, error) {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid), &st); err != nil {
		return nil, fmt.Errorf("ebpf: PID namespace of %d: %w", pid, err)
	}
	spec, err := loadTrace()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["pidns_dev"].Set(uint64(st.Dev)); err != nil {
		return nil, err
	}
	if err := spec.Variables["pidns_ino"].Set(st.Ino); err != nil {
		return nil, err
	}
	for name, on := range map[string]bool{"record_io": what.IO, "record_audit": what.Audit} {
		v := uint32(0)
		if on {
			v = 1
		}
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, err
		}
	}
	t := &Tracer{done: make(chan error, 1), flushed: make(chan chan struct{}, 1)}
	if err := spec.LoadAndAssign(&t.objs, nil); err != nil {
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
	for _, p := range []struct {
		name string
		prog *ebpf.Program
	}{{"sys_enter", t.objs.SysEnter}, {"sys_exit", t.objs.SysExit}} {
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: p.name, Program: p.prog})
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("ebpf: attach to the %s raw tracepoint: %w", p.name, err)
		}
		t.links = append(t.links, l)
	}
	if t.rd, err = ringbuf.NewReader(t.objs.Events); err != nil {
		t.Close()
		return nil, err
	}
	go t.read(handle)
	return t, nil
}

func (t *Tracer) read(handle func(Event)) {
	var rec ringbuf.Record
	for {
		// The programs wake the reader only when the ring is a quarter
		// full; the deadline bounds how long events wait otherwise.
		t.rd.SetDeadline(time.Now().Add(20 * time.Millisecond))
		err := t.rd.ReadInto(&rec)
		if errors.Is(err, ringbuf.ErrFlushed) {
			// Every record committed before Drain's Flush was handled.
			close(<-t.flushed)
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			t.done <- err
			return
		}
		e, err := ParseEvent(rec.RawSample)
		if err != nil {
			t.done <- err
			return
		}
		handle(e)
	}
}

// Enable starts recording (at the traced command's first execve).
func (t *Tracer) Enable() error {
	return t.objs.Enabled.Update(uint32(0), uint32(1), ebpf.UpdateAny)
}

// Drain waits until every event committed so far has been handled (call
// it after the traced processes have exited): it flushes the ring buffer
// and waits for the reader to reach the flush.
func (t *Tracer) Drain() error {
	ack := make(chan struct{})
	t.flushed <- ack
	if err := t.rd.Flush(); err != nil {
		return fmt.Errorf("ebpf: flush the ring buffer: %w", err)
	}
	select {
	case <-ack:
	case err := <-t.done:
		return err
	}
	return t.Lost()
}

// Lost reports events the ring buffer had no room for: the trace is
// incomplete, and the run cannot be compared.
func (t *Tracer) Lost() error {
	var n uint64
	if err := t.objs.Lost.Lookup(uint32(0), &n); err != nil {
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
	if t.rd != nil {
		t.rd.Close()
	}
	return t.objs.Close()
}
