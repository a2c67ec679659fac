//go:build linux

package integration

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/lockstep-run/lockstep/hub"
	"github.com/lockstep-run/lockstep/logd/wire"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/replicate"
)

// Provider hosts are simulated as network namespaces on a bridge: each
// runs its own containerd and `lockstep provider`, and reaches logd and
// is reached by lockstep run over TCP only.
const (
	hostBridge = "lsbr0"
	hostNet    = "10.213.0"
)

type host struct {
	name, netns, addr string
	pinned            string // its first provider's ID@HOST:PORT
	containerd        *provider
	providers         []*exec.Cmd
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// startHosts makes n provider hosts on a bridge and a logd on the host
// side; it returns them and logd's URL.
func startHosts(t *testing.T, n int) ([]*host, string) {
	exec.Command("ip", "link", "del", hostBridge).Run() // a leftover
	sh(t, "ip", "link", "add", hostBridge, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", hostBridge).Run() })
	sh(t, "ip", "addr", "add", hostNet+".1/24", "dev", hostBridge)
	sh(t, "ip", "link", "set", hostBridge, "up")
	_, logdURL := startLogdOn(t, hostNet+".1:0")
	hostKey = filepath.Join(t.TempDir(), "requestor.key")
	hostKeyID = partyID(t, hostKey)
	var hosts []*host
	for i := 0; i < n; i++ {
		h := &host{name: fmt.Sprintf("host-%d", i), netns: fmt.Sprintf("lockstep-it-%d", i), addr: fmt.Sprintf("%s.%d", hostNet, 10+i)}
		exec.Command("ip", "netns", "del", h.netns).Run()
		sh(t, "ip", "netns", "add", h.netns)
		t.Cleanup(func() {
			h.kill()
			exec.Command("ip", "netns", "del", h.netns).Run()
			exec.Command("ip", "link", "del", fmt.Sprintf("lsv%d", i)).Run()
		})
		veth := fmt.Sprintf("lsv%d", i)
		exec.Command("ip", "link", "del", veth).Run() // a leftover
		sh(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
		sh(t, "ip", "link", "set", veth, "master", hostBridge, "up")
		sh(t, "ip", "-n", h.netns, "addr", "add", h.addr+"/24", "dev", "eth0")
		sh(t, "ip", "-n", h.netns, "link", "set", "eth0", "up")
		sh(t, "ip", "-n", h.netns, "link", "set", "lo", "up")
		p, err := startProvider(h.name, h.netns)
		if err != nil {
			t.Fatal(err)
		}
		h.containerd = p
		if err := p.importImage(env.archive); err != nil {
			t.Fatal(err)
		}
		h.pinned = h.serve(t, 7440, h.name, logdURL)
		hosts = append(hosts, h)
	}
	return hosts, logdURL
}

// hostKey is the key file of the runs on the hosts' providers, which
// trust its ID, hostKeyID.
var hostKey, hostKeyID string

// partyID makes a key file at path if there is none, and returns its ID.
func partyID(t *testing.T, path string) string {
	t.Helper()
	k, err := wire.ReadPrivateKey(path)
	if errors.Is(err, os.ErrNotExist) {
		_, k, _ = ed25519.GenerateKey(rand.Reader)
		err = wire.WritePrivateKey(path, k)
	}
	if err != nil {
		t.Fatal(err)
	}
	return hub.ID(k.Public().(ed25519.PublicKey))
}

// serve starts `lockstep provider` in the host's namespace on port; it
// returns the provider's pinned address, ID@HOST:PORT.
func (h *host) serve(t *testing.T, port int, name, logdURL string, extra ...string) string {
	t.Helper()
	addr := fmt.Sprintf("%s:%d", h.addr, port)
	h.provider(t, name, append([]string{"--listen", addr, "--logd", logdURL, "--trust", hostKeyID}, extra...)...)
	return partyID(t, filepath.Join(h.containerd.dir, name+".key")) + "@" + addr
}

// hostPort is the HOST:PORT of a pinned address: the provider's name in
// verdicts.
func hostPort(pinned string) string {
	_, a, _ := strings.Cut(pinned, "@")
	return a
}

// provider starts `lockstep provider` with args in the host's namespace,
// on its containerd, with the key of name, and waits until it serves.
func (h *host) provider(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	partyID(t, filepath.Join(h.containerd.dir, name+".key")) // made here, so that its ID is known before the provider starts
	args = append([]string{"--net=/run/netns/" + h.netns, lockstepBinary(t), "provider", "--name", name,
		"--key", filepath.Join(h.containerd.dir, name+".key"),
		"--address", filepath.Join(h.containerd.dir, "containerd.sock"), "--namespace", namespace}, args...)
	cmd := exec.Command("nsenter", args...)
	cmd.Stderr = &lockedBuffer{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.providers = append(h.providers, cmd)
	for i := 0; i < 100 && !strings.Contains(cmd.Stderr.(*lockedBuffer).String(), "serving on"); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	return cmd
}

// kill ends every process of the host at once (its network namespace's):
// the provider, containerd, the shims and agents.
func (h *host) kill() {
	out, _ := exec.Command("ip", "netns", "pids", h.netns).Output()
	for _, f := range strings.Fields(string(out)) {
		var pid int
		fmt.Sscan(f, &pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, c := range h.providers {
		c.Wait()
	}
	h.providers = nil
	if h.containerd != nil {
		h.containerd.cmd.Wait()
		h.containerd = nil
	}
}

// runOn runs `lockstep run --json` with replicas on the providers at
// addrs.
func runOn(t *testing.T, logdURL string, addrs []string, stdin string, during func(), args ...string) (string, replicate.Verdict, int) {
	t.Helper()
	cmdArgs := []string{"run", "--json", "--logd", logdURL, "--key", hostKey}
	for _, a := range addrs {
		cmdArgs = append(cmdArgs, "--provider", a)
	}
	out, errs, code := runCLI(t, stdin, during, append(append(cmdArgs, probeImage, "--"), args...)...)
	var v replicate.Verdict
	var kind struct {
		ExitKind string `json:"exit_kind"`
		Status   int    `json:"status"`
	}
	i := strings.Index(errs, "{")
	if i < 0 || json.Unmarshal([]byte(errs[i:]), &v) != nil || json.Unmarshal([]byte(errs[i:]), &kind) != nil {
		t.Fatalf("run: exit %d, no verdict: %s", code, errs)
	}
	want := map[int]string{3: "diverged", 4: "host_limited"}[code]
	if want == "" {
		want = "exit"
	}
	if kind.Status != code || kind.ExitKind != want {
		t.Errorf("run: exit %d, but the verdict says status %d, %q", code, kind.Status, kind.ExitKind)
	}
	return out, v, code
}

func states(v replicate.Verdict) string {
	var s []string
	for _, r := range v.Replicas {
		s = append(s, fmt.Sprintf("%s@%s=%s (%s)", r.Name, r.Provider, r.State, r.Why))
	}
	return strings.Join(s, " ")
}

// TestProviderHosts: three replicas on three provider hosts agree with a
// plain run; a provider that cheats (its replica gets another seed) is
// named; a provider killed mid-run is named as lost and the run completes
// on the others.
func TestProviderHosts(t *testing.T) {
	hosts, logdURL := startHosts(t, 3)
	addrs := []string{hosts[0].pinned, hosts[1].pinned, hosts[2].pinned}

	t.Run("agree", func(t *testing.T) {
		var in strings.Builder
		var lines []string
		for i := 0; i < 20000; i++ {
			l := fmt.Sprintf("%d", (i*7919)%20000)
			fmt.Fprintln(&in, l)
			lines = append(lines, l)
		}
		sort.Strings(lines)
		out, v, code := runOn(t, logdURL, addrs, in.String(), nil, "/bin/busybox", "sort")
		if code != 0 || !v.Agreed || v.Log.State != "agree" || out != strings.Join(lines, "\n")+"\n" {
			t.Fatalf("exit %d, %d bytes, verdict %s: %s (log: %s)", code, len(out), states(v), v.Detail, v.Log.Detail)
		}
		for i, r := range v.Replicas {
			if r.Provider != hostPort(addrs[i]) || r.State != "agreed" {
				t.Errorf("replica %d: %+v", i, r)
			}
		}
	})

	t.Run("untrusted key", func(t *testing.T) {
		args := []string{"run", "--logd", logdURL, "--key", filepath.Join(t.TempDir(), "stranger.key")}
		for _, a := range addrs {
			args = append(args, "--provider", a)
		}
		_, errs, code := runCLI(t, "", nil, append(args, probeImage, "--", "/probe-static")...)
		if code != 125 || !strings.Contains(errs, "403 Forbidden") || !strings.Contains(errs, "takes jobs only from the keys it trusts") {
			t.Fatalf("a run with a key the providers do not trust: exit %d: %s", code, errs)
		}
		// A provider that presents another key than the pinned one.
		wrong := partyID(t, filepath.Join(t.TempDir(), "other.key")) + "@" + hostPort(addrs[0])
		_, errs, code = runCLI(t, "", nil, "run", "--logd", logdURL, "--key", hostKey, "--provider", wrong, probeImage, "--", "/probe-static")
		if code != 125 || !strings.Contains(errs, "not the pinned") {
			t.Fatalf("a provider with another key: exit %d: %s", code, errs)
		}
	})

	t.Run("cheater", func(t *testing.T) {
		cheat := hosts[2].serve(t, 7441, "host-2-cheat", logdURL, "--annotation", "io.lockstep.seed=7")
		_, v, code := runOn(t, logdURL, []string{addrs[0], addrs[1], cheat}, "", nil, "/probe-static")
		if hostDependent(t)["rdtsc"] {
			// The probe reads the TSC, which this host cannot trap: every
			// replica differs, and the host, not a provider, is blamed.
			if code != 4 || v.Agreed || !divergence(t, v) || len(v.Replicas[2].Leaks) == 0 || v.Log.State != "diverged" {
				t.Fatalf("exit %d, verdict %s: %s (log: %s)", code, states(v), v.Detail, v.Log.Detail)
			}
			t.Logf("%s", v.Detail)
			return
		}
		if code != 3 || v.Agreed || len(v.Odd) != 1 || v.Odd[0] != "replica-2" || v.Replicas[2].Provider != hostPort(cheat) {
			t.Fatalf("exit %d, verdict %s: %s", code, states(v), v.Detail)
		}
		if v.Log.State != "diverged" || len(v.Log.Odd) != 1 || v.Log.Odd[0] != "replica-2" {
			t.Errorf("logd's verdict: %+v", v.Log)
		}
		t.Logf("%s", v.Detail)
	})

	t.Run("fetch by each provider", func(t *testing.T) { fetchByProviders(t, hosts, logdURL, addrs) })

	t.Run("serve", func(t *testing.T) {
		// A served stream across the three hosts: connections reach each
		// replica over the provider protocol, answers come back and are
		// voted; Ctrl-C ends it verified, and logd agrees.
		args := []string{"--json", "--logd", logdURL, "--key", hostKey}
		for _, a := range addrs {
			args = append(args, "--provider", a)
		}
		cmd, addr, stderr := startServe(t, append(args, probeImage, "--", "/kv")...)
		var wg sync.WaitGroup
		for c := 0; c < 4; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 30 * time.Second}
				for i := 1; i <= 5; i++ {
					want := fmt.Sprintf(`{"key":"h%d","value":"%d","version":%d}`+"\n", c, i, i)
					if got := get(t, client, "PUT", fmt.Sprintf("http://%s/k/h%d", addr, c), fmt.Sprint(i)); got != want {
						t.Errorf("PUT: %q, want %q", got, want)
					}
				}
			}()
		}
		wg.Wait()
		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil || !strings.Contains(stderr.String(), `"exit_kind": "exit"`) || !strings.Contains(stderr.String(), `"state": "agree"`) {
			t.Fatalf("serve on three hosts: %v\n%s", err, stderr.String())
		}
		for _, a := range addrs {
			if !strings.Contains(stderr.String(), `"provider": "`+hostPort(a)+`"`) {
				t.Errorf("no replica on %s: %s", a, stderr.String())
			}
		}
	})

	t.Run("serve, a provider killed", func(t *testing.T) {
		// kill -9 of host 2's provider process halfway through: every
		// request is answered by the replicas on the other two, and the
		// verdict says replica-2 was lost; then a new provider takes the
		// killed one's place.
		args := []string{"--json", "--logd", logdURL, "--key", hostKey}
		for _, a := range addrs {
			args = append(args, "--provider", a)
		}
		cmd, addr, stderr := startServe(t, append(args, probeImage, "--", "/kv")...)
		client := &http.Client{Timeout: 30 * time.Second}
		for i := 1; i <= 40; i++ {
			if i == 20 {
				killed := hosts[2].providers[0]
				killed.Process.Signal(syscall.SIGKILL)
				killed.Wait()
				hosts[2].providers = hosts[2].providers[1:]
			}
			want := fmt.Sprintf(`{"key":"p","value":"%d","version":%d}`+"\n", i, i)
			if got := get(t, client, "PUT", "http://"+addr+"/k/p", fmt.Sprint(i)); got != want {
				t.Fatalf("PUT %d: %q, want %q", i, got, want)
			}
		}
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		i := strings.Index(stderr.String(), "{")
		var v replicate.Verdict
		if err != nil || i < 0 || json.Unmarshal([]byte(stderr.String()[i:]), &v) != nil {
			t.Fatalf("serve with a provider killed: %v\n%s", err, stderr)
		}
		if !v.Agreed || len(v.Lost) != 1 || v.Lost[0] != "replica-2" || v.Replicas[2].Provider != hostPort(addrs[2]) {
			t.Errorf("verdict %s: %s", states(v), v.Detail)
		}
		t.Logf("replica-2: %s", v.Replicas[2].Why)
		if pinned := hosts[2].serve(t, 7440, hosts[2].name, logdURL); pinned != addrs[2] {
			t.Fatalf("the new provider is %s, not %s", pinned, addrs[2])
		}
	})

	t.Run("killed", func(t *testing.T) {
		var in strings.Builder
		for i := 0; i < 2000; i++ {
			fmt.Fprintf(&in, "line %d\n", i)
		}
		kill := func() {
			// The replicas read all input, then wait 3 s: kill host 1 then.
			time.Sleep(2 * time.Second)
			hosts[1].kill()
		}
		out, v, code := runOn(t, logdURL, addrs, in.String(), kill, "/bin/busybox", "sh", "-c", "wc -l; sleep 3; echo done")
		if code != 0 || !v.Agreed || out != "2000\ndone\n" || len(v.Lost) != 1 || v.Lost[0] != "replica-1" {
			t.Fatalf("exit %d, output %q, verdict %s: %s", code, out, states(v), v.Detail)
		}
		if r := v.Replicas[1]; r.State != "lost" || r.Provider != hostPort(addrs[1]) {
			t.Errorf("replica-1: %+v", r)
		}
		t.Logf("%s; %s: %s", v.Detail, v.Replicas[1].Name, v.Replicas[1].Why)
	})
}
