//go:build linux

package integration

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/replicate"
)

// The hub runs in a network namespace of its own on the hosts' bridge;
// the requestor is the host side (10.213.0.1).
const (
	hubNetns = "lockstep-it-hub"
	hubIP    = hostNet + ".5"
)

type hubProc struct {
	cmd        *exec.Cmd
	addr       string // ID@HOST:PORT
	dir, key   string
	stderr     *lockedBuffer
	statusAddr string
}

// startHubNetns makes the hub's namespace on the bridge.
func startHubNetns(t *testing.T) {
	exec.Command("ip", "netns", "del", hubNetns).Run()
	exec.Command("ip", "link", "del", "lshub0").Run()
	sh(t, "ip", "netns", "add", hubNetns)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", hubNetns).Run()
		exec.Command("ip", "link", "del", "lshub0").Run()
	})
	sh(t, "ip", "link", "add", "lshub0", "type", "veth", "peer", "name", "eth0", "netns", hubNetns)
	sh(t, "ip", "link", "set", "lshub0", "master", hostBridge, "up")
	sh(t, "ip", "-n", hubNetns, "addr", "add", hubIP+"/24", "dev", "eth0")
	sh(t, "ip", "-n", hubNetns, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", hubNetns, "link", "set", "lo", "up")
}

// startHub starts `lockstep hub` in its namespace, on its data directory.
func startHub(t *testing.T, dir string) *hubProc {
	t.Helper()
	h := &hubProc{dir: dir, key: filepath.Join(dir, "hub.key"), stderr: &lockedBuffer{}, statusAddr: hubIP + ":7401"}
	h.cmd = exec.Command("nsenter", "--net=/run/netns/"+hubNetns, lockstepBinary(t), "hub", "--listen", hubIP+":7400",
		"--status", h.statusAddr, "--key", h.key, "--data-dir", filepath.Join(dir, "etcd"))
	var out strings.Builder
	h.cmd.Stdout, h.cmd.Stderr = &out, h.stderr
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.kill)
	for i := 0; i < 200 && !strings.Contains(out.String(), "\n"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	h.addr = strings.TrimSpace(out.String())
	if h.addr == "" {
		t.Fatalf("the hub did not start: %s", h.stderr.String())
	}
	return h
}

func (h *hubProc) kill() {
	if h.cmd.ProcessState == nil {
		h.cmd.Process.Kill()
		h.cmd.Wait()
	}
}

// serveHub starts `lockstep provider --hub` in the host's namespace.
func (h *host) serveHub(t *testing.T, port int, name, hubAddr string, extra ...string) *exec.Cmd {
	t.Helper()
	cmd := h.provider(t, name, append([]string{"--hub", hubAddr, "--listen", fmt.Sprintf("%s:%d", h.addr, port)}, extra...)...)
	if s := cmd.Stderr.(*lockedBuffer).String(); strings.Contains(s, "warning") {
		t.Fatalf("provider %s: %s", name, s)
	}
	return cmd
}

// requestor runs lockstep as the requestor (the host side), with the hub
// and its key in the environment as a user would set them.
type requestor struct{ hub, key string }

func (r requestor) cmd(t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.Command(lockstepBinary(t), args...)
	cmd.Env = append(os.Environ(), "LOCKSTEP_HUB="+r.hub, "LOCKSTEP_KEY="+r.key)
	return cmd
}

func (r requestor) run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return runCmd(t, r.cmd(t, args...), strings.NewReader(stdin), nil)
}

// hubVerdict is lockstep run --json's verdict of a run the hub guarded.
type hubVerdict struct {
	ExitKind string `json:"exit_kind"`
	Status   int    `json:"status"`
	Stream   string `json:"stream"`
	Link     struct {
		Sent     int64 `json:"sent"`
		Received int64 `json:"received"`
	} `json:"hub_link"`
	replicate.Verdict
}

