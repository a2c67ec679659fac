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
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
	"github.com/lockstep-run/lockstep/serve"
	"github.com/lockstep-run/lockstep/shim"
)

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// get asks url and returns the body, failing the test on an error.
func get(t *testing.T, c *http.Client, method, url, body string) string {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return string(b)
}

// waitServing waits until the gateway at addr answers a request to its
// end (an answer of no bytes, a closed connection, is one too).
func waitServing(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(20 * time.Second))
			_, err = io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
			if err == nil {
				_, err = io.ReadAll(c)
			}
			c.Close()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway at %s did not answer: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServe: lockstep serve puts 3 replicas of a Go key-value service
// (net/http, persisting to a file) behind one address; 8 clients at once,
// each on a keep-alive connection, store and read back keys; a 320 KiB
// request spans entries; a client gone mid-request changes nothing; Ctrl-C stops
// the replicas at the log's stop entry with a verified verdict; the
// recorded log reproduces every answer in a replay, and a replay of
// another service is told which connection's answer differs.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "served.log")
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	common := []string{"--address", sock, "--namespace", namespace}
	cmd, addr, stderr := startServe(t, append(append([]string{"--record", log}, common...), probeImage, "--", "/kv")...)

	var wg sync.WaitGroup
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for i := 1; i <= 10; i++ {
				key := fmt.Sprintf("http://%s/k/c%d", addr, c)
				want := fmt.Sprintf(`{"key":"c%d","value":"v%d","version":%d}`+"\n", c, i, i)
				if got := get(t, client, "PUT", key, fmt.Sprintf("v%d", i)); got != want {
					t.Errorf("PUT: %q, want %q", got, want)
				}
				if got := get(t, client, "GET", key, ""); got != want {
					t.Errorf("GET: %q, want %q", got, want)
				}
			}
		}()
	}
	wg.Wait()
	// A request larger than an entry (64 KiB per read) arrives whole.
	big := strings.Repeat("0123456789abcdef", 20<<10) // 320 KiB
	if got := get(t, http.DefaultClient, "PUT", "http://"+addr+"/k/big", big); !strings.Contains(got, `"version":1`) || len(got) < len(big) {
		t.Errorf("PUT of 320 KiB: %d bytes back", len(got))
	}
	if got := get(t, http.DefaultClient, "GET", "http://"+addr+"/k/big", ""); !strings.Contains(got, big) {
		t.Errorf("GET of 320 KiB: %d bytes", len(got))
	}
	// A client that goes away mid-request leaves the service as it was.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("PUT /k/half HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part of it"))
	c.Close()
	index := get(t, http.DefaultClient, "GET", "http://"+addr+"/", "")
	if !strings.HasPrefix(index, "keys big,c0,c1,c2,c3,c4,c5,c6,c7\ntime 20") {
		t.Errorf("index: %q", index)
	}
	cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	if err != nil || !strings.Contains(stderr.String(), "answered") || strings.Contains(stderr.String(), "DIVERGED") {
		t.Fatalf("serve: %v\n%s", err, stderr.String())
	}
	replay := func(image ...string) (string, int) {
		_, errs, code := runCLI(t, "", nil, append(append([]string{"replay"}, common...), append([]string{log}, image...)...)...)
		return errs, code
	}
	if errs, code := replay(probeImage, "--", "/kv"); code != 0 || !strings.Contains(errs, "reproduced the recorded run") {
		t.Errorf("replay: exit %d: %s", code, errs)
	}
	if errs, code := replay(); code != 0 || !strings.Contains(errs, "reproduced the recorded run") {
		t.Errorf("replay without IMAGE: exit %d: %s", code, errs)
	}
	restore := editDigests(t, log+".digests", "conn ")
	if errs, code := replay(); code == 0 || !strings.Contains(errs, "DIFFERS: conn ") {
		t.Errorf("replay against other digests: exit %d: %s", code, errs)
	}
	restore()
	other := []string{probeImage, "--", "/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/"}
	if errs, code := replay(other...); code != 125 || !strings.Contains(errs, "the log was recorded for "+probeImage+" -- /kv, not") {
		t.Errorf("replay of another service: exit %d: %s", code, errs)
	}
}

