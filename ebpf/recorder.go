package ebpf

import "fmt"

// Recorder sends traced events where they go: audit events to the audit,
// data to the chain of its stream (writes to "pid P fd F", reads to "read
// pid P fd F", uncopied bytes as markers), and everything to the trace.
// Any of the three may be nil when it was not asked for.
type Recorder struct {
	chains *Chains
	audit  *Audit
	trace  *TraceWriter
	names  map[streamKey]string
}

type streamKey struct {
	pid  uint32
	fd   int32
	read bool
}

// NewRecorder returns a recorder into chains, audit and trace.
func NewRecorder(chains *Chains, audit *Audit, trace *TraceWriter) *Recorder {
	return &Recorder{chains: chains, audit: audit, trace: trace, names: map[streamKey]string{}}
}

// Add records one event. It is the handler given to Start.
func (r *Recorder) Add(e Event) {
	if e.Type == EvAudit {
		if r.audit != nil {
			r.audit.Add(e)
		}
		return
	}
	if r.chains == nil {
		return
	}
	k := streamKey{e.Pid, e.FD, e.Type == EvRead}
	name, ok := r.names[k]
	if !ok {
		name = StreamName(e)
		if k.read {
			name = "read " + name
		}
		r.names[k] = name
	}
	if r.trace != nil {
		r.trace.Add(name, e)
	}
	if e.Type == EvCount {
		r.chains.Uncopied(name, int64(e.Len))
		return
	}
	r.chains.Write(name, e.Data)
}

// StreamName names the stream an event's fd refers to, deterministically:
// by the process (its PID in the traced namespace) and the fd number. (The
// file an fd refers to cannot be resolved reliably once the process has
// exited, which is often before its events are handled.)
func StreamName(e Event) string { return fmt.Sprintf("pid %d fd %d", e.Pid, e.FD) }
