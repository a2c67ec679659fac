package replicate

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lockstep-run/lockstep/logd"
)

// Options describe a replicated run.
type Options struct {
	Providers  []Provider // replicas are placed on them in turn
	Image      string
	Args       []string // the command; nil: the image's
	Replicas   int
	Seed       uint64
	Logd       *logd.Client // the input log
	Stream     string
	Stdin      io.Reader
	Stdout     io.Writer
	Checkpoint int // compare outputs every this many bytes (default 64 KiB)
	// Window is how many entries the log may run ahead of what a majority
	// of the replicas has read (default 64): stdin is read no faster.
	Window int
	// TickEvery is the log clock's resolution: while a replica waits for
	// a time past the log's, a tick entry is appended once the clock passes
	// that time, no sooner than TickEvery after the entry before (default
	// 10 ms). No replica waiting: no tick.
	TickEvery time.Duration
	// Progress, if set, gets a status line now and then.
	Progress func(Progress)

	// Require names sources every replica's host must make deterministic
	// (hostcap); a provider whose host cannot refuses the job.
	Require []string

	// Replay, if set, is a recorded stream already imported into Logd:
	// the replicas read it instead of a new stream fed from Stdin.
	Replay *logd.Verified

	// Join, if set, names the one replica that joins Stream, a stream
	// already in Logd (lockstep serve --join): it reads the stream from
	// its start and follows it as its guard appends; nothing is appended
	// here. Key is the stream's key (logd.EncodeKey) to trust, as
	// StreamConfig returns it.
	Join string
	Key  string

	// StreamKey, if set, signs the new stream (default: a key made for
	// it), so that a guard that stops can resume it (lockstep serve
	// --state). Resume, if set, is such a stream, read back: the run
	// appends to it, after closing what was open (Resumed), and its
	// replicas read it from its start. NameFrom numbers the replicas
	// from replica-NameFrom on (the names a stream's reports already
	// hold are not taken again).
	StreamKey ed25519.PrivateKey
	Resume    *Resumed
	NameFrom  int

	// Entries, if set, is the input instead of Stdin: a served stream's
	// entries (lockstep serve), made in order of their times; its close
	// ends the input (no eof entry is added).
	Entries <-chan logd.Entry
	// Port is the service's port in each replica (Job.Port), and Net
	// takes the replicas' responses on it.
	Port int
	Net  Responder

	// Digest, if set, is the image's manifest digest: a provider whose
	// image differs refuses the job. Run sets it from a Local provider's
	// containerd where it can, and writes it in the log's config entry.
	Digest string
}

// Responder takes what the replicas' services send on served
// connections (lockstep serve's gateway votes on it), and their
// programs' requests to connect out of the run (Dial: egress) and what
// they send on such connections. Replicas are numbered as in the verdict
// (replica-N); Gone says one ended.
type Responder interface {
	Response(replica int, conn uint64, p []byte)
	Finished(replica int, conn uint64)
	Dial(replica int, conn uint64, to string)
	Gone(replica int)
}

// Progress is how far a run has come.
type Progress struct {
	In, Out int64 // bytes appended to the log, bytes of verified output
	Running int
}

// Verdict is how the run ended. Agreed: a majority agrees and no replica
// differs from it (replicas whose provider failed are Lost, not counted).
type Verdict struct {
	Agreed   bool            `json:"agreed"`
	ExitCode int             `json:"exit_code"` // the majority's
	Bytes    int64           `json:"bytes"`     // verified output bytes
	Odd      []string        `json:"odd,omitempty"`
	Lost     []string        `json:"lost,omitempty"` // replicas whose provider failed
	Replicas []ReplicaReport `json:"replicas"`
	Detail   string          `json:"detail"`
	Log      logd.Verdict    `json:"log_verdict"` // logd's verifier, from the providers' signed reports
	// Leaks: replica -> the sources its host could not make deterministic.
	Leaks map[string][]string `json:"leaks,omitempty"`
	// HostLimited: the replicas differ, and hosts that could not make a
	// source deterministic can explain it: no replica is named odd for it.
	HostLimited bool `json:"host_limited,omitempty"`
	// Egress says how the run's outbound connections were made, if it
	// made any (docs/egress.md).
	Egress *Egress `json:"egress,omitempty"`
}

// Egress is how a run's outbound connections were made.
type Egress struct {
	// Mode is "guard" (the guard made each once) or "providers" (every
	// replica's provider made each; the replicas got what a majority of
	// the fetches got).
	Mode        string `json:"mode"`
	Connections int64  `json:"connections"`
	// Odd: the fetches that differed from the majority's, and the
	// connections on which no majority of the fetches agreed.
	Odd []string `json:"odd,omitempty"`
}

