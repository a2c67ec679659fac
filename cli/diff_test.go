package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"

	"github.com/lockstep-run/lockstep/ebpf"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/logd/wire"
)

// TestDiffFromLogd: lockstep diff --logd compares the traces replicas'
// shims reported, and says so when a replica has reported none.
func TestDiffFromLogd(t *testing.T) {
	url := startLogd(t)
	c := logd.NewClient(url)
	ctx := context.Background()
	pub, _, _ := ed25519.GenerateKey(nil)
	if err := c.Create(ctx, "svc", pub); err != nil {
		t.Fatal(err)
	}
	chain := func(flip bool) json.RawMessage {
		cs := ebpf.NewChains(4)
		data := []byte("0123456789ab")
		if flip {
			data[9] = 'X'
		}
		cs.Write("pid 1 fd 1", data)
		b, _ := json.Marshal(cs.Finish())
		return b
	}
	for i, flip := range []bool{false, false, true} {
		_, k, _ := ed25519.GenerateKey(nil)
		tr := wire.Trace{Stream: "svc", Replica: []string{"r0", "r1", "r2"}[i], Checkpoints: chain(flip)}
		tr.Sign(k)
		if err := c.Trace(ctx, tr); err != nil {
			t.Fatal(err)
		}
	}
	diff := func(args ...string) (string, string, int) {
		var o, e bytes.Buffer
		code := diffMain(append([]string{"--logd", url, "--stream", "svc"}, args...), &o, &e)
		return o.String(), e.String(), code
	}
	if out, errs, code := diff("r0", "r1"); code != 0 || !strings.HasPrefix(out, "identical: 3 checkpoints") {
		t.Errorf("r0 r1: exit %d: %s%s", code, out, errs)
	}
	if out, errs, code := diff("r0", "r2"); code != 1 || !strings.Contains(out, "pid 1 fd 1: first difference at checkpoint 2, bytes 8..12") {
		t.Errorf("r0 r2: exit %d: %s%s", code, out, errs)
	}
	if _, errs, code := diff("r0", "r9"); code != exitUsage || !strings.Contains(errs, "reported no trace") {
		t.Errorf("no trace: exit %d: %s", code, errs)
	}
}