func parseHubVerdict(t *testing.T, errs string) hubVerdict {
	t.Helper()
	var v hubVerdict
	i := strings.Index(errs, "{")
	if i < 0 || json.Unmarshal([]byte(errs[i:]), &v) != nil {
		t.Fatalf("no verdict: %s", errs)
	}
	return v
}

// startHubWorld starts three provider hosts working for a hub in its own
// namespace; it returns them, a requestor, and register, which registers
// a service of the probe image (or of image@digest, if cmd[0] is
// "image=REF@DIGEST"; a network service on a port, if the next is
// "port=N") as its owner.
func startHubWorld(t *testing.T) ([]*host, *hubProc, requestor, func(name string, replicas int, cmd ...string)) {
	hosts, _ := startHosts(t, 3)
	startHubNetns(t)
	hb := startHub(t, t.TempDir())
	for _, h := range hosts {
		h.serveHub(t, 7450, h.name+"-hub", hb.addr)
	}
	r := requestor{hub: hb.addr, key: filepath.Join(t.TempDir(), "requestor.key")}
	img, err := hosts[0].containerd.client.GetImage(hosts[0].containerd.ctx(), probeImage)
	if err != nil {
		t.Fatal(err)
	}
	probe := probeImage + "@" + img.Target().Digest.String()
	owner := requestor{hub: hb.addr, key: filepath.Join(t.TempDir(), "owner.key")}
	register := func(name string, replicas int, cmd ...string) {
		t.Helper()
		image := probe
		flags := []string{"--replicas", fmt.Sprint(replicas)}
		if ref, ok := strings.CutPrefix(cmd[0], "image="); ok {
			image, cmd = ref, cmd[1:]
		}
		if port, ok := strings.CutPrefix(cmd[0], "port="); ok {
			flags, cmd = append(flags, "--port", port), cmd[1:]
		}
		args := append(append(append([]string{"register"}, flags...), name, image, "--"), cmd...)
		if _, errs, code := owner.run(t, "", args...); code != 0 {
			t.Fatalf("register %s: exit %d: %s", name, code, errs)
		}
	}
	return hosts, hb, r, register
}