// ReplicaReport is one replica's part in the verdict.
type ReplicaReport struct {
	Name     string   `json:"name"`
	Provider string   `json:"provider"`
	State    string   `json:"state"` // "agreed", "odd", "differs" (HostLimited), "lost" or "stopped" (no majority)
	Bytes    int64    `json:"bytes"` // output received
	Exit     int      `json:"exit"`
	Digest   string   `json:"digest,omitempty"`
	Why      string   `json:"why,omitempty"`
	Leaks    []string `json:"leaks,omitempty"` // what its host could not make deterministic
	// Stderr is the first MaxStderr bytes of its stderr (shown, not
	// voted: the vote is on stdout and the exit status).
	Stderr    string `json:"stderr,omitempty"`
	StderrCut bool   `json:"stderr_cut,omitempty"`
}

// ErrStdout is the run's end when its stdout fails (a closed pipe).
var ErrStdout = errors.New("stdout closed")

// Run runs the replicas to their end.
func Run(ctx context.Context, o Options) (Verdict, error) {
	if o.Replicas < 1 {
		return Verdict{}, errors.New("want at least one replica")
	}
	if len(o.Providers) == 0 {
		return Verdict{}, errors.New("no provider to run replicas on")
	}
	if o.Checkpoint <= 0 {
		o.Checkpoint = 64 << 10
	}
	if o.Window <= 0 {
		o.Window = 64
	}
	if o.TickEvery <= 0 {
		o.TickEvery = 10 * time.Millisecond
	}
	if o.Digest == "" && o.Replay == nil && o.Join == "" && o.Resume == nil {
		o.Digest = imageDigest(ctx, o.Providers, o.Image)
	}
	key, app, err := openLog(ctx, &o)
	if err != nil {
		return Verdict{}, err
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	v := newVoter(o, cancel)
	var wg sync.WaitGroup
	for i, r := range v.reps {
		j := Job{Replica: r.name, Stream: o.Stream, Key: key, Image: o.Image, Digest: o.Digest, Args: o.Args, Require: o.Require, Port: o.Port, Replace: o.Resume != nil}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := o.Providers[i%len(o.Providers)].Run(ctx, j, r)
			r.finish(res, err)
			if o.Net != nil {
				o.Net.Gone(i)
			}
			v.changed()
		}()
	}
	appended := make(chan error, 1) // the feeding of the log failed
	fed := make(chan struct{})      // the feeding of the log ended
	over := make(chan struct{})     // the replicas ended: the log ends too
	if app != nil {
		go func() {
			defer close(fed)
			if err := feedLog(ctx, app, o, v, over); err != nil {
				appended <- err
			}
		}()
	} else {
		close(fed)
	}
	replicasDone := make(chan struct{})
	go func() { wg.Wait(); close(replicasDone) }()
	err = v.loop(replicasDone, appended)
	close(over)
	<-fed
	if err != nil {
		cancel()
		<-replicasDone
		return Verdict{}, err
	}
	if parent.Err() != nil {
		return Verdict{}, fmt.Errorf("%w: the replicas were stopped and removed", ErrInterrupted)
	}
	if err := v.noneRan(); err != nil {
		return Verdict{}, err
	}
	out := v.verdict()
	// logd's verifier judges the providers' signed reports too.
	reported := 0
	for _, r := range v.reps {
		if r.err == nil {
			reported++
		}
	}
	if reported > 0 {
		if out.Log, err = o.Logd.Verdict(context.WithoutCancel(ctx), o.Stream, reported); err != nil {
			return out, err
		}
	}
	return out, nil
}

// voter releases the output a majority agrees on, checkpoint by
// checkpoint, and feeds the log no faster than a majority reads it.
type voter struct {
	reps     []*replica
	need     int
	k        int64
	out      io.Writer
	progress func(Progress)
	cancel   func()
	wake     chan struct{}
	waits    chan struct{} // a replica asked for a time (waiting)

	wantMu sync.Mutex
	wanted []int64 // deadlines replicas wait for, past the log's time, ascending

	mu    sync.Mutex
	room  *sync.Cond
	in    int64
	sent  int64  // bytes released
	fault string // the first disagreement, or why the run stopped
	over  bool   // no majority can form: the run was stopped

	// sums are the SHA-256 digests of the released checkpoints, in order
	// (32 bytes for each Checkpoint bytes of output): a replica that was
	// behind the majority is checked against them, checkpoint by
	// checkpoint, when its output arrives. Only the loop touches them.
	// sumsFrom is the checkpoint of sums[0]: earlier ones, which every
	// replica still voting has passed, are dropped.
	sums     [][sha256.Size]byte
	sumsFrom int64
}

