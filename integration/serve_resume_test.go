//go:build linux

package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeResume: the gateway (lockstep serve --state DIR) is killed
// with SIGKILL while a request is on its way; started again with the same
// DIR, it resumes the stream from its log: new replicas replay it, no
// acknowledged request is lost and none is applied twice (the key-value
// store's version counts each PUT once), and the service goes on. A
// replica that joins the finished stream reproduces every answer.
func TestServeResume(t *testing.T) {
	p := env.providers[0]
	lc, logdURL := startLogdOn(t, "127.0.0.1:0")
	state := filepath.Join(t.TempDir(), "state")
	addr := freeAddr(t)
	args := []string{"serve", "--state", state, "--logd", logdURL, "--listen", addr, "--port", "8080",
		"--address", filepath.Join(p.dir, "containerd.sock"), "--namespace", namespace, probeImage, "--", "/kv"}
	start := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(lockstepBinary(t), args...)
		out := &bytes.Buffer{}
		cmd.Stderr = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
		waitServing(t, addr)
		return cmd, out
	}
	put := func(c *http.Client, i int) string {
		return get(t, c, "PUT", "http://"+addr+"/k/k", strconv.Itoa(i))
	}
	first, firstOut := start()
	client := &http.Client{Timeout: 30 * time.Second}
	for i := 1; i <= 100; i++ {
		if got, want := put(client, i), fmt.Sprintf(`{"key":"k","value":"%d","version":%d}`+"\n", i, i); got != want {
			t.Fatalf("PUT %d: %q, want %q", i, got, want)
		}
	}
	client.CloseIdleConnections()
	// Request 101 is sent, and the gateway killed once it is in the log,
	// whether or not its answer came back.
	name, err := os.ReadFile(filepath.Join(state, "stream"))
	if err != nil {
		t.Fatal(err)
	}
	stream := strings.TrimSpace(string(name))
	info, err := lc.Info(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "PUT /k/k HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n101")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(time.Millisecond) {
		now, err := lc.Info(context.Background(), stream)
		if err == nil && now.Checkpoint.Size >= info.Checkpoint.Size+2 { // its open and data entries
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("request 101 did not reach the log in 20 s: %v", err)
		}
	}
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()
	c.Close()

	second, secondOut := start()
	if !strings.Contains(secondOut.String(), "resuming stream "+stream) {
		t.Errorf("the second gateway did not say it resumed the stream:\n%s", secondOut)
	}
	got := get(t, client, "GET", "http://"+addr+"/k/k", "")
	m := regexp.MustCompile(`"version":(\d+)`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("GET after the restart: %q", got)
	}
	v, _ := strconv.Atoi(m[1])
	if v != 101 {
		t.Fatalf("after the restart the store is at version %d: want 101 (100 acknowledged PUTs, and one in the log when the gateway was killed)\nfirst gateway:\n%s", v, firstOut)
	}
	t.Logf("the store resumed at version %d", v)
	for i := 1; i <= 50; i++ {
		if got, want := put(client, 200+i), fmt.Sprintf(`{"key":"k","value":"%d","version":%d}`+"\n", 200+i, v+i); got != want {
			t.Fatalf("PUT after the restart: %q, want %q", got, want)
		}
	}
	second.Process.Signal(syscall.SIGINT)
	if err := second.Wait(); err != nil {
		t.Errorf("the resumed gateway: %v\n%s", err, secondOut)
	}
	t.Logf("resumed gateway:\n%s", secondOut)
	// The first gateway's replicas, left running when it was killed, were
	// removed when the second's took their names.
	cs, err := p.client.Containers(p.ctx())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if strings.HasPrefix(c.ID(), stream+"-") {
			t.Errorf("container %s is left behind", c.ID())
		}
	}

	join := exec.Command(lockstepBinary(t), "serve", "--join", stream, "--logd", logdURL,
		"--address", filepath.Join(p.dir, "containerd.sock"), "--namespace", namespace)
	joinOut := &bytes.Buffer{}
	join.Stdout, join.Stderr = io.Discard, joinOut
	if err := join.Run(); err != nil || !strings.Contains(joinOut.String(), "reproduced every answer") {
		t.Errorf("lockstep serve --join of the resumed stream: %v\n%s", err, joinOut)
	}
	// Started once more, the gateway refuses the stream it stopped.
	again := exec.Command(lockstepBinary(t), args...)
	out, err := again.CombinedOutput()
	if code := again.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "ended at entry") {
		t.Errorf("a third start on the stopped stream: exit %d (%v), want 2 and why:\n%s", code, err, out)
	}
}
