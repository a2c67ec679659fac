//go:build linux

package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// startDNS runs dnsmasq, a real DNS server, in startWeb's network
// namespace at webAddr:53: it answers monitored.test with webAddr and
// refuses other names (it has no upstream). queries gives its log of the
// queries it was sent.
func startDNS(t *testing.T) (queries func() string) {
	var mu sync.Mutex
	var log bytes.Buffer
	srv := exec.Command("ip", "netns", "exec", webNetns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address="+webAddr, "--port=53", "--user=root",
		"--pid-file=", "--address=/monitored.test/"+webAddr, "--log-queries", "--log-facility=-")
	w := &lockedWriter{mu: &mu, w: &log}
	srv.Stdout, srv.Stderr = w, w
	if err := srv.Start(); err != nil {
		t.Fatalf("dnsmasq (apt-get install dnsmasq-base): %v", err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	queries = func() string {
		mu.Lock()
		defer mu.Unlock()
		return log.String()
	}
	for i := 0; !strings.Contains(queries(), "started"); i++ {
		if i == 50 {
			t.Fatalf("dnsmasq did not start: %s", queries())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return queries
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestEgressDNS: website monitoring by name. Three replicas resolve the
// site's name with glibc's resolver (Python's getaddrinfo, the image's
// /etc/resolv.conf naming a real DNS server out of the run) before each
// fetch and probe: the queries go through the guard once (the server's
// log shows one replica's worth), every replica prints the same lines, a
// name the server refuses fails alike everywhere, and a replay with the
// server and the site gone prints them again from the log.
func TestEgressDNS(t *testing.T) {
	dir := t.TempDir()
	page := bytes.Repeat([]byte("lockstep egress\n"), 20000)
	if err := os.WriteFile(filepath.Join(dir, "page"), page, 0o644); err != nil {
		t.Fatal(err)
	}
	access, stop := startWeb(t, dir)
	queries := startDNS(t)
	sum := sha256.Sum256(page)
	log := filepath.Join(t.TempDir(), "dns.log")
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	common := []string{"--address", sock, "--namespace", namespace}
	cmd := []string{dnsImage, "--", "/usr/bin/python3", "/srv/monitor.py", "3", "2",
		"http://monitored.test:8000/page", "tcp:monitored.test:8000", "tcp:nosuch.test:80"}
	args := append(append([]string{"run", "--json", "--allow-net", webAddr + ":*", "--record", log}, common...), cmd...)
	out, errs, code := runCLI(t, "", nil, args...)
	t.Logf("lockstep run:\n%s%s", out, errs)
	t.Logf("dnsmasq:\n%s", queries())
	if code != 0 || !strings.Contains(errs, `"agreed": true`) {
		t.Fatalf("run: exit %d: %s", code, errs)
	}
	if got := strings.Count(out, "http://monitored.test:8000/page 200 320000 bytes sha256 "+hex.EncodeToString(sum[:])); got != 3 {
		t.Errorf("%d of 3 fetches by name printed the page's size and sha256", got)
	}
	if got := strings.Count(out, "tcp monitored.test:8000 up"); got != 3 {
		t.Errorf("%d of 3 probes by name said the port was up", got)
	}
	if got := strings.Count(out, "tcp nosuch.test:80 down: gaierror"); got != 3 {
		t.Errorf("%d of 3 probes of a name the server refuses failed to resolve", got)
	}
	// Two lookups of monitored.test a round (the fetch, the probe), one
	// A query each: 6, whatever the replica count.
	if got := strings.Count(queries(), "query[A] monitored.test from"); got != 6 {
		t.Errorf("the DNS server was asked %d times for monitored.test's address, want 6 (one replica's lookups)", got)
	}
	if got := strings.Count(access(false), "GET /page"); got != 3 {
		t.Errorf("the web server saw %d fetches, want 3", got)
	}
	stop()
	again, errs, code := runCLI(t, "", nil, append(append([]string{"replay"}, common...), log)...)
	if code != 0 || again != out || !strings.Contains(errs, "reproduced the recorded run") {
		t.Errorf("replay without the DNS server and the site: exit %d, same output %v:\n%s%s", code, again == out, again, errs)
	}
}

// udpEcho is a UDP echo server in python3: it answers each datagram with
// "echo " and the datagram, and prints what it got.
const udpEcho = `import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(65536)
    print("got", data.decode(), flush=True)
    s.sendto(b"echo " + data, peer)`

// TestEgressUDPSendto: a program that sends datagrams with sendto from a
// socket it never connects (as an NTP or statsd client does) reaches a
// real UDP server through the guard: the server gets each datagram once,
// whatever the replica count, every replica prints the same replies,
// source address, local port and round trips, and a datagram to a port
// where nothing listens goes unanswered alike (the program's own timeout
// ends the wait, at the log's time).
func TestEgressUDPSendto(t *testing.T) {
	startWeb(t, t.TempDir())
	got := startPythonServers(t, udpEcho, "8053")
	client := `import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(3):
    t0 = time.monotonic()
    s.sendto(b"ping %d" % i, (sys.argv[1], 8053))
    data, peer = s.recvfrom(100)
    print(data.decode(), "from", peer, "to port", s.getsockname()[1], "in %.3f ms" % ((time.monotonic() - t0) * 1e3), flush=True)
s.settimeout(2)
s.sendto(b"lost", (sys.argv[1], 8054))
try:
    print(s.recvfrom(100))
except socket.timeout:
    print("no answer from port 8054")`
	out := runPythonOut(t, client)
	for i := range 3 {
		if want := fmt.Sprintf("echo ping %d from ('%s', 8053) to port 49152", i, webAddr); !strings.Contains(out, want) {
			t.Errorf("the output does not say %q", want)
		}
	}
	if !strings.Contains(out, "no answer from port 8054") {
		t.Error("the datagram to a closed port was answered")
	}
	if n := strings.Count(got(), "got ping"); n != 3 {
		t.Errorf("the server got %d datagrams, want 3 (each once, whatever the replica count):\n%s", n, got())
	}
}

// tcpEcho is a TCP echo server in python3: it answers each line with
// "echo " and the line, and prints each line it got.
const tcpEcho = `import socketserver, sys
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            print("got", line.decode().strip(), flush=True)
            self.wfile.write(b"echo " + line)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()`

// TestEgressSendmsg: the calls that carry their destination inside a
// message header, or open a connection with data (TCP Fast Open), go
// through the guard too: a UDP datagram sent with sendmsg and an address,
// a TCP Fast Open by sendto and by sendmsg (MSG_FASTOPEN), and an ICMP
// echo request sent with sendmsg on a raw socket reach real servers (and
// the pinged host) once, whatever the replica count, and every replica
// prints the same replies.
func TestEgressSendmsg(t *testing.T) {
	startWeb(t, t.TempDir())
	got := startPythonServers(t, udpEcho, "8053", tcpEcho, "8055")
	before := echoes(t)
	client := `import socket, struct, sys
a = sys.argv[1]
ic = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
req = struct.pack("!BBHHH", 8, 0, 0, 0x4c53, 1) + b"ping by sendmsg"
s = sum(struct.unpack("!%dH" % ((len(req) + 1) // 2), req + bytes(len(req) % 2)))
s = (s >> 16) + (s & 0xffff)
req = req[:2] + struct.pack("!H", ~(s + (s >> 16)) & 0xffff) + req[4:]
ic.sendmsg([req], [], 0, (a, 0))
ic.settimeout(10)
while True:
    r = ic.recv(200)
    if r[20] == 0:
        print("echo reply:", r[28:].decode(), flush=True)
        break
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendmsg([b"by ", b"sendmsg"], [], 0, (a, 8053))
print(u.recvfrom(100)[0].decode(), flush=True)
for how in ("sendto", "sendmsg"):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    line = b"fast open by %s\n" % how.encode()
    if how == "sendto":
        n = t.sendto(line, socket.MSG_FASTOPEN, (a, 8055))
    else:
        n = t.sendmsg([line], [], socket.MSG_FASTOPEN, (a, 8055))
    print(how, "sent", n, "got", t.recv(100).decode().strip(), "from", t.getpeername(), flush=True)
    t.close()`
	out := runPythonOut(t, client)
	for _, want := range []string{
		"echo reply: ping by sendmsg\n",
		"echo by sendmsg\n",
		fmt.Sprintf("sendto sent 20 got echo fast open by sendto from ('%s', 8055)\n", webAddr),
		fmt.Sprintf("sendmsg sent 21 got echo fast open by sendmsg from ('%s', 8055)\n", webAddr),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output does not say %q", want)
		}
	}
	for _, line := range []string{"got by sendmsg", "got fast open by sendto", "got fast open by sendmsg"} {
		if n := strings.Count(got(), line+"\n"); n != 1 {
			t.Errorf("the servers printed %q %d times, want once (whatever the replica count):\n%s", line, n, got())
		}
	}
	if n := echoes(t) - before; n != 1 {
		t.Errorf("the pinged host received %d echo requests, want 1", n)
	}
}

// startPythonServers starts python3 servers in startWeb's network
// namespace, each given as its code and port (it binds webAddr:port), and
// returns what they print.
func startPythonServers(t *testing.T, codeAndPort ...string) (printed func() string) {
	var mu sync.Mutex
	var got bytes.Buffer
	for i := 0; i+1 < len(codeAndPort); i += 2 {
		srv := exec.Command("ip", "netns", "exec", webNetns, "python3", "-u", "-c", codeAndPort[i], webAddr, codeAndPort[i+1])
		srv.Stdout = &lockedWriter{mu: &mu, w: &got}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	}
	time.Sleep(300 * time.Millisecond) // the servers bind
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return got.String()
	}
}

// runPythonOut runs a python3 client (given webAddr as its argument) as 3
// replicas allowed to reach webAddr, and returns their output, failing
// the test unless they agree.
func runPythonOut(t *testing.T, client string) string {
	t.Helper()
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	out, errs, code := runCLI(t, "", nil, "run", "--json", "--address", sock, "--namespace", namespace, "--allow-net", webAddr+":*",
		pythonImage, "--", "/usr/bin/python3", "-c", client, webAddr)
	t.Logf("lockstep run:\n%s%s", out, errs)
	if code != 0 || !strings.Contains(errs, `"agreed": true`) {
		t.Fatalf("run: exit %d", code)
	}
	return out
}
