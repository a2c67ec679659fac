package logd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// Client speaks logd's HTTP/JSON API.
type Client struct {
	Base string // e.g. http://127.0.0.1:7480
	HTTP *http.Client
}

// NewClient returns a client of the logd at addr (host:port or a URL).
func NewClient(addr string) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{Base: strings.TrimSuffix(addr, "/"), HTTP: &http.Client{Timeout: 2 * time.Minute}}
}

// APIError is an error the server answered.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }

// Is maps status codes to the package's errors.
func (e *APIError) Is(target error) bool {
	switch e.Status {
	case http.StatusNotFound:
		return target == ErrNoStream || target == ErrNoTrace
	case http.StatusConflict:
		return target == ErrStale || target == ErrExists
	}
	return false
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	resp, err := c.send(ctx, method, path, body, "application/json", "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// send makes a request and turns an answer other than 200 into an
// *APIError.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader, contentType, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", accept)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("logd at %s: %w (is lockstep-logd running?)", c.Base, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return nil, &APIError{Status: resp.StatusCode, Msg: e.Error}
	}
	return resp, nil
}

func streamPath(s string) string { return "/v1/streams/" + url.PathEscape(s) }

// Create makes a stream whose checkpoints key signs.
func (c *Client) Create(ctx context.Context, stream string, key ed25519.PublicKey) error {
	var out map[string]string
	return c.do(ctx, "POST", "/v1/streams", map[string]string{"Stream": stream, "Key": EncodeKey(key)}, &out)
}

// Info returns the stream's key and latest checkpoint.
func (c *Client) Info(ctx context.Context, stream string) (StreamInfo, error) {
	var out StreamInfo
	err := c.do(ctx, "GET", streamPath(stream), nil, &out)
	return out, err
}

// Append appends records at size expect with the new tree's checkpoint.
// The records go in binary frames (RecordsType).
func (c *Client) Append(ctx context.Context, stream string, expect int64, records [][]byte, cp Checkpoint) (Checkpoint, error) {
	head, err := json.Marshal(AppendRequest{Expect: expect, Checkpoint: cp})
	if err != nil {
		return Checkpoint{}, err
	}
	size := len(head) + 10
	for _, r := range records {
		size += len(r) + 10
	}
	body := bytes.NewBuffer(make([]byte, 0, size))
	writeFrame(body, head)
	for _, r := range records {
		writeFrame(body, r)
	}
	resp, err := c.send(ctx, "POST", streamPath(stream)+"/entries", body, RecordsType, "application/json")
	if err != nil {
		return Checkpoint{}, err
	}
	defer resp.Body.Close()
	var out struct{ Checkpoint Checkpoint }
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out.Checkpoint, err
}

// Records fetches up to limit records from seq on, waiting up to wait for
// the first to exist. They come in binary frames (RecordsType).
func (c *Client) Records(ctx context.Context, stream string, seq, limit int64, wait time.Duration) ([][]byte, error) {
	q := fmt.Sprintf("/entries?from=%d&limit=%d&wait=%d", seq, limit, int64(wait/time.Second))
	resp, err := c.send(ctx, "GET", streamPath(stream)+q, nil, "", RecordsType)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != RecordsType {
		return nil, fmt.Errorf("logd at %s answered records as %q, not %s (an older lockstep-logd?)", c.Base, ct, RecordsType)
	}
	return readFrames(resp.Body, int(limit))
}

// Consistency fetches the proof that the tree of size old is a prefix of
// the tree of size n.
func (c *Client) Consistency(ctx context.Context, stream string, old, n int64) (tlog.TreeProof, error) {
	var out struct{ Proof tlog.TreeProof }
	err := c.do(ctx, "GET", fmt.Sprintf("%s/proof/consistency?old=%d&size=%d", streamPath(stream), old, n), nil, &out)
	return out.Proof, err
}

// Inclusion fetches the proof that entry i is in the tree of size n.
func (c *Client) Inclusion(ctx context.Context, stream string, i, n int64) (tlog.RecordProof, error) {
	var out struct{ Proof tlog.RecordProof }
	err := c.do(ctx, "GET", fmt.Sprintf("%s/proof/inclusion?index=%d&size=%d", streamPath(stream), i, n), nil, &out)
	return out.Proof, err
}

// Report sends a replica's signed digest report.
func (c *Client) Report(ctx context.Context, r Report) error {
	var out map[string]string
	return c.do(ctx, "POST", streamPath(r.Stream)+"/digests", r, &out)
}

