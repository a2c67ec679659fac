package logd

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/mod/sumdb/tlog"
)

// Report is a replica's output digest after it consumed the first Size
// entries of a stream whose tree root was Root, signed by the replica. A
// final report is made when the replica's run ended: its digest covers
// all of the output and the exit status, and it is compared with the other
// replicas' final reports whatever their sizes, since a program that exits
// before the end of its input may have been handed more or fewer entries
// than it read, depending on timing.
type Report struct {
	Stream  string    `json:"stream"`
	Replica string    `json:"replica"`
	Key     string    `json:"key"` // the replica's ed25519 public key, base64
	Size    int64     `json:"size"`
	Root    tlog.Hash `json:"root"`
	Digest  string    `json:"digest"` // hex of the output digest chain at this point
	Final   bool      `json:"final,omitempty"`
	// Leaks are the sources the replica's host cannot make deterministic
	// (hostcap: rdtsc, cpuid), so that a verifier does not take a
	// difference they explain for a cheating replica.
	Leaks []string `json:"leaks,omitempty"`
	Sig   []byte   `json:"sig"`
}

func (r *Report) text() []byte {
	t := fmt.Sprintf("lockstep-log digest v1\n%s\n%s\n%d\n%s\n%s\n", r.Stream, r.Replica, r.Size, r.Root, r.Digest)
	if r.Final {
		t += "final\n"
	}
	if len(r.Leaks) > 0 {
		t += "leaks " + strings.Join(r.Leaks, ",") + "\n"
	}
	return []byte(t)
}

// Sign signs r with the replica's key.
func (r *Report) Sign(k ed25519.PrivateKey) {
	r.Key = EncodeKey(k.Public().(ed25519.PublicKey))
	r.Sig = ed25519.Sign(k, r.text())
}

// Report stores a replica's signed digest. The replica's key is fixed by
// its first report; the root must be the stream's root at that size, so a
// log server cannot show different logs to different replicas unnoticed.
func (s *Store) Report(ctx context.Context, r Report) error {
	if err := validName(r.Replica); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	key, err := DecodeKey(r.Key)
	if err != nil {
		return err
	}
	if !ed25519.Verify(key, r.text(), r.Sig) {
		return fmt.Errorf("digest report of %s at size %d: bad signature", r.Replica, r.Size)
	}
	c, err := s.hashes(ctx, r.Stream, r.Size, false)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.Size < 1 || r.Size > c.size {
		return fmt.Errorf("digest report at size %d: the stream has %d entries", r.Size, c.size)
	}
	root, err := tlog.TreeHash(r.Size, c)
	if err != nil {
		return err
	}
	if root != r.Root {
		return fmt.Errorf("replica %s ran against root %s at size %d, but the log's root is %s: it was fed another log", r.Replica, r.Root, r.Size, root)
	}
	p := prefix(r.Stream) + "d/" + r.Replica + "/"
	at := p + fmt.Sprintf("%016x", r.Size)
	if r.Final {
		at = p + "final"
	}
	b, _ := json.Marshal(r)
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(p+"key"), "=", 0)).
		Then(clientv3.OpPut(p+"key", r.Key), clientv3.OpPut(at, string(b))).
		Else(clientv3.OpGet(p+"key"), clientv3.OpGet(p+"final")).Commit()
	if err != nil || resp.Succeeded {
		return err
	}
	if got := string(resp.Responses[0].GetResponseRange().Kvs[0].Value); got != r.Key {
		return fmt.Errorf("replica %s reported before with key %s, not %s", r.Replica, got, r.Key)
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; r.Final && len(kvs) > 0 {
		var old Report
		if json.Unmarshal(kvs[0].Value, &old) == nil && old.Size == r.Size && old.Digest == r.Digest {
			return nil // the same report again
		}
		return fmt.Errorf("replica %s already made its final report (digest %s at size %d)", r.Replica, old.Digest, old.Size)
	}
	_, err = s.kv.Put(ctx, at, string(b))
	return err
}

// Verdict is the verifier's judgement of a stream's replicas.
type Verdict struct {
	State    string   `json:"state"` // "agree", "pending" or "diverged"
	Size     int64    `json:"size"`  // agree: the last size all agree on; diverged: the first differing checkpoint
	Final    bool     `json:"final"` // the verdict is on the final reports: the replicas' whole runs
	Replicas []string `json:"replicas"`
	Odd      []string `json:"odd,omitempty"` // diverged: the replicas outside the majority
	Detail   string   `json:"detail"`
	// Leaks: replica -> the sources its host could not make deterministic.
	// Where a diverged verdict has any, the difference may be the hosts'.
	Leaks map[string][]string `json:"leaks,omitempty"`
}