// startServe starts lockstep serve --listen ADDR --port 8080 ARGS... and
// waits until it answers; the test kills it at its end.
func startServe(t *testing.T, args ...string) (*exec.Cmd, string, *bytes.Buffer) {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(lockstepBinary(t), append([]string{"serve", "--listen", addr, "--port", "8080"}, args...)...)
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	waitServing(t, addr)
	return cmd, addr, stderr
}

// servedRun runs a gateway and replicas of image on providers ps, as
// lockstep serve does, until stop is called; the verdict comes on the
// channel. It returns the stream's name too.
func servedRun(t *testing.T, lc *logd.Client, ps []replicate.Provider, image string, args ...string) (*serve.Gateway, string, chan replicate.Verdict, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := serve.New(ln, 3)
	go g.Serve()
	done := make(chan replicate.Verdict, 1)
	stream := newID(t)
	go func() {
		v, err := replicate.Run(context.Background(), replicate.Options{
			Providers: ps, Image: image, Args: args, Replicas: 3, Logd: lc, Stream: stream,
			Stdout: io.Discard, Entries: g.Entries(), Port: 8080, Net: g,
		})
		g.Over()
		if err != nil {
			t.Error(err)
		}
		done <- v
	}()
	t.Cleanup(g.Stop)
	waitServing(t, ln.Addr().String())
	return g, ln.Addr().String(), done, stream
}

// TestServeOddReplica: a replica whose provider changes its seed (it
// cheats) answers differently; it is named, and every client still gets
// the answer of the honest majority.
func TestServeOddReplica(t *testing.T) {
	p := env.providers[0]
	lc := startLogd(t)
	cheat := p.local(lc)
	cheat.ProviderName = "cheat"
	cheat.Annotations = map[string]string{shim.AnnotationSeed: "99"}
	g, addr, done, _ := servedRun(t, lc, []replicate.Provider{p.local(lc), p.local(lc), cheat}, probeImage, "/kv")
	for i := 0; i < 5; i++ {
		if got := get(t, &http.Client{Timeout: 30 * time.Second}, "GET", "http://"+addr+"/", ""); !strings.Contains(got, "\nrandom ") {
			t.Errorf("answer %d: %q", i, got)
		}
	}
	odd := g.Odd()
	if len(odd) != 1 || odd[2] == "" {
		t.Errorf("odd replicas: %v, want replica 2", odd)
	}
	g.Stop()
	v := <-done
	g.Judge(&v)
	if !divergence(t, v) || v.Replicas[2].State == "agreed" || v.Replicas[0].State != "agreed" || !strings.Contains(v.Replicas[2].Why, "answers differ") {
		t.Errorf("verdict: %+v", v)
	}
}

// TestServeReplicaKilled: one replica's container is killed halfway
// through 1,000 requests; every request is answered correctly by the
// other two, and the dead replica is named in the verdict. A replica that
// joins later (lockstep serve --join, as a user runs it) replays the log
// from its start, follows it live to the stop entry, and reproduces every
// answer: its final digest is the two survivors', and only the killed
// one may be the odd one out in logd's verdict.
func TestServeReplicaKilled(t *testing.T) {
	p := env.providers[0]
	lc, logdURL := startLogdOn(t, "127.0.0.1:0")
	g, addr, done, stream := servedRun(t, lc, []replicate.Provider{p.local(lc), p.local(lc), p.local(lc)}, probeImage, "/kv")
	client := &http.Client{Timeout: 30 * time.Second}
	var join *exec.Cmd
	joinOut := &bytes.Buffer{}
	for i := 1; i <= 1000; i++ {
		switch i {
		case 500:
			killReplica(t, p, "replica-1")
		case 600:
			join = exec.Command(lockstepBinary(t), "serve", "--join", stream, "--join-as", "late", "--logd", logdURL,
				"--address", filepath.Join(p.dir, "containerd.sock"), "--namespace", namespace)
			join.Stdout, join.Stderr = io.Discard, joinOut
			if err := join.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { join.Process.Kill() })
		}
		want := fmt.Sprintf(`{"key":"k","value":"%d","version":%d}`+"\n", i, i)
		if got := get(t, client, "PUT", "http://"+addr+"/k/k", fmt.Sprint(i)); got != want {
			t.Fatalf("request %d: %q, want %q", i, got, want)
		}
	}
	if g.Failure() != "" {
		t.Errorf("gateway: %s", g.Failure())
	}
	g.Stop()
	v := <-done
	if r := v.Replicas[1]; r.State == "agreed" {
		t.Errorf("the killed replica is %s in the verdict: %+v", r.State, v)
	}
	if v.Replicas[0].State != "agreed" || v.Replicas[2].State != "agreed" {
		t.Errorf("verdict: %+v", v)
	}
	exited := make(chan error, 1)
	go func() { exited <- join.Wait() }()
	select {
	case err := <-exited:
		if err != nil || !strings.Contains(joinOut.String(), "late reproduced") {
			t.Errorf("lockstep serve --join: %v\n%s", err, joinOut)
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("lockstep serve --join did not end 5 minutes after the stop entry:\n%s", joinOut)
	}
	t.Logf("lockstep serve --join:\n%s", joinOut)
	lv, err := lc.Verdict(context.Background(), stream, 3)
	// The killed replica reports its digest at the point it was killed
	// (or, if its feed broke first, nothing): it alone may be odd.
	if err != nil || !slices.Contains(lv.Replicas, "late") || len(lv.Odd) > 1 || (len(lv.Odd) == 1 && lv.Odd[0] != "replica-1") {
		t.Errorf("logd's verdict with the joined replica: %+v %v", lv, err)
	}
}