// Trace sends a replica's signed trace (its I/O digest chains).
func (c *Client) Trace(ctx context.Context, t Trace) error {
	var out map[string]string
	return c.do(ctx, "POST", streamPath(t.Stream)+"/traces", t, &out)
}

// GetTrace fetches a replica's trace.
func (c *Client) GetTrace(ctx context.Context, stream, replica string) (Trace, error) {
	var t Trace
	err := c.do(ctx, "GET", streamPath(stream)+"/traces/"+url.PathEscape(replica), nil, &t)
	return t, err
}

// Verdict asks the verifier about n replicas.
func (c *Client) Verdict(ctx context.Context, stream string, n int) (Verdict, error) {
	var out Verdict
	err := c.do(ctx, "GET", fmt.Sprintf("%s/verdict?replicas=%d", streamPath(stream), n), nil, &out)
	return out, err
}

// Appender appends to one stream as its only writer, signing checkpoints.
type Appender struct {
	c      *Client
	stream string
	key    ed25519.PrivateKey
	tree   Tree
	last   *Entry
}

// OpenAppender resumes appending to stream: it reads the stream back,
// rebuilds its tree and checks the head checkpoint is its own.
func (c *Client) OpenAppender(ctx context.Context, stream string, key ed25519.PrivateKey) (*Appender, error) {
	f, err := c.Follow(ctx, stream, key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	for {
		es, err := f.Next(ctx, 0)
		if err != nil {
			return nil, err
		}
		if len(es) == 0 {
			break
		}
	}
	return &Appender{c: c, stream: stream, key: key, tree: f.tree, last: f.last}, nil
}

// Size is the number of entries in the stream.
func (a *Appender) Size() int64 { return a.tree.Size() }

// Append appends entries (their Seq is set here), in durable batches of at
// most MaxBatch entries and about 1 MiB, each with its own checkpoint, and
// returns the last checkpoint.
func (a *Appender) Append(ctx context.Context, entries []Entry) (Checkpoint, error) {
	var cp Checkpoint
	for len(entries) > 0 {
		n, bytes := 0, 0
		for n < len(entries) && n < MaxBatch && (n == 0 || bytes+len(entries[n].Payload) <= MaxPayload) {
			bytes += len(entries[n].Payload)
			n++
		}
		var err error
		if cp, err = a.appendBatch(ctx, entries[:n]); err != nil {
			return cp, err
		}
		entries = entries[n:]
	}
	return cp, nil
}

func (a *Appender) appendBatch(ctx context.Context, entries []Entry) (Checkpoint, error) {
	// Extend the tree in place; undo on failure.
	oldHashes, oldSize, oldLast := len(a.tree.hashes), a.tree.size, a.last
	undo := func() { a.tree.hashes, a.tree.size, a.last = a.tree.hashes[:oldHashes], oldSize, oldLast }
	recs := make([][]byte, len(entries))
	for i := range entries {
		e := &entries[i]
		e.Seq = uint64(a.tree.Size())
		err := checkOrder(a.last, e)
		var rec []byte
		if err == nil {
			rec, err = e.Marshal()
		}
		if err == nil {
			err = a.tree.Append(rec)
		}
		if err != nil {
			undo()
			return Checkpoint{}, err
		}
		recs[i], a.last = rec, e
	}
	root, err := a.tree.Root(a.tree.Size())
	if err != nil {
		undo()
		return Checkpoint{}, err
	}
	cp := Checkpoint{Stream: a.stream, Size: a.tree.Size(), Root: root}
	cp.Stamp(entries[len(entries)-1].Time)
	cp.Sign(a.key)
	if err := a.send(ctx, oldSize, recs, cp); err != nil {
		undo()
		return Checkpoint{}, err
	}
	last := entries[len(entries)-1]
	a.last = &last
	return cp, nil
}

// send appends one batch. An error whose outcome is unknown (a member
// died, a leader election, a timeout) is retried for up to retryFor, after
// checking whether the batch was committed after all.
func (a *Appender) send(ctx context.Context, expect int64, recs [][]byte, cp Checkpoint) error {
	deadline := time.Now().Add(retryFor)
	for {
		_, err := a.c.Append(ctx, a.stream, expect, recs, cp)
		var api *APIError
		if err == nil || (errors.As(err, &api) && api.Status < 500) || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
		if info, ierr := a.c.Info(ctx, a.stream); ierr == nil && info.Checkpoint.Size == cp.Size && info.Checkpoint.Root == cp.Root {
			return nil // it was committed
		}
	}
}

const retryFor = 30 * time.Second

// Follower reads a stream as a replica does: it hands out an entry only
// once a checkpoint signed by the trusted key covers it, that checkpoint's
// root matches the entries received, and the log server has proved it
// consistent with the checkpoint before it.
type Follower struct {
	c         *Client
	stream    string
	trusted   ed25519.PublicKey
	tree      Tree
	entries   []Entry // received from handed on, not handed out yet (see maxHeld)
	held      int     // payload bytes in entries
	last      *Entry  // the last entry received
	verified  int64   // entries [0, verified) are covered by cp
	unchecked []Entry // entries [verified, ...) received, without their payloads: checked against the next checkpoint's time
	handed    int64   // entries handed out by Next
	cp        Checkpoint
}

// maxHeld bounds the payload a follower holds between receiving entries
// and handing them out. To verify entries it hashes all of them up to the
// head's checkpoint, which for a follower far behind (a late replica, a
// replay) is most of the stream: it keeps the first maxHeld bytes and
// fetches the rest again when it hands them out, each checked against its
// record hash in the verified tree.
const maxHeld = 8 << 20

// Follow starts reading stream from its beginning.
func (c *Client) Follow(ctx context.Context, stream string, trusted ed25519.PublicKey) (*Follower, error) {
	info, err := c.Info(ctx, stream)
	if err != nil {
		return nil, err
	}
	if info.Key != EncodeKey(trusted) {
		return nil, fmt.Errorf("%w: stream %s is signed by %s, not the trusted key %s", ErrBadLog, stream, info.Key, EncodeKey(trusted))
	}
	return &Follower{c: c, stream: stream, trusted: trusted}, nil
}

// Next returns the next verified entries, waiting up to wait for more;
// none (and no error) means none yet. A log that fails verification is an
// error: stop feeding the replica.
func (f *Follower) Next(ctx context.Context, wait time.Duration) ([]Entry, error) {
	if f.handed == f.verified {
		if err := f.fetch(ctx, wait); err != nil {
			return nil, err
		}
	}
	if len(f.entries) == 0 && f.handed < f.verified {
		if err := f.refetch(ctx); err != nil {
			return nil, err
		}
	}
	// f.entries holds entries from handed on; hand out the verified ones.
	k := min(f.verified-f.handed, int64(len(f.entries)))
	out := f.entries[:k:k]
	f.entries = f.entries[k:]
	for _, e := range out {
		f.held -= len(e.Payload)
	}
	f.handed += k
	return out, nil
}

// From returns a follower of f's stream that hands out entries from pos
// on (pos at most what f has verified). It starts from f's verified tree,
// so it verifies nothing f has verified again; the entries from pos on it
// fetches again, each checked against that tree. f goes on unchanged.
func (f *Follower) From(pos int64) (*Follower, error) {
	if pos < 0 || pos > f.verified {
		return nil, fmt.Errorf("follow %s from entry %d: only %d entries are verified", f.stream, pos, f.verified)
	}
	// The tree may run past what is verified (entries received after
	// the last checkpoint): their times are checked against the next
	// one, so g takes them too.
	g := &Follower{c: f.c, stream: f.stream, trusted: f.trusted, verified: f.verified, handed: pos, cp: f.cp,
		tree: Tree{hashes: slices.Clone(f.tree.hashes), size: f.tree.size}, unchecked: slices.Clone(f.unchecked)}
	if f.last != nil {
		last := *f.last
		g.last = &last
	}
	return g, nil
}

// refetch fetches again verified entries that were not kept (maxHeld),
// from handed on, checking each against the verified tree.
func (f *Follower) refetch(ctx context.Context) error {
	recs, err := f.c.Records(ctx, f.stream, f.handed, min(followBatch, f.verified-f.handed), 0)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return fmt.Errorf("%w: the log no longer serves entry %d, which it served before", ErrBadLog, f.handed)
	}
	for i, rec := range recs {
		seq := f.handed + int64(i)
		leaf, err := f.tree.ReadHashes([]int64{tlog.StoredHashIndex(0, seq)})
		if err != nil {
			return err
		}
		if tlog.RecordHash(rec) != leaf[0] {
			return fmt.Errorf("%w: entry %d differs from the one verified before", ErrBadLog, seq)
		}
		e, err := DecodeEntry(rec)
		if err != nil {
			return fmt.Errorf("%w: entry %d: %v", ErrBadLog, seq, err)
		}
		f.entries = append(f.entries, e)
		f.held += len(e.Payload)
	}
	return nil
}

