//go:build linux

package integration

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/replicate"
)

// quoteAddr is where each provider host has a plain-text server of its
// own (its view of "the site"): a line in, a quote and the line out.
const quoteAddr = "10.213.9.1"

// quoteServer is the plain-text server (argv: address, port and
// optionally the quote): it answers each connection's first line with a
// quote and that line, and logs the connection.
const quoteServer = `import socket, sys
quote = sys.argv[3] if len(sys.argv) > 3 else "the quote of the day: determinism is a feature"
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
while True:
    c, a = s.accept()
    line = c.makefile("rb").readline()
    print("connection from", a[0], line.strip().decode(), flush=True)
    c.sendall(quote.encode() + b"\n" + line)
    c.close()
`

// fetchByProviders: lockstep run --fetch providers on three provider
// hosts. Each host has its own server at quoteAddr, and host 2's says
// something else (its network lies). Providers not told to fetch
// (--allow-fetch) refuse; those that are each make the connection once; the replicas print what the majority of the fetches read; the
// verdict says the mode and names host 2's fetch.
func fetchByProviders(t *testing.T, hosts []*host, logdURL string, addrs []string) {
	logs := make([]*lockedBuffer, len(hosts))
	for i, h := range hosts {
		sh(t, "ip", "-n", h.netns, "addr", "replace", quoteAddr+"/32", "dev", "lo")
		quote := "the quote of the day: determinism is a feature"
		if i == 2 {
			quote = "the quote of the day: trust me"
		}
		srv := exec.Command("ip", "netns", "exec", h.netns, "python3", "-u", "-c", quoteServer, quoteAddr, "7000", quote)
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
	run := func(addrs []string) (string, string, int) {
		args := []string{"run", "--json", "--logd", logdURL, "--key", hostKey, "--fetch", "providers", "--allow-net", quoteAddr + ":7000"}
		for _, a := range addrs {
			args = append(args, "--provider", a)
		}
		return runCLI(t, "", nil, append(args, probeImage, "--", "/bin/busybox", "sh", "-c", "echo hello | /bin/busybox nc "+quoteAddr+" 7000")...)
	}
	// Providers started without --allow-fetch make no connection: the
	// connect is refused on every replica, and lockstep says why.
	out, errs, code := run(addrs)
	if code != 1 || out != "" || !strings.Contains(errs, "the fetch by "+hostPort(addrs[0])+" failed") || !strings.Contains(errs, "--allow-fetch") {
		t.Fatalf("a fetch by providers that make none: exit %d, output %q:\n%s", code, out, errs)
	}
	t.Logf("providers without --allow-fetch:\n%s", errs[:strings.Index(errs, "{")])
	var fetching []string
	for _, h := range hosts {
		fetching = append(fetching, h.serve(t, 7442, h.name+"-fetching", logdURL, "--allow-fetch", quoteAddr+":7000"))
	}
	out, errs, code = run(fetching)
	var v replicate.Verdict
	i := strings.Index(errs, "{")
	if i < 0 || json.Unmarshal([]byte(errs[i:]), &v) != nil {
		t.Fatalf("exit %d, no verdict: %s", code, errs)
	}
	t.Logf("output %q; egress %+v", out, v.Egress)
	if code != 0 || !v.Agreed || out != "the quote of the day: determinism is a feature\nhello\n" {
		t.Fatalf("exit %d, output %q, verdict %s: %s", code, out, states(v), v.Detail)
	}
	if e := v.Egress; e == nil || e.Mode != "providers" || e.Connections != 1 || len(e.Odd) != 1 || !strings.HasPrefix(e.Odd[0], hostPort(fetching[2])+": it read other bytes") {
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

// TestEgressFetchProviders: --fetch providers on the local containerd:
// each of the three replicas' provider (here the same host) makes the
// connection, so the server sees three, with the line the replicas sent;
// every replica prints the reply; the verdict says the mode; the log
// records the fetches, and a replay with the server gone reproduces the
// run from the log.
func TestEgressFetchProviders(t *testing.T) {
	startWeb(t, t.TempDir())
	got := startPythonServers(t, quoteServer, "7000")
	log := filepath.Join(t.TempDir(), "fetch.log")
	common := []string{"--address", filepath.Join(env.providers[0].dir, "containerd.sock"), "--namespace", namespace}
	cmd := []string{probeImage, "--", "/bin/busybox", "sh", "-c", "echo hello | /bin/busybox nc " + webAddr + " 7000"}
	out, errs, code := runCLI(t, "", nil, append(append([]string{"run", "--fetch", "providers", "--allow-net", webAddr + ":7000", "--record", log}, common...), cmd...)...)
	t.Logf("lockstep run:\n%s%s", out, errs)
	if code != 0 || out != "the quote of the day: determinism is a feature\nhello\n" {
		t.Fatalf("run: exit %d, output %q", code, out)
	}
	if !strings.Contains(errs, "1 outbound connection, each made by every replica's provider") {
		t.Errorf("lockstep run does not say which mode it used: %s", errs)
	}
	if n := strings.Count(got(), "connection from "+webHost+" hello\n"); n != 3 {
		t.Errorf("the server saw %d connections with the replicas' line, want 3 (one per replica's provider):\n%s", n, got())
	}
	exec.Command("ip", "netns", "del", webNetns).Run() // the site is gone
	again, errs, code := runCLI(t, "", nil, append(append([]string{"replay"}, common...), log)...)
	if code != 0 || again != out || !strings.Contains(errs, "reproduced the recorded run") {
		t.Errorf("replay without the site: exit %d, output %q:\n%s", code, again, errs)
	}
}