func newVoter(o Options, cancel func()) *voter {
	v := &voter{need: o.Replicas/2 + 1, k: int64(o.Checkpoint), out: o.Stdout, progress: o.Progress, cancel: cancel, wake: make(chan struct{}, 1), waits: make(chan struct{}, 1)}
	v.room = sync.NewCond(&v.mu)
	for i := 0; i < o.Replicas; i++ {
		name := fmt.Sprintf("replica-%d", o.NameFrom+i)
		if o.Join != "" {
			name = o.Join
		}
		r := &replica{
			name:     name,
			index:    i,
			net:      o.Net,
			provider: o.Providers[i%len(o.Providers)].Name(),
			limit:    4 * o.Checkpoint,
			digest:   NewDigest(),
			changed:  v.changed,
			wait:     v.waiting,
		}
		r.cond = sync.NewCond(&r.mu)
		v.reps = append(v.reps, r)
	}
	return v
}

func (v *voter) changed() {
	select {
	case v.wake <- struct{}{}:
	default:
	}
	v.mu.Lock() // a waitRoom between its check and its Wait must not miss this
	v.mu.Unlock()
	v.room.Broadcast()
}

// waiting notes that a replica waits for the log's time to reach
// deadline (Unix ns).
func (v *voter) waiting(deadline int64) {
	v.wantMu.Lock()
	i, found := slices.BinarySearch(v.wanted, deadline)
	if !found {
		v.wanted = slices.Insert(v.wanted, i, deadline)
	}
	v.wantMu.Unlock()
	select {
	case v.waits <- struct{}{}:
	default:
	}
}

// nextWait is the earliest deadline a replica waits for.
func (v *voter) nextWait() (int64, bool) {
	v.wantMu.Lock()
	defer v.wantMu.Unlock()
	if len(v.wanted) == 0 {
		return 0, false
	}
	return v.wanted[0], true
}

// ticked notes that the log's time reached t: waits up to it are over.
func (v *voter) ticked(t int64) {
	v.wantMu.Lock()
	i, found := slices.BinarySearch(v.wanted, t)
	if found {
		i++
	}
	v.wanted = v.wanted[i:]
	v.wantMu.Unlock()
}

func (v *voter) addIn(n int64) {
	v.mu.Lock()
	v.in += n
	v.mu.Unlock()
}

// waitRoom waits until a majority of the replicas has read entries up to
// seq, or has ended, or the run is over.
func (v *voter) waitRoom(ctx context.Context, seq int64) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for {
		if v.over || ctx.Err() != nil {
			return context.Canceled
		}
		n := 0
		for _, r := range v.reps {
			r.mu.Lock()
			if r.consumed >= seq || r.done {
				n++
			}
			r.mu.Unlock()
		}
		if n >= v.need {
			return nil
		}
		v.room.Wait()
	}
}

// loop runs the vote until the replicas have ended (or no majority can
// form); appended reports the end of the feeding of the log.
func (v *voter) loop(replicasDone chan struct{}, appended chan error) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if err := v.release(); err != nil {
			v.stop(err.Error())
			return err
		}
		select {
		case <-replicasDone:
			err := v.release()
			v.stop("")
			return err
		case err := <-appended:
			if err != nil && !errors.Is(err, context.Canceled) {
				v.stop(err.Error())
				return fmt.Errorf("input log: %w", err)
			}
		case <-v.wake:
		case <-tick.C:
			v.report()
		}
	}
}

// stop ends the vote: no replica waits for it any more.
func (v *voter) stop(why string) {
	v.mu.Lock()
	if why != "" && !v.over {
		v.over, v.fault = true, why
	}
	v.mu.Unlock()
	for _, r := range v.reps {
		r.close()
	}
	if why != "" {
		v.cancel()
	}
	v.room.Broadcast()
}

func (v *voter) report() {
	if v.progress == nil {
		return
	}
	p := Progress{}
	v.mu.Lock()
	p.In, p.Out = v.in, v.sent
	v.mu.Unlock()
	for _, r := range v.reps {
		r.mu.Lock()
		if !r.done {
			p.Running++
		}
		r.mu.Unlock()
	}
	v.progress(p)
}