func (f *Follower) fetch(ctx context.Context, wait time.Duration) error {
	if err := f.receive(ctx, wait); err != nil {
		return err
	}
	return f.verify(ctx)
}

// receive fetches and checks the next records.
func (f *Follower) receive(ctx context.Context, wait time.Duration) error {
	recs, err := f.c.Records(ctx, f.stream, f.tree.Size(), followBatch, wait)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		e, err := DecodeEntry(rec)
		if err != nil {
			return fmt.Errorf("%w: entry %d: %v", ErrBadLog, f.tree.Size(), err)
		}
		if e.Seq != uint64(f.tree.Size()) {
			return fmt.Errorf("%w: entry %d came with sequence number %d", ErrBadLog, f.tree.Size(), e.Seq)
		}
		if err := checkOrder(f.last, &e); err != nil {
			return fmt.Errorf("%w: %v", ErrBadLog, err)
		}
		f.tree.Append(rec)
		f.last = &e
		f.unchecked = append(f.unchecked, Entry{Seq: e.Seq, Time: e.Time})
		// Keep it if those before it are kept and there is room.
		if f.handed+int64(len(f.entries)) == f.tree.Size()-1 && f.held < maxHeld {
			f.entries = append(f.entries, e)
			f.held += len(e.Payload)
		}
	}
	return nil
}

