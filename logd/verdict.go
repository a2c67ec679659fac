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
// entries of a stream whose tree root was Root, signed by the replica.
type Report struct {
	Stream  string    `json:"stream"`
	Replica string    `json:"replica"`
	Key     string    `json:"key"` // the replica's ed25519 public key, base64
	Size    int64     `json:"size"`
	Root    tlog.Hash `json:"root"`
	Digest  string    `json:"digest"` // hex of the output digest chain at this point
	Sig     []byte    `json:"sig"`
}

func (r *Report) text() []byte {
	return []byte(fmt.Sprintf("lockstep-log digest v1\n%s\n%s\n%d\n%s\n%s\n", r.Stream, r.Replica, r.Size, r.Root, r.Digest))
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
	b, _ := json.Marshal(r)
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(p+"key"), "=", 0)).
		Then(clientv3.OpPut(p+"key", r.Key), clientv3.OpPut(p+fmt.Sprintf("%016x", r.Size), string(b))).
		Else(clientv3.OpGet(p + "key")).Commit()
	if err != nil || resp.Succeeded {
		return err
	}
	if got := string(resp.Responses[0].GetResponseRange().Kvs[0].Value); got != r.Key {
		return fmt.Errorf("replica %s reported before with key %s, not %s", r.Replica, got, r.Key)
	}
	_, err = s.kv.Put(ctx, p+fmt.Sprintf("%016x", r.Size), string(b))
	return err
}

// Verdict is the verifier's judgement of a stream's replicas.
type Verdict struct {
	State    string   `json:"state"` // "agree", "pending" or "diverged"
	Size     int64    `json:"size"`  // agree: the last size all agree on; diverged: the first differing checkpoint
	Replicas []string `json:"replicas"`
	Odd      []string `json:"odd,omitempty"` // diverged: the replicas outside the majority
	Detail   string   `json:"detail"`
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
	replicas := map[string]bool{}
	for _, kv := range resp.Kvs {
		if strings.HasSuffix(string(kv.Key), "/key") {
			continue
		}
		var r Report
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return Verdict{}, err
		}
		replicas[r.Replica] = true
		if bySize[r.Size] == nil {
			bySize[r.Size] = map[string]string{}
		}
		bySize[r.Size][r.Replica] = r.Digest
	}
	return judge(bySize, replicas, want), nil
}

func judge(bySize map[int64]map[string]string, replicas map[string]bool, want int) Verdict {
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
		votes := map[string][]string{}
		for r, d := range bySize[size] {
			votes[d] = append(votes[d], r)
		}
		if len(votes) > 1 {
			best, tie := "", false
			for d, rs := range votes {
				if best == "" || len(rs) > len(votes[best]) {
					best, tie = d, false
				} else if len(rs) == len(votes[best]) {
					tie = true
				}
			}
			v.State, v.Size = "diverged", size
			for d, rs := range votes {
				if d != best || tie {
					v.Odd = append(v.Odd, rs...)
				}
			}
			sort.Strings(v.Odd)
			v.Detail = fmt.Sprintf("replicas disagree at checkpoint size %d: %d different digests", size, len(votes))
			if tie {
				v.Detail += " and no majority"
			}
			return v
		}
		if len(bySize[size]) >= want {
			v.State, v.Size = "agree", size
		}
	}
	if v.State == "agree" {
		v.Detail = fmt.Sprintf("%d replicas agree up to size %d", want, v.Size)
	} else {
		v.Detail = fmt.Sprintf("fewer than %d replicas have reported", want)
	}
	return v
}