// Verdict compares the replicas' digests at each reported size. want is
// the number of replicas expected; fewer reports at a size leave it
// pending.
func (s *Store) Verdict(ctx context.Context, stream string, want int) (Verdict, error) {
	p := prefix(stream) + "d/"
	resp, err := s.kv.Get(ctx, p, clientv3.WithPrefix())
	if err != nil {
		return Verdict{}, err
	}
	bySize := map[int64]map[string]string{} // size -> replica -> digest
	finals := map[string]string{}           // replica -> final digest
	replicas := map[string]bool{}
	leaks := map[string][]string{}
	for _, kv := range resp.Kvs {
		if strings.HasSuffix(string(kv.Key), "/key") {
			continue
		}
		var r Report
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return Verdict{}, err
		}
		replicas[r.Replica] = true
		if len(r.Leaks) > 0 {
			leaks[r.Replica] = r.Leaks
		}
		if r.Final {
			finals[r.Replica] = r.Digest
			continue
		}
		if bySize[r.Size] == nil {
			bySize[r.Size] = map[string]string{}
		}
		bySize[r.Size][r.Replica] = r.Digest
	}
	v := judge(bySize, finals, replicas, want)
	if len(leaks) > 0 {
		v.Leaks = leaks
		if v.State == "diverged" {
			v.Detail += "; " + HostLimited(leaks)
		}
	}
	return v, nil
}

// HostLimited says that a difference between replicas may be their hosts'
// doing: leaks maps replicas to what their hosts cannot make
// deterministic.
func HostLimited(leaks map[string][]string) string {
	return LeakList(leaks) + ": the difference may be the hosts', so no replica is named a cheater (lockstep doctor; --require refuses such hosts)"
}

// LeakList says which replicas' hosts could not make what deterministic.
func LeakList(leaks map[string][]string) string {
	var who []string
	for r, l := range leaks {
		who = append(who, r+" ("+strings.Join(l, ", ")+")")
	}
	sort.Strings(who)
	return "the hosts of " + strings.Join(who, ", ") + " cannot make these sources deterministic"
}

// judge compares the reports at each size in order; the first size where
// digests differ is the verdict. Otherwise, once want replicas have made
// their final reports, those are compared.
func judge(bySize map[int64]map[string]string, finals map[string]string, replicas map[string]bool, want int) Verdict {
	v := Verdict{State: "pending"}
	for r := range replicas {
		v.Replicas = append(v.Replicas, r)
	}
	sort.Strings(v.Replicas)
	sizes := make([]int64, 0, len(bySize))
	for s := range bySize {
		sizes = append(sizes, s)
	}
	sort.Slice(sizes, func(i, j int) bool { return sizes[i] < sizes[j] })
	for _, size := range sizes {
		if odd, n := majority(bySize[size]); odd != nil {
			v.State, v.Size, v.Odd = "diverged", size, odd
			v.Detail = fmt.Sprintf("replicas disagree at checkpoint size %d: %d different digests", size, n)
			if len(odd) == len(bySize[size]) {
				v.Detail += " and no majority"
			}
			return v
		}
		if len(bySize[size]) >= want {
			v.State, v.Size = "agree", size
		}
	}
	if len(finals) >= want {
		v.Final = true
		if odd, n := majority(finals); odd != nil {
			v.State, v.Odd = "diverged", odd
			v.Detail = fmt.Sprintf("the replicas' final digests (all output and the exit status) disagree: %d different digests", n)
			if len(odd) == len(finals) {
				v.Detail += " and no majority"
			}
			return v
		}
		v.State = "agree"
		v.Detail = fmt.Sprintf("%d replicas' final digests (all output and the exit status) agree", len(finals))
		return v
	}
	if v.State == "agree" {
		v.Detail = fmt.Sprintf("%d replicas agree up to size %d", want, v.Size)
	} else {
		v.Detail = fmt.Sprintf("fewer than %d replicas have reported", want)
	}
	return v
}

// majority returns the replicas outside the majority of digests (all of
// them when no digest has more votes than every other) and the number of
// different digests; odd is nil when all agree.
func majority(digests map[string]string) (odd []string, n int) {
	votes := map[string][]string{}
	for r, d := range digests {
		votes[d] = append(votes[d], r)
	}
	if len(votes) < 2 {
		return nil, len(votes)
	}
	best, tie := "", false
	for d, rs := range votes {
		if best == "" || len(rs) > len(votes[best]) {
			best, tie = d, false
		} else if len(rs) == len(votes[best]) {
			tie = true
		}
	}
	for d, rs := range votes {
		if d != best || tie {
			odd = append(odd, rs...)
		}
	}
	sort.Strings(odd)
	return odd, len(votes)
}
