package logd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/lockstep-run/lockstep/logd/wire"
)

// Trace is a replica's signed I/O digest chains (wire.Trace).
type Trace = wire.Trace

// MaxTrace bounds a trace's checkpoints (about 7,000 checkpoints: 400 MiB
// of output at one per 64 KiB).
const MaxTrace = 1 << 20

// Trace stores a replica's signed trace. The replica's key is the one of
// its digest reports (or is fixed by the trace if it made none); a replica
// has one trace: the same one again is accepted, another is refused.
func (s *Store) Trace(ctx context.Context, t Trace) error {
	if err := validName(t.Replica); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	if len(t.Checkpoints) > MaxTrace {
		return fmt.Errorf("trace of %s: %d bytes of checkpoints, more than logd keeps (%d)", t.Replica, len(t.Checkpoints), MaxTrace)
	}
	if !json.Valid(t.Checkpoints) {
		return fmt.Errorf("trace of %s: the checkpoints are not JSON", t.Replica)
	}
	if err := t.Verify(); err != nil {
		return err
	}
	if _, err := s.Key(ctx, t.Stream); err != nil {
		return err
	}
	p := prefix(t.Stream) + "d/" + t.Replica + "/"
	at := prefix(t.Stream) + "t/" + t.Replica
	b, _ := json.Marshal(t)
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(p+"key"), "=", 0), clientv3.Compare(clientv3.CreateRevision(at), "=", 0)).
		Then(clientv3.OpPut(p+"key", t.Key), clientv3.OpPut(at, string(b))).
		Else(clientv3.OpGet(p+"key"), clientv3.OpGet(at)).Commit()
	if err != nil || resp.Succeeded {
		return err
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 && string(kvs[0].Value) != t.Key {
		return fmt.Errorf("replica %s reported before with key %s, not %s", t.Replica, kvs[0].Value, t.Key)
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		var old Trace
		if json.Unmarshal(kvs[0].Value, &old) == nil && bytes.Equal(old.Checkpoints, t.Checkpoints) {
			return nil // the same trace again
		}
		return fmt.Errorf("replica %s already reported its trace, a different one", t.Replica)
	}
	// The key was there (digest reports) and matches; no trace yet.
	resp, err = s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(at), "=", 0)).
		Then(clientv3.OpPut(at, string(b))).Commit()
	if err == nil && !resp.Succeeded {
		return fmt.Errorf("replica %s reported two traces at once", t.Replica)
	}
	return err
}

// GetTrace returns a replica's trace.
func (s *Store) GetTrace(ctx context.Context, stream, replica string) (Trace, error) {
	if _, err := s.Key(ctx, stream); err != nil {
		return Trace{}, err
	}
	resp, err := s.kv.Get(ctx, prefix(stream)+"t/"+replica)
	if err != nil {
		return Trace{}, err
	}
	if len(resp.Kvs) == 0 {
		return Trace{}, fmt.Errorf("%w: replica %s of stream %s has reported no trace", ErrNoTrace, replica, stream)
	}
	var t Trace
	err = json.Unmarshal(resp.Kvs[0].Value, &t)
	return t, err
}
