package replicate

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockstep-run/lockstep/logd"
)

// openLog makes the run's input log: a fresh stream with the seed as its
// first entry and the config (what runs) as its second, signed by a key of this run, or the recorded stream of a
// replay. It returns the key replicas trust and, for a fresh stream, its
// appender.
func openLog(ctx context.Context, o *Options) (string, *logd.Appender, error) {
	if o.Replay != nil {
		o.Stream = o.Replay.Header.Stream
		return o.Replay.Header.Key, nil, nil
	}
	if o.Join != "" {
		if o.Key == "" {
			return "", nil, fmt.Errorf("joining stream %s: no key to trust for it (StreamConfig reads it)", o.Stream)
		}
		return o.Key, nil, nil
	}
	if r := o.Resume; r != nil {
		app, err := o.Logd.OpenAppender(ctx, o.Stream, r.Key)
		if err != nil {
			return "", nil, err
		}
		if es := r.closing(); len(es) > 0 {
			if _, err := app.Append(ctx, es); err != nil {
				return "", nil, err
			}
		}
		return logd.EncodeKey(r.Key.Public().(ed25519.PublicKey)), app, nil
	}
	priv := o.StreamKey
	if priv == nil {
		var err error
		if _, priv, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return "", nil, err
		}
	}
	pub := priv.Public().(ed25519.PublicKey)
	if err := o.Logd.Create(ctx, o.Stream, pub); err != nil {
		return "", nil, err
	}
	app, err := o.Logd.OpenAppender(ctx, o.Stream, priv)
	if err != nil {
		return "", nil, err
	}
	seed := make([]byte, 8)
	binary.BigEndian.PutUint64(seed, o.Seed)
	cfg, _ := json.Marshal(Config{Image: o.Image, Digest: o.Digest, Args: o.Args, Port: o.Port, Replicas: o.Replicas})
	now := time.Now().UnixNano()
	if _, err := app.Append(ctx, []logd.Entry{{Kind: logd.KindSeed, Time: now, Payload: seed}, {Kind: logd.KindConfig, Time: now, Payload: cfg}}); err != nil {
		return "", nil, err
	}
	return logd.EncodeKey(pub), app, nil
}

// feedLog appends stdin to the log in entries of at most 64 KiB (one read
// each), stamped with the log's clock when read, and an eof entry at its
// end; ticks while a replica waits for the log's time (voter.Waiting);
// and, once over is closed (the replicas ended), the end entry.
// While one append is on its way to disk, the reads (and a served
// stream's connection entries) that arrive meanwhile
// are gathered into the next (a group commit of at most gatherBytes): one
// durable write per batch, not per read, and no wait when input is slow.
// It reads no further than Window entries ahead of what a majority has read.
func feedLog(ctx context.Context, app *logd.Appender, o Options, v *voter, over <-chan struct{}) error {
	reads := make(chan logd.Entry, gatherBytes/readSize)
	rerr := make(chan error, 2)
	go readInput(ctx, app.Size(), o, v, reads, rerr)
	last := time.Now().UnixNano() // no later than the seed entry's time
	tick := time.NewTimer(time.Hour)
	tick.Stop()
	var batch []logd.Entry
	appendBatch := func() error {
		for i := range batch { // an entry made before one appended first
			batch[i].Time = max(batch[i].Time, last)
			last = batch[i].Time
		}
		if _, err := app.Append(ctx, batch); err != nil {
			return err
		}
		n := 0
		for _, e := range batch {
			n += len(e.Payload)
		}
		v.addIn(int64(n))
		last = batch[len(batch)-1].Time
		v.ticked(last)
		return nil
	}
	for {
		if d, ok := v.nextWait(); ok {
			at := max(d, last+int64(o.TickEvery))
			tick.Reset(time.Duration(at - time.Now().UnixNano()))
		}
		select {
		case err := <-rerr:
			if err := readEnd(err); err != nil {
				return err
			}
		case e, ok := <-reads:
			if !ok {
				reads = nil
				continue
			}
			batch = append(batch[:0], e)
			n := len(e.Payload)
		gather:
			for n < gatherBytes && e.Kind != logd.KindEOF && e.Kind != logd.KindStop {
				select {
				case e, ok = <-reads:
					if !ok {
						reads = nil
						break gather
					}
					batch = append(batch, e)
					n += len(e.Payload)
				default:
					break gather
				}
			}
			if err := appendBatch(); err != nil {
				return err
			}
		case <-tick.C:
			if d, ok := v.nextWait(); ok && time.Now().UnixNano() >= max(d, last+int64(o.TickEvery)) {
				batch = append(batch[:0], logd.Entry{Kind: logd.KindTick, Time: max(time.Now().UnixNano(), last)})
				if err := appendBatch(); err != nil {
					return err
				}
			}
		case <-v.waits:
		case <-over:
			batch = append(batch[:0], logd.Entry{Kind: logd.KindEnd, Time: max(time.Now().UnixNano(), last)})
			ctx = context.WithoutCancel(ctx)
			return appendBatch()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readEnd is the error that ended the reading of stdin, if it ends the
// run: a run whose replicas stopped stops reading, and ends its log.
func readEnd(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// readInput reads stdin into input entries, and an eof entry at its end,
// and passes on the guard's entries (Entries: a served stream's, or a
// run's outbound connections'); rerr gets the error that stopped the
// reading of stdin (nil at its end; a served stream's: at Entries' close).
// reads is closed once both are done.
func readInput(ctx context.Context, next int64, o Options, v *voter, reads chan<- logd.Entry, rerr chan<- error) {
	var made atomic.Int64 // entries made: the log's size once they are appended
	made.Store(next)
	send := func(e logd.Entry) error {
		if err := v.waitRoom(ctx, made.Add(1)-1-int64(o.Window)); err != nil {
			return err
		}
		select {
		case reads <- e:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var wg sync.WaitGroup
	if o.Entries != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range o.Entries {
				if err := send(e); err != nil {
					rerr <- err
					return
				}
			}
			if o.Stdin == nil {
				rerr <- nil
			}
		}()
	}
	if o.Stdin != nil {
		rerr <- readStdin(o.Stdin, send)
	}
	wg.Wait()
	close(reads)
}

// readStdin sends stdin's reads as input entries, and an eof entry at
// its end.
func readStdin(in io.Reader, send func(logd.Entry) error) error {
	for {
		buf := make([]byte, readSize)
		n, err := in.Read(buf)
		if n > 0 {
			if err := send(logd.Entry{Kind: logd.KindInput, Time: time.Now().UnixNano(), Payload: buf[:n:n]}); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return send(logd.Entry{Kind: logd.KindEOF, Time: time.Now().UnixNano()})
		}
		if err != nil {
			return err
		}
	}
}

// readSize is the most one read of stdin takes, and so an input entry's
// size; gatherBytes bounds one group commit (etcd keeps its recent raft
// entries in memory: see logd.StartEmbedded).
const (
	readSize    = 64 << 10
	gatherBytes = 256 << 10
)