// release writes out the next checkpoints a majority agrees on. Replicas
// that differ from the majority leave the vote; if no majority can form
// any more, the run stops.
func (v *voter) release() error {
	v.checkLate()
	for {
		v.mu.Lock()
		sent, over := v.sent, v.over
		v.mu.Unlock()
		if over {
			return nil
		}
		end := sent + v.k
		// The segments are read in place: only this loop moves a
		// replica's unchecked output (release), and a Write only appends.
		var votes []*ballot
		waiting := 0 // in the vote, without all of this checkpoint yet
		for _, r := range v.reps {
			r.mu.Lock()
			out := r.odd != "" || (r.done && r.err != nil)
			r.mu.Unlock()
			if out {
				continue
			}
			seg, ok := r.vote(sent, end)
			if !ok {
				waiting++
				continue
			}
			votes = cast(votes, seg, r)
		}
		best := &ballot{}
		for _, b := range votes {
			if len(b.who) > len(best.who) || (len(b.who) == len(best.who) && bytes.Compare(b.seg, best.seg) > 0) {
				best = b
			}
		}
		if len(best.who) < v.need {
			if len(best.who)+waiting < v.need {
				v.mu.Lock()
				v.over = true
				v.fault = fmt.Sprintf("no majority for output bytes %d..%d: %s", sent, end, describe(votes))
				v.mu.Unlock()
				v.cancel()
				for _, r := range v.reps {
					r.close()
				}
			}
			return nil
		}
		for _, b := range votes {
			if b != best {
				v.odd(b.who, fmt.Sprintf("the checkpoint of bytes %d..%d: %s", sent, end, firstDiff(sent, best.seg, b.seg)))
			}
		}
		if len(best.seg) == 0 {
			return nil // the majority's output has ended here
		}
		if _, err := v.out.Write(best.seg); err != nil {
			return fmt.Errorf("%w: %v", ErrStdout, err)
		}
		v.sums = append(v.sums, sha256.Sum256(best.seg))
		v.mu.Lock()
		v.sent += int64(len(best.seg))
		v.mu.Unlock()
		for _, r := range best.who {
			r.release(sent + int64(len(best.seg)))
		}
	}
}

// ballot is one output for a checkpoint and the replicas that gave it.
type ballot struct {
	seg []byte
	who []*replica
}

// cast adds r's vote for seg.
func cast(votes []*ballot, seg []byte, r *replica) []*ballot {
	for _, b := range votes {
		if bytes.Equal(b.seg, seg) {
			b.who = append(b.who, r)
			return votes
		}
	}
	return append(votes, &ballot{seg: seg, who: []*replica{r}})
}

// checkLate checks the output of replicas that were behind the majority
// when it was released, checkpoint by checkpoint, against the digests of
// what was released; a replica that differs leaves the vote.
func (v *voter) checkLate() {
	v.mu.Lock()
	sent := v.sent
	v.mu.Unlock()
	for _, r := range v.reps {
		for {
			r.mu.Lock()
			if r.odd != "" || r.closed || r.base >= sent {
				r.mu.Unlock()
				break
			}
			from := r.base
			end := min(from+v.k, sent)
			have := from + int64(len(r.buf))
			if have < end && !r.done {
				r.mu.Unlock()
				break
			}
			same := sha256.Sum256(r.buf[:min(end, have)-from]) == v.sums[from/v.k-v.sumsFrom]
			r.mu.Unlock()
			if !same {
				v.odd([]*replica{r}, fmt.Sprintf("the checkpoint of bytes %d..%d (it was behind the majority, and is checked against the digest of what was released)", from, end))
				break
			}
			r.release(end)
		}
	}
	v.trimSums()
}

// trimSums drops the digests of the checkpoints that every replica still
// voting has passed: they keep only what the slowest one needs.
func (v *voter) trimSums() {
	low := v.sumsFrom + int64(len(v.sums))
	for _, r := range v.reps {
		r.mu.Lock()
		if r.odd == "" && !r.closed {
			low = min(low, r.base/v.k)
		}
		r.mu.Unlock()
	}
	if n := low - v.sumsFrom; n > 0 {
		v.sums = v.sums[n:] // append copies only the rest when it grows
		v.sumsFrom = low
	}
}

// odd takes replicas out of the vote for differing at a checkpoint.
func (v *voter) odd(who []*replica, where string) {
	v.mu.Lock()
	if v.fault == "" {
		v.fault = fmt.Sprintf("%s differ from the majority at %s", names(who), where)
	}
	v.mu.Unlock()
	for _, r := range who {
		r.drop("its output differs from the majority's at " + where)
	}
}

// firstDiff says where got first differs from want, which start at byte
// off of the output, and shows up to 16 bytes of each from there.
func firstDiff(off int64, want, got []byte) string {
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	show := func(who string, b []byte) string {
		if i >= len(b) {
			return who + "'s output ends there"
		}
		return fmt.Sprintf("%s has %q", who, b[i:min(len(b), i+16)])
	}
	return fmt.Sprintf("first difference at byte %d: %s, %s", off+int64(i), show("the majority", want), show("the replica", got))
}

func describe(votes []*ballot) string {
	var parts []string
	for _, b := range votes {
		parts = append(parts, fmt.Sprintf("%s (%d bytes)", names(b.who), len(b.seg)))
	}
	sort.Strings(parts)
	return strings.Join(parts, " vs ")
}

func names(rs []*replica) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.name+" on "+r.provider)
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}
