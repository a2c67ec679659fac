//go:build linux

package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
)

// startLogd runs logd on an embedded etcd member for one test.
func startLogd(t *testing.T) *logd.Client {
	t.Helper()
	port := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	e, cl, err := logd.StartEmbedded(logd.Member{Dir: t.TempDir(), Client: "http://" + port(), Peer: "http://" + port(), Quiet: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(logd.NewServer(logd.NewStore(cl)))
	t.Cleanup(func() { srv.Close(); cl.Close(); e.Close() })
	return logd.NewClient(srv.URL)
}

func replicated(t *testing.T, stdin string, args ...string) (replicate.Verdict, string) {
	t.Helper()
	p := env.providers[0]
	var out bytes.Buffer
	v, err := replicate.Run(context.Background(), replicate.Options{
		Containerd: filepath.Join(p.dir, "containerd.sock"), Namespace: namespace, Image: probeImage, Args: args,
		Replicas: 3, Logd: startLogd(t), Stream: newID(t), Stdin: strings.NewReader(stdin), Stdout: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	return v, out.String()
}

// TestReplicatedRun: three replicas fed from the log agree, and the
// verified output is what a plain runc container prints for the same input.
func TestReplicatedRun(t *testing.T) {
	var in strings.Builder
	for i := 0; i < 60000; i++ {
		fmt.Fprintf(&in, "line %d\n", i)
	}
	cmd := []string{"/bin/busybox", "sh", "-c", "gzip -c | gzip -dc | sort -r | head -c 200000; exit 5"}
	v, out := replicated(t, in.String(), cmd...)
	if !v.Agreed || v.ExitCode != 5 || v.Log.State != "agree" {
		t.Fatalf("verdict %+v", v)
	}
	plain := env.providers[0].run(t, run{runtime: runcRuntime, args: cmd, stdin: in.String()})
	if out != plain.stdout || len(out) != 200000 {
		t.Errorf("verified output (%d bytes) differs from a plain runc run's (%d bytes)", len(out), len(plain.stdout))
	}
}

// TestReplicatedRunDiverges: replicas that read host counters differ; the
// run says so and logd's verifier agrees.
func TestReplicatedRunDiverges(t *testing.T) {
	v, _ := replicated(t, "", "/bin/busybox", "cat", "/proc/self/stat")
	if v.Agreed || v.Log.State != "diverged" || len(v.Odd) == 0 {
		t.Errorf("verdict %+v", v)
	}
}