// followBatch bounds the entries a follower fetches at once, and so its
// memory (entries are at most 1 MiB).
const followBatch = 16

// verify checks the stream's head checkpoint against what was received.
func (f *Follower) verify(ctx context.Context) error {
	info, err := f.c.Info(ctx, f.stream)
	if err != nil {
		return err
	}
	cp := info.Checkpoint
	if cp.Size <= f.verified {
		return nil
	}
	if cp.Stream != f.stream {
		return fmt.Errorf("%w: checkpoint of stream %q", ErrBadLog, cp.Stream)
	}
	if err := cp.Verify(f.trusted); err != nil {
		return fmt.Errorf("%w: %v", ErrBadLog, err)
	}
	if f.verified > 0 {
		p, err := f.c.Consistency(ctx, f.stream, f.cp.Size, cp.Size)
		if err != nil {
			return err
		}
		if err := tlog.CheckTree(p, cp.Size, cp.Root, f.cp.Size, f.cp.Root); err != nil {
			return fmt.Errorf("%w: checkpoint %d is not an extension of checkpoint %d: %v", ErrBadLog, cp.Size, f.cp.Size, err)
		}
	}
	for cp.Size > f.tree.Size() {
		// The checkpoint covers entries not fetched yet.
		n := f.tree.Size()
		if err := f.receive(ctx, 0); err != nil {
			return err
		}
		if f.tree.Size() == n {
			return fmt.Errorf("%w: the log's checkpoint covers %d entries but it serves only %d", ErrBadLog, cp.Size, n)
		}
	}
	root, err := f.tree.Root(cp.Size)
	if err != nil {
		return err
	}
	if root != cp.Root {
		return fmt.Errorf("%w: entries %d..%d do not match the signed checkpoint of size %d", ErrBadLog, f.verified, cp.Size-1, cp.Size)
	}
	n := cp.Size - f.verified
	if err := CheckTimes(f.cp, cp, f.unchecked[:n]); err != nil {
		return fmt.Errorf("%w: %v", ErrBadLog, err)
	}
	f.unchecked = f.unchecked[n:]
	f.verified, f.cp = cp.Size, cp
	return nil
}

// Checkpoint is the last verified checkpoint.
func (f *Follower) Checkpoint() Checkpoint { return f.cp }

// Root is the tree hash over the stream's first n entries, n at most the
// verified size: what a replica that read n entries reports against.
func (f *Follower) Root(n int64) (tlog.Hash, error) {
	if n > f.verified {
		return tlog.Hash{}, fmt.Errorf("root at size %d: only %d entries are verified", n, f.verified)
	}
	return f.tree.Root(n)
}

// Checkpoints fetches every signed checkpoint of the stream.
func (c *Client) Checkpoints(ctx context.Context, stream string) ([]Checkpoint, error) {
	var out struct{ Checkpoints []Checkpoint }
	err := c.do(ctx, "GET", streamPath(stream)+"/checkpoints", nil, &out)
	return out.Checkpoints, err
}