// killReplica kills the container of the named replica of this test's
// run (SIGKILL); a container another test left behind is not it.
func killReplica(t *testing.T, p *provider, name string) {
	t.Helper()
	cs, err := p.client.Containers(p.ctx())
	if err != nil {
		t.Fatal(err)
	}
	mine := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())) + "-" // newID's
	for _, c := range cs {
		if strings.HasPrefix(c.ID(), mine) && strings.HasSuffix(c.ID(), "-"+name) {
			task, err := c.Task(p.ctx(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := task.Kill(p.ctx(), syscall.SIGKILL, containerd.WithKillAll); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no container of %s", name)
}

// TestServeBusyboxHttpd: an unmodified server of another kind, busybox
// httpd (a process forked per connection, HTTP/1.0, a Date header from
// the log's clock), behind lockstep serve: 4 clients at once fetch a
// 1 MB file, and every answer is the file; the replicas agree.
func TestServeBusyboxHttpd(t *testing.T) {
	p := env.providers[0]
	lc := startLogd(t)
	want, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	g, addr, done, _ := servedRun(t, lc, []replicate.Provider{p.local(lc), p.local(lc), p.local(lc)},
		probeImage, "/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/")
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 60 * time.Second}
			for i := 0; i < 3; i++ {
				resp, err := client.Get("http://" + addr + "/bin/busybox")
				if err != nil {
					t.Errorf("client %d: %v", c, err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, want) {
					t.Errorf("client %d, request %d: status %d, %d bytes (want %d), %v", c, i, resp.StatusCode, len(b), len(want), err)
				}
			}
		}()
	}
	wg.Wait()
	if len(g.Odd()) > 0 || g.Failure() != "" {
		t.Errorf("odd replicas %v, failure %q", g.Odd(), g.Failure())
	}
	g.Stop()
	v := <-done
	g.Judge(&v)
	if !v.Agreed || len(v.Odd) > 0 {
		t.Errorf("verdict: %s %+v", v.Detail, v.Replicas)
	}
}

// TestServeWrongPort: a service that does not listen on the served port
// refuses every connection on every replica alike: clients get no bytes,
// the replicas agree, and the gateway's status says what to check.
func TestServeWrongPort(t *testing.T) {
	p := env.providers[0]
	lc := startLogd(t)
	g, addr, done, _ := servedRun(t, lc, []replicate.Provider{p.local(lc), p.local(lc), p.local(lc)},
		probeImage, "/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:9999", "-h", "/")
	if _, err := http.Get("http://" + addr + "/bin/busybox"); err == nil {
		t.Error("a request to a port nothing listens on was answered")
	}
	g.Stop()
	if v := <-done; !v.Agreed {
		t.Errorf("verdict: %s", v.Detail)
	}
	if st := g.Status(); !strings.Contains(st, "does the service listen on --port") {
		t.Errorf("status: %s", st)
	}
}