// TestHub: named services on three provider hosts through a hub in its
// own namespace: a pipeline of names, the requestor's traffic for 1, 3
// and 5 replicas, parallel, an unknown name, a requestor that vanishes,
// the hub restarted, a provider that lies and one that dies.
func TestHub(t *testing.T) {
	hosts, hb, r, register := startHubWorld(t)
	register("upper", 3, "/bin/busybox", "tr", "a-z", "A-Z")
	register("rev", 3, "/bin/busybox", "rev")
	register("square", 3, "/bin/busybox", "sh", "-c", `echo $(($1*$1))`, "sh")
	for _, n := range []int{1, 3, 5} {
		register(fmt.Sprintf("sum%d", n), n, "/bin/busybox", "sha256sum")
	}
	register("token", 3, "/bin/busybox", "sh", "-c", "cat; head -c 8 /dev/urandom | /bin/busybox od -An -tx1")
	register("slow", 3, "/bin/busybox", "sh", "-c", "cat; sleep 600")
	register("kv", 3, "port=8080", "/kv")

	t.Run("pipe of names", func(t *testing.T) {
		cmd := exec.Command("sh", "-c", "echo hello | lockstep pipe upper | lockstep pipe rev")
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(lockstepBinary(t))+":"+os.Getenv("PATH"), "LOCKSTEP_HUB="+r.hub, "LOCKSTEP_KEY="+r.key)
		var errs strings.Builder
		cmd.Stderr = &errs
		out, err := cmd.Output()
		if err != nil || string(out) != "OLLEH\n" {
			t.Fatalf("echo hello | lockstep pipe upper | lockstep pipe rev: %q, %v: %s", out, err, errs.String())
		}
	})

	t.Run("record and replay", func(t *testing.T) {
		// Anyone can re-verify a guarded run from its record: the log
		// the hub wrote, exported by the requestor, replayed here.
		log := filepath.Join(t.TempDir(), "upper.log")
		out, errs, code := r.run(t, "record me\n", "run", "--record", log, "upper")
		if code != 0 || out != "RECORD ME\n" {
			t.Fatalf("run --record: exit %d, %q: %s", code, out, errs)
		}
		sock := filepath.Join(env.providers[0].dir, "containerd.sock")
		again, errs, code := runCLI(t, "", nil, "replay", "--address", sock, "--namespace", namespace, log)
		if code != 0 || again != out || !strings.Contains(errs, "reproduced the recorded run") {
			t.Fatalf("replay: exit %d, %q: %s", code, again, errs)
		}
	})

	t.Run("requestor link", func(t *testing.T) {
		in := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
		for _, n := range []int{1, 3, 5} {
			out, errs, code := r.run(t, in, "run", "--json", fmt.Sprintf("sum%d", n))
			v := parseHubVerdict(t, errs)
			if code != 0 || !v.Agreed || len(v.Replicas) != n || out != fmt.Sprintf("%x  -\n", sha256.Sum256([]byte(in))) {
				t.Fatalf("sum%d: exit %d: %s", n, code, errs)
			}
			t.Logf("%d replicas: input %d B, verified output %d B; the requestor's link: sent %d B (input + %d), received %d B (output + %d)",
				n, len(in), len(out), v.Link.Sent, v.Link.Sent-int64(len(in)), v.Link.Received, v.Link.Received-int64(len(out)))
			if over := v.Link.Sent - int64(len(in)); over < 0 || over > 64<<10 {
				t.Errorf("%d replicas: sent %d B for %d B of input", n, v.Link.Sent, len(in))
			}
			if over := v.Link.Received - int64(len(out)); over < 0 || over > 16<<10 {
				t.Errorf("%d replicas: received %d B for %d B of output", n, v.Link.Received, len(out))
			}
		}
	})

	t.Run("parallel", func(t *testing.T) {
		var in, want strings.Builder
		for i := 1; i <= 100; i++ {
			fmt.Fprintln(&in, i)
			fmt.Fprintln(&want, i*i)
		}
		start := time.Now()
		out, errs, code := r.run(t, in.String(), "parallel", "square", "-j", "4")
		if code != 0 || out != want.String() {
			t.Fatalf("seq 1 100 | lockstep parallel square -j 4: exit %d, %q: %s", code, out, errs)
		}
		t.Logf("100 jobs of 3 replicas, 4 at once: %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("unknown name", func(t *testing.T) {
		_, errs, code := r.run(t, "x", "pipe", "uper")
		if code != 2 || !strings.Contains(errs, `no such service "uper"; did you mean upper?`) {
			t.Fatalf("exit %d: %s", code, errs)
		}
		_, errs, code = r.run(t, "x", "pipe", "--replicas", "5", "upper")
		if code != 2 || !strings.Contains(errs, "--replicas is not the requestor's") {
			t.Fatalf("--replicas with --hub: exit %d: %s", code, errs)
		}
	})

	t.Run("requestor vanishes", func(t *testing.T) {
		cmd := r.cmd(t, "run", "slow")
		stdin, _ := cmd.StdinPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		io.WriteString(stdin, "held open\n")
		waitContainers(t, hosts, "slow-", 1, 30*time.Second)
		cmd.Process.Kill()
		cmd.Wait()
		waitContainers(t, hosts, "slow-", 0, 30*time.Second)
	})

	t.Run("serve a name", func(t *testing.T) {
		if _, errs, code := r.run(t, "", "run", "kv"); code != 125 || !strings.Contains(errs, "is a network service on port 8080: lockstep serve it") {
			t.Errorf("lockstep run of a network service: exit %d: %s", code, errs)
		}
		log := filepath.Join(t.TempDir(), "kv.log")
		cmd := r.cmd(t, "serve", "--json", "--record", log, "kv")
		errs := &lockedBuffer{}
		cmd.Stderr = errs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		addr := ""
		for i := 0; i < 200 && addr == ""; i++ {
			time.Sleep(50 * time.Millisecond)
			if m := regexp.MustCompile(`kv on (\S+), at the hub`).FindStringSubmatch(errs.String()); m != nil {
				addr = m[1]
			}
		}
		if addr == "" {
			t.Fatalf("no address: %s", errs.String())
		}
		waitServing(t, addr)
		client := &http.Client{Timeout: 30 * time.Second}
		for i := 1; i <= 3; i++ {
			want := fmt.Sprintf(`{"key":"a","value":"%d","version":%d}`+"\n", i, i)
			if got := get(t, client, "PUT", "http://"+addr+"/k/a", fmt.Sprint(i)); got != want {
				t.Errorf("PUT: %q, want %q", got, want)
			}
		}
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		v := parseHubVerdict(t, errs.String())
		if err != nil || !v.Agreed || len(v.Replicas) != 3 || !strings.Contains(errs.String(), "answered") {
			t.Fatalf("serve kv at the hub: %v: %s", err, errs.String())
		}
		t.Logf("%s", v.Detail)
		// The record re-checks every answer offline, here.
		sock := filepath.Join(env.providers[0].dir, "containerd.sock")
		_, rerrs, code := runCLI(t, "", nil, "replay", "--address", sock, "--namespace", namespace, log)
		if code != 0 || !strings.Contains(rerrs, "reproduced the recorded run") {
			t.Fatalf("replay of the served record: exit %d: %s", code, rerrs)
		}
		digests, _ := os.ReadFile(log + ".digests")
		if !strings.Contains(string(digests), `"stream":"conn 1"`) {
			t.Errorf("the record's digests have no answers: %.300s", digests)
		}
	})

	top := t
	t.Run("hub restarted", func(t *testing.T) {
		hb.kill()
		hb = startHub(top, hb.dir)
		out, errs, code := r.run(t, "", "services")
		for _, n := range []string{"upper", "rev", "square", "sum5", "slow"} {
			if code != 0 || !strings.Contains(out, n+" ") {
				t.Fatalf("services after a restart: exit %d: %s%s", code, out, errs)
			}
		}
		page := status(t, hb)
		for _, want := range []string{"host-0-hub", "host-2-hub", "square", "agreed", "cancelled"} {
			if !strings.Contains(page, want) {
				t.Errorf("the status page after a restart has no %q", want)
			}
		}
		// The providers announce themselves to the new hub within 5 s.
		out, errs, code = r.run(t, "hub\n", "run", "upper")
		if code != 0 || out != "HUB\n" {
			t.Fatalf("a run after the restart: exit %d, %q: %s", code, out, errs)
		}
	})

	t.Run("liar", func(t *testing.T) {
		// host-2's provider is replaced by one with its key whose
		// replicas get another seed.
		p := hosts[2].providers[len(hosts[2].providers)-1]
		p.Process.Kill()
		p.Wait()
		hosts[2].serveHub(t, 7451, "host-2-hub", hb.addr, "--annotation", "io.lockstep.seed=7")
		time.Sleep(500 * time.Millisecond)
		_, errs, code := r.run(t, "x\n", "run", "--json", "token")
		v := parseHubVerdict(t, errs)
		cheat := -1
		for i, rep := range v.Replicas {
			if rep.Provider == "host-2-hub" {
				cheat = i
			}
		}
		if cheat < 0 {
			t.Fatalf("no replica on the liar: %s", errs)
		}
		if hostDependent(t)["rdtsc"] {
			if code != 4 || v.Replicas[cheat].State != "differs" {
				t.Fatalf("exit %d: %s", code, errs)
			}
		} else if code != 3 || len(v.Odd) != 1 || v.Odd[0] != v.Replicas[cheat].Name {
			t.Fatalf("exit %d: %s", code, errs)
		}
		t.Logf("%s", v.Detail)
	})

	t.Run("provider dies", func(t *testing.T) {
		var in strings.Builder
		for i := 0; i < 2000; i++ {
			fmt.Fprintf(&in, "line %d\n", i)
		}
		register("count", 3, "/bin/busybox", "sh", "-c", "wc -l; sleep 3; echo done")
		kill := func() {
			// The replicas read all input, then wait 3 s: kill host 1 then.
			time.Sleep(2 * time.Second)
			hosts[1].kill()
		}
		out, errs, code := runCmd(t, r.cmd(t, "run", "--json", "count"), strings.NewReader(in.String()), kill)
		v := parseHubVerdict(t, errs)
		if code != 0 || !v.Agreed || out != "2000\ndone\n" || len(v.Lost) != 1 {
			t.Fatalf("exit %d, %q: %s", code, out, errs)
		}
		t.Logf("%s", v.Detail)
	})

	t.Run("status page in a browser", func(t *testing.T) {
		page := browse(t, "http://"+hb.statusAddr+"/")
		// The liar's run: named where the host makes everything
		// deterministic, put down to the host where it cannot.
		liar := "host-2-hub is odd: its output differs from the majority's"
		if hostDependent(t)["rdtsc"] {
			liar = "host limited: host cannot make rdtsc"
		}
		// The browser's DOM: the parser adds the tables' tbody.
		for _, want := range []string{`<table id="providers"><tbody>`, "<td>host-0-hub</td>", "<td>host-2-hub</td>", "<td>square</td>",
			`<td>upper</td><td>3</td><td>` + probeImage + `</td>`, "cancelled", liar} {
			if !strings.Contains(page, want) {
				t.Errorf("the status page in chromium has no %q:\n%s", want, page)
			}
		}
		i := strings.Index(page, `<a href="/v1/streams/token-`)
		if i < 0 {
			t.Fatal("no link to the liar's run's divergence")
		}
		link := page[i+len(`<a href="`):]
		link = link[:strings.Index(link, `"`)]
		if v := browse(t, "http://"+hb.statusAddr+link); !regexp.MustCompile(`"state":\s*"(diverged|agree|pending)"`).MatchString(v) || !strings.Contains(v, "replica-") {
			t.Errorf("%s: %s", link, v)
		}
	})
}

