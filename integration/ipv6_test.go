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
	"testing"
	"time"
)

const web6Addr = "fd00:7::2" // startWeb6's server, in startWeb's namespace

// startWeb6 gives startWeb's network namespace an IPv6 address too, and
// runs python3 -m http.server at [web6Addr]:8006 serving dir; access
// gives its access log.
func startWeb6(t *testing.T, dir string) (access func() string) {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("this kernel has no IPv6")
	}
	startWeb(t, dir)
	sh(t, "ip", "addr", "add", "fd00:7::1/64", "dev", webVeth, "nodad")
	sh(t, "ip", "-n", webNetns, "addr", "add", web6Addr+"/64", "dev", "eth0", "nodad")
	var log bytes.Buffer
	srv := exec.Command("ip", "netns", "exec", webNetns, "python3", "-u", "-m", "http.server", "8006", "--bind", web6Addr, "--directory", dir)
	srv.Stderr = &log
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	for i := 0; ; i++ {
		if exec.Command("ip", "netns", "exec", webNetns, "python3", "-c", "import socket; socket.create_connection(('"+web6Addr+"', 8006), 1)").Run() == nil {
			break
		}
		if i == 50 {
			t.Fatalf("the IPv6 web server did not start: %s", log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return func() string { return log.String() }
}

// echoes6 is how many ICMPv6 echo requests startWeb's namespace received.
func echoes6(t *testing.T) int {
	out, err := exec.Command("ip", "netns", "exec", webNetns, "cat", "/proc/net/snmp6").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Icmp6InEchos" {
			var v int
			fmt.Sscan(f[1], &v)
			return v
		}
	}
	t.Fatalf("no Icmp6InEchos in /proc/net/snmp6:\n%s", out)
	return 0
}

// TestEgressIPv6: connections and pings to an IPv6 address go through the
// guard as IPv4 ones do. Three replicas fetch a page from a real server
// at an IPv6 address and probe an open and a closed port; then busybox
// pings the address. The server sees each fetch once, the host one echo
// request per ping, and every replica prints the same lines.
func TestEgressIPv6(t *testing.T) {
	dir := t.TempDir()
	page := bytes.Repeat([]byte("lockstep ipv6\n"), 10000)
	if err := os.WriteFile(filepath.Join(dir, "page"), page, 0o644); err != nil {
		t.Fatal(err)
	}
	access := startWeb6(t, dir)
	sum := sha256.Sum256(page)
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	common := []string{"--address", sock, "--namespace", namespace, "--allow-net", "[fd00:7::/64]:*"}
	url := "http://[" + web6Addr + "]:8006/page"
	out, errs, code := runCLI(t, "", nil, append(append([]string{"run", "--json"}, common...), pythonImage, "--",
		"/usr/bin/python3", "/srv/monitor.py", "2", "1", url, "tcp:"+web6Addr+":8006", "tcp:"+web6Addr+":8007")...)
	t.Logf("lockstep run:\n%s%s", out, errs)
	if code != 0 || !strings.Contains(errs, `"agreed": true`) {
		t.Fatalf("run: exit %d", code)
	}
	for want, n := range map[string]int{
		url + " 200 140000 bytes sha256 " + hex.EncodeToString(sum[:]): 2,
		"tcp " + web6Addr + ":8006 up":                                 2,
		"tcp " + web6Addr + ":8007 down: ConnectionRefusedError":       2,
	} {
		if got := strings.Count(out, want); got != n {
			t.Errorf("%q printed %d times, want %d", want, got, n)
		}
	}
	if got := strings.Count(access(), "GET /page"); got != 2 {
		t.Errorf("the server saw %d fetches, want 2 (one per round, whatever the replica count):\n%s", got, access())
	}
	before := echoes6(t)
	out, errs, code = runCLI(t, "", nil, append(append([]string{"run", "--json"}, common...), probeImage, "--",
		"/bin/busybox", "sh", "-c", "ping -6 -c 2 "+web6Addr+"; echo ping $?; ping -6 -c 1 -W 1 fd00:7::9; echo ping $?")...)
	t.Logf("lockstep run:\n%s%s", out, errs)
	if code != 0 || !strings.Contains(errs, `"agreed": true`) {
		t.Fatalf("run: exit %d", code)
	}
	for _, want := range []string{"2 packets transmitted, 2 packets received, 0% packet loss", "ping 0\n",
		"1 packets transmitted, 0 packets received, 100% packet loss", "ping 1\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output does not say %q", want)
		}
	}
	if got := echoes6(t) - before; got != 2 {
		t.Errorf("the host received %d ICMPv6 echo requests, want 2 (one per ping)", got)
	}
}
