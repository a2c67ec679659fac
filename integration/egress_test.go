//go:build linux

package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/replicate"
	"github.com/lockstep-run/lockstep/serve"
	"github.com/lockstep-run/lockstep/shim"
)

const (
	webNetns = "lockstep-web"
	webVeth  = "lsweb0"
	webHost  = "10.213.7.1"
	webAddr  = "10.213.7.2"
)

// startWeb runs real web servers in a network namespace of its own,
// reached from the host over a veth pair: python3 -m http.server at
// webAddr:8000, and the same over TLS at webAddr:8443 (its certificate,
// for webAddr, is signed by testdata/python/tls/ca.pem, which the Python
// image has at /srv/tls). Both serve dir; access gives a server's access
// log (one line per request). stop takes the site down.
func startWeb(t *testing.T, dir string) (access func(tls bool) string, stop func()) {
	exec.Command("ip", "netns", "del", webNetns).Run() // a leftover
	exec.Command("ip", "link", "del", webVeth).Run()
	sh(t, "ip", "netns", "add", webNetns)
	sh(t, "ip", "link", "add", webVeth, "type", "veth", "peer", "name", "eth0", "netns", webNetns)
	sh(t, "ip", "addr", "add", webHost+"/24", "dev", webVeth)
	sh(t, "ip", "link", "set", webVeth, "up")
	sh(t, "ip", "-n", webNetns, "addr", "add", webAddr+"/24", "dev", "eth0")
	sh(t, "ip", "-n", webNetns, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", webNetns, "link", "set", "lo", "up")
	tlsDir, err := filepath.Abs("../testdata/python/tls")
	if err != nil {
		t.Fatal(err)
	}
	tlsServer := `import http.server, os, ssl, sys
os.chdir(sys.argv[1])
s = http.server.ThreadingHTTPServer((sys.argv[2], 8443), http.server.SimpleHTTPRequestHandler)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
c.load_cert_chain(sys.argv[3] + "/server.pem", sys.argv[3] + "/server.key")
s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()`
	var logs [2]bytes.Buffer
	srvs := []*exec.Cmd{
		exec.Command("ip", "netns", "exec", webNetns, "python3", "-u", "-m", "http.server", "8000", "--bind", webAddr, "--directory", dir),
		exec.Command("ip", "netns", "exec", webNetns, "python3", "-u", "-c", tlsServer, dir, webAddr, tlsDir),
	}
	for i, srv := range srvs {
		srv.Stderr = &logs[i]
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
	}
	down := false
	stop = func() {
		if down {
			return
		}
		down = true
		for _, srv := range srvs {
			srv.Process.Kill()
			srv.Wait()
		}
		exec.Command("ip", "link", "del", webVeth).Run()
		exec.Command("ip", "netns", "del", webNetns).Run()
	}
	t.Cleanup(stop)
	for _, port := range []string{"8000", "8443"} {
		for i := 0; ; i++ {
			if exec.Command("ip", "netns", "exec", webNetns, "python3", "-c", "import socket; socket.create_connection(('"+webAddr+"', "+port+"), 1)").Run() == nil {
				break
			}
			if i == 50 {
				t.Fatalf("the web server on port %s did not start: %s%s", port, logs[0].String(), logs[1].String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return func(tls bool) string {
		if tls {
			return logs[1].String()
		}
		return logs[0].String()
	}, stop
}

// TestEgressMonitor: website monitoring through the guard. Three
// replicas fetch a page from a real server in another network namespace
// every 2 s, and probe a port nothing listens on; the guard makes each
// connection once (the server's access log shows each fetch once), every
// replica prints the same lines (the page's digest, the time each fetch
// took by the replica's own clock), and a replay with the site gone
// prints them again from the log.
func TestEgressMonitor(t *testing.T) {
	dir := t.TempDir()
	page := bytes.Repeat([]byte("lockstep egress\n"), 20000)
	if err := os.WriteFile(filepath.Join(dir, "page"), page, 0o644); err != nil {
		t.Fatal(err)
	}
	access, stop := startWeb(t, dir)
	sum := sha256.Sum256(page)
	log := filepath.Join(t.TempDir(), "monitor.log")
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	common := []string{"--address", sock, "--namespace", namespace}
	cmd := []string{pythonImage, "--", "/usr/bin/python3", "/srv/monitor.py", "--ca", "/srv/tls/ca.pem", "5", "2",
		"http://" + webAddr + ":8000/page", "https://" + webAddr + ":8443/page", "tcp:" + webAddr + ":8000", "tcp:" + webAddr + ":8001"}
	args := append(append([]string{"run", "--json", "--allow-net", webAddr + ":*", "--record", log}, common...), cmd...)
	out, errs, code := runCLI(t, "", nil, args...)
	t.Logf("lockstep run:\n%s%s", out, errs)
	if code != 0 || !strings.Contains(errs, `"agreed": true`) {
		t.Fatalf("run: exit %d: %s", code, errs)
	}
	if got := strings.Count(out, "200 320000 bytes sha256 "+hex.EncodeToString(sum[:])); got != 10 {
		t.Errorf("%d of 10 fetches (5 by HTTP, 5 by HTTPS) printed the page's size and sha256", got)
	}
	if got := strings.Count(out, "tcp "+webAddr+":8001 down: ConnectionRefusedError"); got != 5 {
		t.Errorf("%d of 5 probes of the closed port said it was down", got)
	}
	if got := strings.Count(out, "tcp "+webAddr+":8000 up"); got != 5 {
		t.Errorf("%d of 5 probes of the open port said it was up", got)
	}
	for _, tls := range []bool{false, true} {
		if got := strings.Count(access(tls), "GET /page"); got != 5 {
			t.Errorf("the server (TLS %v) saw %d fetches, want 5 (one per round, whatever the replica count):\n%s", tls, got, access(tls))
		}
	}
	stop() // the site is gone: the replay reads its replies from the log
	again, errs, code := runCLI(t, "", nil, append(append([]string{"replay"}, common...), log)...)
	if code != 0 || again != out || !strings.Contains(errs, "reproduced the recorded run") {
		t.Errorf("replay without the site: exit %d, same output %v:\n%s%s", code, again == out, again, errs)
	}
}

// TestEgressRefused: without --allow-net, no connection leaves the run:
// the program's connect is refused on every replica alike and lockstep
// says which flag allows it; with another address allowed, the same.
func TestEgressRefused(t *testing.T) {
	access, _ := startWeb(t, t.TempDir())
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	url := "http://" + webAddr + ":8000/"
	for _, allow := range []string{"", "10.9.9.9:80"} {
		args := []string{"run", "--address", sock, "--namespace", namespace}
		if allow != "" {
			args = append(args, "--allow-net", allow)
		}
		args = append(args, probeImage, "--", "/bin/busybox", "sh", "-c", "wget -q -O - "+url+"; echo wget $?")
		out, errs, code := runCLI(t, "", nil, args...)
		if code != 0 || out != "wget 1\n" || !strings.Contains(errs, "Connection refused") {
			t.Errorf("--allow-net %q: exit %d, stdout %q:\n%s", allow, code, out, errs)
		}
		want := fmt.Sprintf("allow it with --allow-net %s:8000", webAddr)
		if allow != "" {
			want = "which --allow-net does not allow"
		}
		if strings.Count(errs, want) != 1 {
			t.Errorf("--allow-net %q: stderr does not say %q once:\n%s", allow, want, errs)
		}
	}
	if strings.Contains(access(false), "GET") {
		t.Errorf("a refused connection reached the server:\n%s", access(false))
	}
}

// TestEgressLiar: a replica whose provider changes its seed (it cheats)
// asks the remote for another path; the guard sends the remote only what
// the majority sent, names the cheat for it, and the cheat gets the
// majority's reply like the others.
func TestEgressLiar(t *testing.T) {
	access, _ := startWeb(t, t.TempDir())
	p := env.providers[0]
	lc := startLogd(t)
	cheat := p.local(lc)
	cheat.ProviderName = "cheat"
	cheat.Annotations = map[string]string{shim.AnnotationSeed: "99"}
	g := serve.New(nil, 3)
	var err error
	if g.Allow, err = serve.ParsePolicy(webAddr + ":8000"); err != nil {
		t.Fatal(err)
	}
	script := `import os, sys, urllib.request, urllib.error
token = os.urandom(8).hex()
print(token, file=sys.stderr)
try:
    urllib.request.urlopen("http://` + webAddr + `:8000/" + token, timeout=10)
except urllib.error.HTTPError as e:
    print(e.code)
`
	var out bytes.Buffer
	v, err := replicate.Run(context.Background(), replicate.Options{
		Providers: []replicate.Provider{p.local(lc), p.local(lc), cheat}, Image: pythonImage, Args: []string{"/usr/bin/python3", "-c", script},
		Replicas: 3, Logd: lc, Stream: newID(t), Stdin: strings.NewReader(""), Stdout: &out, Entries: g.Entries(), Net: g,
	})
	g.Over()
	if err != nil {
		t.Fatal(err)
	}
	g.Judge(&v)
	tokens := map[string]string{}
	for _, r := range v.Replicas {
		tokens[r.Provider] = strings.TrimSpace(r.Stderr)
	}
	t.Logf("stdout %q; verdict: %s; tokens %v; access log:\n%s", out.String(), v.Detail, tokens, access(false))
	if out.String() != "404\n" {
		t.Errorf("stdout %q, want the server's 404", out.String())
	}
	if v.Replicas[2].State != "odd" && v.Replicas[2].State != "differs" || !strings.Contains(v.Replicas[2].Why, "outbound connection 1") {
		t.Errorf("the cheat is not named for its bytes: %+v", v.Replicas[2])
	}
	log := access(false)
	if strings.Count(log, "GET /") != 1 || !strings.Contains(log, "GET /"+tokens[p.name]) || strings.Contains(log, tokens["cheat"]) {
		t.Errorf("the server saw other requests than the majority's one (%s), or the cheat's (%s):\n%s", tokens[p.name], tokens["cheat"], log)
	}
}

// TestServeEgress: a served service that fetches from the web for each
// request (lockstep serve --allow-net): each request makes one real fetch,
// whatever the replica count, and every client gets the answer.
func TestServeEgress(t *testing.T) {
	dir := t.TempDir()
	page := []byte("a page the service fetches\n")
	if err := os.WriteFile(filepath.Join(dir, "page"), page, 0o644); err != nil {
		t.Fatal(err)
	}
	access, _ := startWeb(t, dir)
	service := `import hashlib, http.server, urllib.request
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = urllib.request.urlopen("http://` + webAddr + `:8000/page", timeout=10).read()
        out = hashlib.sha256(body).hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
http.server.HTTPServer(("127.0.0.1", 8080), H).serve_forever()
`
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	addr := freeAddr(t)
	cmd := exec.Command(lockstepBinary(t), "serve", "--json", "--address", sock, "--namespace", namespace, "--allow-net", webAddr+":8000",
		"--listen", addr, "--port", "8080", pythonImage, "--", "/usr/bin/python3", "-c", service)
	var errs bytes.Buffer
	cmd.Stderr = &errs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitServing(t, addr)
	sum := sha256.Sum256(page)
	client := &http.Client{Timeout: 60 * time.Second}
	for i := 0; i < 3; i++ {
		if got := get(t, client, "GET", "http://"+addr+"/", ""); got != hex.EncodeToString(sum[:]) {
			t.Errorf("answer %d: %q", i, got)
		}
	}
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	t.Logf("lockstep serve:\n%s", errs.String())
	// Four requests: waitServing's and the three above.
	if !strings.Contains(errs.String(), "4 outbound") || !strings.Contains(errs.String(), `"agreed": true`) {
		t.Errorf("the status does not count 4 outbound connections, or the replicas do not agree")
	}
	if got := strings.Count(access(false), "GET /page"); got != 4 {
		t.Errorf("the server saw %d fetches, want 4:\n%s", got, access(false))
	}
}

// echoes is how many ICMP echo requests the web namespace's kernel has
// received (its /proc/net/snmp).
func echoes(t *testing.T) int {
	out, err := exec.Command("ip", "netns", "exec", webNetns, "cat", "/proc/net/snmp").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(out), "\n")
	for i := 0; i+1 < len(lines); i++ {
		if strings.HasPrefix(lines[i], "Icmp: InMsgs") {
			names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			for j, n := range names {
				if n == "InEchos" && j < len(values) {
					var v int
					fmt.Sscan(values[j], &v)
					return v
				}
			}
		}
	}
	t.Fatalf("no InEchos in /proc/net/snmp:\n%s", out)
	return 0
}

// TestEgressPing: pinging computers. Three replicas ping (busybox ping,
// ICMP echo) a host that is up and one that is down, and probe a port by
// TCP connect: every replica prints the same lines, with round trips the
// guard measured, and the host that is up receives one echo request per
// ping, not three.
func TestEgressPing(t *testing.T) {
	startWeb(t, t.TempDir())
	before := echoes(t)
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	script := "ping -c 3 " + webAddr + "; echo ping $?; ping -c 2 -W 1 10.213.7.9; echo ping $?; printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc " + webAddr + " 8000 | head -1"
	out, errs, code := runCLI(t, "", nil, "run", "--json", "--address", sock, "--namespace", namespace, "--allow-net", "10.213.7.0/24:*",
		probeImage, "--", "/bin/busybox", "sh", "-c", script)
	t.Logf("lockstep run:\n%s%s", out, errs)
	if code != 0 || !strings.Contains(errs, `"agreed": true`) {
		t.Fatalf("run: exit %d", code)
	}
	for _, want := range []string{"3 packets transmitted, 3 packets received, 0% packet loss", "ping 0\n",
		"2 packets transmitted, 0 packets received, 100% packet loss", "ping 1\n", "HTTP/1.0 200 OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output does not say %q", want)
		}
	}
	if got := echoes(t) - before; got != 3 {
		t.Errorf("the host that is up received %d echo requests, want 3 (one per ping, whatever the replica count)", got)
	}
}
