package replicate

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"syscall"
	"time"

	"github.com/lockstep-run/lockstep/logd"
)

// Resumed is a served stream whose guard stopped (it was killed, its host
// restarted) before the stream's stop entry, read back so that a new
// guard goes on appending to it (lockstep serve --state): the stream's
// own signing key, where it ended, and what was open there.
type Resumed struct {
	Key    ed25519.PrivateKey
	Config Config
	Size   int64 // entries in the stream
	Last   int64 // the time of its last entry (Unix ns)
	// LastConn is the highest client connection number: the next guard
	// counts on from it.
	LastConn uint64
	// Open are the connections (clients' and outbound ones) opened and
	// not closed: they ended with the guard, and closing says so in the
	// log. Dialed are the outbound connections the log has an open entry
	// for: the replicas, replaying, ask for them again, and the guard must
	// not dial them twice.
	Open   []uint64
	Dialed map[uint64]bool
}

// ReadResumed reads a stream signed by key, to its head, for a guard that
// resumes it. A stream that ended (a stop or end entry) is not resumed.
func ReadResumed(ctx context.Context, c *logd.Client, stream string, key ed25519.PrivateKey) (*Resumed, error) {
	f, err := c.Follow(ctx, stream, key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	r := &Resumed{Key: key, Dialed: map[uint64]bool{}}
	open := map[uint64]bool{}
	var order []uint64
	head := false
	for !head {
		es, err := f.Next(ctx, 0)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", stream, err)
		}
		head = len(es) == 0
		for _, e := range es {
			r.Size, r.Last = int64(e.Seq)+1, e.Time
			switch e.Kind {
			case logd.KindConfig:
				cfg, _, err := ReadConfig([]logd.Entry{e})
				if err != nil {
					return nil, err
				}
				r.Config = cfg
			case logd.KindStop, logd.KindEnd:
				return nil, fmt.Errorf("stream %s ended at entry %d (a %v entry): there is nothing to resume; start a new stream", stream, e.Seq, e.Kind)
			case logd.KindOpen:
				id := logd.ConnID(e.Payload)
				if id&logd.EgressConn == 0 {
					r.LastConn = max(r.LastConn, id)
				} else {
					r.Dialed[id] = true
					if binary.BigEndian.Uint32(e.Payload[8:12]) != 0 {
						continue // the dial failed: nothing is open
					}
				}
				open[id] = true
				order = append(order, id)
			case logd.KindClose:
				delete(open, logd.ConnID(e.Payload))
			}
		}
	}
	if r.Size < 2 || r.Config.Port == 0 {
		return nil, fmt.Errorf("stream %s is not a served stream (no config entry with a port): only lockstep serve's streams are resumed", stream)
	}
	for _, id := range order {
		if open[id] {
			r.Open = append(r.Open, id)
			delete(open, id)
		}
	}
	return r, nil
}

// closing are the entries a resumed stream starts with: each connection
// that was open ends, a client's as if it closed its side, an outbound
// one reset (ECONNRESET), as the guard's death ended them.
func (r *Resumed) closing() []logd.Entry {
	now := max(time.Now().UnixNano(), r.Last)
	var es []logd.Entry
	for _, id := range r.Open {
		var why []byte
		if id&logd.EgressConn != 0 {
			why = binary.BigEndian.AppendUint32(nil, uint32(syscall.ECONNRESET))
		}
		e := logd.ConnEntry(logd.KindClose, now, id, why)
		es = append(es, e)
	}
	return es
}