// browse is the DOM of url as headless Chromium (Debian's) renders it.
func browse(t *testing.T, url string) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed (apt-get install -y chromium): the status page is tested in a real browser")
	}
	out, err := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir="+t.TempDir(), "--dump-dom", url).Output()
	if err != nil {
		t.Fatalf("chromium %s: %v", url, err)
	}
	return string(out)
}

// waitContainers waits until the hosts have n or more (n > 0) or no (n
// == 0) containers whose IDs start with prefix (a stream's: the hosts'
// containerd keep what earlier tests' killed hosts left).
func waitContainers(t *testing.T, hosts []*host, prefix string, n int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		total := 0
		var ids []string
		for _, h := range hosts {
			cs, err := h.containerd.client.Containers(h.containerd.ctx())
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cs {
				if strings.HasPrefix(c.ID(), prefix) {
					total++
					ids = append(ids, h.name+":"+c.ID())
				}
			}
		}
		if n == 0 && total == 0 || n > 0 && total >= n {
			return
		}
		if time.Now().After(deadline) {
			var logs []string
			for _, h := range hosts {
				for _, p := range h.providers {
					logs = append(logs, p.Stderr.(*lockedBuffer).String())
				}
			}
			t.Fatalf("%d containers after %v, want %d: %s\n%s", total, limit, n, ids, strings.Join(logs, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// status is the hub's status page.
func status(t *testing.T, hb *hubProc) string {
	t.Helper()
	resp, err := http.Get("http://" + hb.statusAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
