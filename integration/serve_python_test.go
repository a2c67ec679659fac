//go:build linux

package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/replicate"
)

// TestServePythonHTTPServer: Debian's python3 -m http.server (a thread
// per connection) behind lockstep serve, 3 replicas: 4 clients at once
// fetch a small file, a 300 KiB binary file and a directory listing;
// every answer is the file's bytes, its Date header is the log's time
// (today, not a fixed epoch), and the replicas agree on every byte.
func TestServePythonHTTPServer(t *testing.T) {
	p := env.providers[0]
	lc := startLogd(t)
	data, err := os.ReadFile(filepath.Join(env.dir, "python", "data.bin"))
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	g, addr, done, _ := servedRun(t, lc, []replicate.Provider{p.local(lc), p.local(lc), p.local(lc)},
		pythonImage, "/usr/bin/python3", "-m", "http.server", "8080", "--bind", "127.0.0.1", "--directory", "/srv/www")
	want := map[string][]byte{"/hello.txt": []byte("hello from a replicated python3 http.server\n"), "/docs/data.bin": data}
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 60 * time.Second}
			for i := 0; i < 3; i++ {
				for _, path := range []string{"/hello.txt", "/docs/data.bin", "/docs/"} {
					resp, err := client.Get("http://" + addr + path)
					if err != nil {
						t.Errorf("client %d: GET %s: %v", c, path, err)
						return
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != 200 {
						t.Errorf("client %d: GET %s: status %d, %v", c, path, resp.StatusCode, err)
						continue
					}
					w, file := want[path]
					if file && !bytes.Equal(b, w) {
						t.Errorf("client %d: GET %s: %d bytes, not the file's %d", c, path, len(b), len(w))
					}
					if !file && !strings.Contains(string(b), `<a href="data.bin">data.bin</a>`) {
						t.Errorf("client %d: the listing of /docs/: %q", c, b)
					}
					at, err := http.ParseTime(resp.Header.Get("Date"))
					if err != nil || at.Before(begin.Add(-time.Second).Truncate(time.Second)) || at.After(time.Now()) {
						t.Errorf("client %d: GET %s: Date %q, not the log's time (between %v and now)", c, path, resp.Header.Get("Date"), begin)
					}
				}
			}
		}()
	}
	wg.Wait()
	if g.Failure() != "" || len(g.Odd()) > 1 {
		t.Errorf("no majority answered: odd replicas %v, failure %q", g.Odd(), g.Failure())
	}
	g.Stop()
	v := <-done
	g.Judge(&v)
	threadsDiverged(t, v)
}

// threadsDiverged reports a replica that answered differently, which a
// Python service with a thread per connection can (docs/serve.md,
// "Concurrency and threads": CPython's GIL hand-off is a real-time wait,
// and the clock reads its threads make depend on which ran first). The
// gateway must have named it and answered from the majority.
func threadsDiverged(t *testing.T, v replicate.Verdict) {
	t.Helper()
	odd := 0
	for _, r := range v.Replicas {
		if r.State != "agreed" {
			odd++
			if !strings.Contains(r.Why, "answers differ") {
				t.Errorf("%s is %s: %s", r.Name, r.State, r.Why)
			}
			t.Logf("%s diverged (a thread schedule's clock reads): %s", r.Name, r.Why)
		}
	}
	if odd > 1 {
		t.Errorf("%d of %d replicas diverged: %s", odd, len(v.Replicas), v.Detail)
	}
}

// note is what testdata/python/notes.py answers.
type note struct {
	ID   string  `json:"id"`
	At   float64 `json:"at"`
	Text string  `json:"text"`
	N    int     `json:"n"`
}

// TestServeSqlite: a sqlite-backed Python service (testdata/python/
// notes.py: ThreadingHTTPServer, a database file, uuid4 ids, time.time()
// stamps) behind lockstep serve: a client stores 20 notes on one
// keep-alive connection, another on new connections, and the list has
// all 20, with distinct ids and times from the log's clock; Ctrl-C ends
// it with a verdict, and when the replicas agreed the recorded log
// reproduces every answer in a replay. Python's threads make the clock
// reads, and so the stamps, differ between replicas at times (docs/
// serve.md, "Concurrency and threads"): a replica that differs is named
// and the majority answers; where all three differ the answer is cut
// short (never held); both are logged.
func TestServeSqlite(t *testing.T) {
	log := filepath.Join(t.TempDir(), "notes.log")
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	common := []string{"--address", sock, "--namespace", namespace}
	begin := time.Now()
	cmd, addr, stderr := startServe(t, append(append([]string{"--record", log}, common...), pythonImage, "--", "/usr/bin/python3", "/srv/notes.py", "8080", "/tmp/notes.db")...)
	cut := 0 // answers cut short where the replicas split three ways
	ask := func(client *http.Client, method, body string) (string, bool) {
		req, _ := http.NewRequest(method, "http://"+addr+"/notes", strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s /notes: %v", method, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if errors.Is(err, io.ErrUnexpectedEOF) {
			cut++
			return "", false
		}
		if err != nil {
			t.Fatalf("%s /notes: %v", method, err)
		}
		return string(b), true
	}
	for c, client := range []*http.Client{
		{Timeout: 60 * time.Second},
		{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	} {
		for i := 0; i < 10; i++ {
			var n note
			body, whole := ask(client, "POST", fmt.Sprintf("note %d of client %d", i, c))
			if err := json.Unmarshal([]byte(body), &n); whole && (err != nil || len(n.ID) != 36 || n.N != 10*c+i+1) {
				t.Errorf("POST: %q", body)
			}
		}
	}
	var notes []note
	body, whole := ask(http.DefaultClient, "GET", "")
	if cut > 0 {
		t.Logf("%d answers cut short: the replicas' clock reads split three ways (docs/serve.md, \"Concurrency and threads\")", cut)
	}
	if err := json.Unmarshal([]byte(body), &notes); whole && (err != nil || len(notes) != 20) {
		t.Fatalf("GET /notes: %d notes, %v: %q", len(notes), err, body)
	}
	ids := map[string]bool{}
	for _, n := range notes {
		ids[n.ID] = true
		if at := time.Unix(0, int64(n.At*1e9)); at.Before(begin.Add(-time.Second)) || at.After(time.Now()) {
			t.Errorf("note %q stamped %v, not the log's time (after %v)", n.Text, at, begin)
		}
	}
	if whole && len(ids) != 20 {
		t.Errorf("%d distinct ids in 20 notes", len(ids))
	}
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if !strings.Contains(stderr.String(), "answered") || strings.Contains(stderr.String(), "lockstep serve: stopped:") {
		t.Fatalf("serve: %v\n%s", err, stderr.String())
	}
	if err != nil { // the replicas disagreed: the majority answered, or the answer was cut short
		if !strings.Contains(stderr.String(), "its answers differ from the majority's") && !strings.Contains(stderr.String(), "cut short") {
			t.Fatalf("serve: %v\n%s", err, stderr.String())
		}
		t.Logf("a replica diverged (a thread schedule's clock reads, docs/serve.md):\n%s", stderr.String())
		return // the record is not verified: there is nothing to reproduce
	}
	_, errs, code := runCLI(t, "", nil, append(append([]string{"replay"}, common...), log)...)
	if code != 0 || !strings.Contains(errs, "reproduced the recorded run") {
		t.Errorf("replay: exit %d: %s", code, errs)
	}
}
