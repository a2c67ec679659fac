//go:build linux

package integration

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/replicate"
)

// quoteAddr is where each provider host has a plain-text server of its
// own (its view of "the site"): a line in, a quote and the line out.
const quoteAddr = "10.213.9.1"

// quoteServer is the plain-text server: it answers each connection's
// first line with a quote and that line, and logs the connection.
const quoteServer = `import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000))
s.listen()
while True:
    c, a = s.accept()
    line = c.makefile("rb").readline()
    print("connection from", a[0], line.strip().decode(), flush=True)
    c.sendall(sys.argv[2].encode() + b"\n" + line)
    c.close()
`

// fetchByProviders: lockstep run --fetch providers on three provider
// hosts. Each host has its own server at quoteAddr, and host 2's says
// something else (its network lies). Every provider makes the connection
// once; the replicas print what the majority of the fetches read; the
// verdict says the mode and names host 2's fetch.
func fetchByProviders(t *testing.T, hosts []*host, logdURL string, addrs []string) {
	logs := make([]*lockedBuffer, len(hosts))
	for i, h := range hosts {
		sh(t, "ip", "-n", h.netns, "addr", "replace", quoteAddr+"/32", "dev", "lo")
		quote := "the quote of the day: determinism is a feature"
		if i == 2 {
			quote = "the quote of the day: trust me"
		}
		srv := exec.Command("ip", "netns", "exec", h.netns, "python3", "-u", "-c", quoteServer, quoteAddr, quote)
		logs[i] = &lockedBuffer{}
		srv.Stdout, srv.Stderr = logs[i], logs[i]
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	}
	for i, h := range hosts {
		for try := 0; exec.Command("ip", "netns", "exec", h.netns, "python3", "-c", "import socket; socket.create_connection(('"+quoteAddr+"', 7000), 1).close()").Run() != nil; try++ {
			if try == 50 {
				t.Fatalf("host %d's server did not start: %s", i, logs[i])
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	args := []string{"run", "--json", "--logd", logdURL, "--key", hostKey, "--fetch", "providers", "--allow-net", quoteAddr + ":7000"}
	for _, a := range addrs {
		args = append(args, "--provider", a)
	}
	out, errs, code := runCLI(t, "", nil, append(args, probeImage, "--", "/bin/busybox", "sh", "-c", "echo hello | /bin/busybox nc "+quoteAddr+" 7000")...)
	var v replicate.Verdict
	i := strings.Index(errs, "{")
	if i < 0 || json.Unmarshal([]byte(errs[i:]), &v) != nil {
		t.Fatalf("exit %d, no verdict: %s", code, errs)
	}
	t.Logf("output %q; egress %+v", out, v.Egress)
	if code != 0 || !v.Agreed || out != "the quote of the day: determinism is a feature\nhello\n" {
		t.Fatalf("exit %d, output %q, verdict %s: %s", code, out, states(v), v.Detail)
	}
	if e := v.Egress; e == nil || e.Mode != "providers" || e.Connections != 1 || len(e.Odd) != 1 || !strings.HasPrefix(e.Odd[0], hostPort(addrs[2])+": it read other bytes") {
		t.Errorf("the verdict's egress: %+v", e)
	}
	for i := range hosts {
		// Each host's server saw the one connection its provider made,
		// with the line the replicas sent (and the test's own probe).
		if n := strings.Count(logs[i].String(), "connection from "+quoteAddr+" hello\n"); n != 1 {
			t.Errorf("host %d's server: %d connections:\n%s", i, n, logs[i])
		}
	}
}
