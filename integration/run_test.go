//go:build linux

package integration

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/images"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
)

// local is the provider on p's containerd, reading the log from lc.
func (p *provider) local(lc *logd.Client) *replicate.Local {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	return &replicate.Local{ProviderName: p.name, Containerd: filepath.Join(p.dir, "containerd.sock"), Namespace: namespace, Logd: lc, Key: key}
}

var buildCLI sync.Once

// lockstepBinary builds the lockstep command once.
func lockstepBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(env.dir, "lockstep")
	var out []byte
	var err error
	buildCLI.Do(func() { out, err = exec.Command("go", "build", "-o", bin, "../cmd/lockstep").CombinedOutput() })
	if err != nil {
		t.Fatalf("build lockstep: %v\n%s", err, out)
	}
	return bin
}

// runCLI runs the lockstep command with stdin, calls during (if set) while
// it runs, and returns its stdout, stderr and exit status.
func runCLI(t *testing.T, stdin string, during func(), args ...string) (string, string, int) {
	t.Helper()
	return runCLIFrom(t, strings.NewReader(stdin), during, args...)
}

// runCLIFrom is runCLI with stdin read from r.
func runCLIFrom(t *testing.T, r io.Reader, during func(), args ...string) (string, string, int) {
	t.Helper()
	return runCmd(t, exec.Command(lockstepBinary(t), args...), r, during)
}

// runCmd runs cmd with stdin from r, calling during (if set) once it
// started; it returns its stdout, stderr and exit status.
func runCmd(t *testing.T, cmd *exec.Cmd, r io.Reader, during func()) (string, string, int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if during != nil {
		during()
	}
	err := cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// startLogd runs logd on an embedded etcd member for one test, serving
// on 127.0.0.1.
func startLogd(t *testing.T) *logd.Client {
	c, _ := startLogdOn(t, "127.0.0.1:0")
	return c
}

// startLogdOn runs logd serving on addr and returns a client and its URL.
func startLogdOn(t *testing.T, addr string) (*logd.Client, string) {
	t.Helper()
	e, cl, err := logd.StartEmbedded(logd.Member{Dir: t.TempDir(), Quiet: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(logd.NewServer(logd.NewStore(cl)))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(func() { srv.Close(); cl.Close(); e.Close() })
	return logd.NewClient(srv.URL), srv.URL
}

func replicated(t *testing.T, stdin string, args ...string) (replicate.Verdict, string) {
	t.Helper()
	p := env.providers[0]
	var out bytes.Buffer
	lc := startLogd(t)
	v, err := replicate.Run(context.Background(), replicate.Options{
		Providers: []replicate.Provider{p.local(lc)}, Image: probeImage, Args: args,
		Replicas: 3, Logd: lc, Stream: newID(t), Stdin: strings.NewReader(stdin), Stdout: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	return v, out.String()
}

// TestReplicatedRun: three replicas fed from the log agree, and the
// verified output is what a plain runc container prints for the same input.
func TestReplicatedRun(t *testing.T) {
	var in strings.Builder
	for i := 0; i < 60000; i++ {
		fmt.Fprintf(&in, "line %d\n", i)
	}
	cmd := []string{"/bin/busybox", "sh", "-c", "gzip -c | gzip -dc | sort -r | head -c 200000; exit 5"}
	v, out := replicated(t, in.String(), cmd...)
	if !v.Agreed || v.ExitCode != 5 || v.Log.State != "agree" {
		t.Fatalf("verdict %+v", v)
	}
	plain := env.providers[0].run(t, run{runtime: runcRuntime, args: cmd, stdin: in.String()})
	if out != plain.stdout || len(out) != 200000 {
		t.Errorf("verified output (%d bytes) differs from a plain runc run's (%d bytes)", len(out), len(plain.stdout))
	}
}

// slowReader yields n bytes of lines, a chunk every 10 ms: the log grows
// while the replicas run.
type slowReader struct{ left int }

func (r *slowReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	time.Sleep(10 * time.Millisecond)
	n := min(len(p), r.left, 32<<10)
	for i := range p[:n] {
		p[i] = "0123456789\n"[i%11]
	}
	r.left -= n
	return n, nil
}

// TestReplicatedRunExitsEarly: replicas of a program that exits before the
// end of its input were handed as many entries as their pipes took by
// then, which depends on timing; their final reports are compared whatever
// their sizes, and logd's verdict is agree, not pending.
func TestReplicatedRunExitsEarly(t *testing.T) {
	p := env.providers[0]
	var out bytes.Buffer
	lc := startLogd(t)
	v, err := replicate.Run(context.Background(), replicate.Options{
		Providers: []replicate.Provider{p.local(lc)}, Image: probeImage, Args: []string{"/bin/busybox", "head", "-c", "1000"},
		Replicas: 3, Logd: lc, Stream: newID(t), Stdin: &slowReader{left: 4 << 20}, Stdout: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Agreed || v.ExitCode != 0 || out.Len() != 1000 {
		t.Fatalf("verdict %+v, %d bytes out", v, out.Len())
	}
	if v.Log.State != "agree" || !v.Log.Final {
		t.Errorf("logd's verdict: %+v", v.Log)
	}
}

// TestReplicatedRunDiverges: replicas that read host counters differ; the
// run says so and logd's verifier agrees.
func TestReplicatedRunDiverges(t *testing.T) {
	v, _ := replicated(t, "", "/bin/busybox", "cat", "/proc/interrupts")
	if v.Agreed || v.Log.State != "diverged" || !divergence(t, v) {
		t.Errorf("verdict %+v", v)
	}
}

// divergence reports whether v is a divergence in the form this host
// gives it: where it cannot make rdtsc deterministic (hostcap), the
// replicas "differ", none is named and the detail says why; elsewhere the
// odd ones are named.
func divergence(t *testing.T, v replicate.Verdict) bool {
	t.Helper()
	if !hostDependent(t)["rdtsc"] {
		return !v.HostLimited && len(v.Odd) > 0
	}
	return v.HostLimited && len(v.Odd) == 0 && strings.HasPrefix(v.Detail, "host cannot make rdtsc") &&
		strings.Contains(v.Log.Detail, "cannot make these sources deterministic")
}

// divergedExit is the exit status of a divergence on this host.
func divergedExit(t *testing.T) int {
	if hostDependent(t)["rdtsc"] {
		return 4
	}
	return 3
}

// TestRecordAndReplay: a recorded run's log starts one more copy that
// reproduces the recorded output; a copy running another command is told
// where it differs; an edited log is refused before anything runs.
func TestRecordAndReplay(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "run.log")
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	cli := func(stdin string, args ...string) (string, string, int) { return runCLI(t, stdin, nil, args...) }
	common := []string{"--address", sock, "--namespace", namespace}
	cmd := []string{probeImage, "--", "/bin/busybox", "sh", "-c", "sort -r | head -c 100000; echo; date -u +%s; exit 2"}
	var in strings.Builder
	for i := 0; i < 50000; i++ {
		fmt.Fprintf(&in, "%d\n", i)
	}
	before := time.Now().Unix()
	out, errs, code := cli(in.String(), append(append([]string{"run", "--record", log}, common...), cmd...)...)
	if code != 2 || len(out) < 100000 {
		t.Fatalf("run: exit %d, %d bytes: %s", code, len(out), errs)
	}
	// The log is the clock: the run's time is the real time its log began.
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if now, err := strconv.ParseInt(lines[len(lines)-1], 10, 64); err != nil || now < before || now > time.Now().Unix() {
		t.Errorf("the replicas' date is %q; the run began at %d", lines[len(lines)-1], before)
	}
	again, errs, code := cli("", append(append([]string{"replay"}, common...), append([]string{log}, cmd...)...)...)
	if code != 0 || again != out || !strings.Contains(errs, "reproduced the recorded run") {
		t.Errorf("replay: exit %d, same output %v: %s", code, again == out, errs)
	}
	// The log says what ran: a replay given nothing runs it, one given the
	// image under another name (the same digest) runs it, and one given
	// another command is refused before anything runs.
	if again, errs, code := cli("", append(append([]string{"replay"}, common...), log)...); code != 0 || again != out {
		t.Errorf("replay without IMAGE: exit %d, same output %v: %s", code, again == out, errs)
	}
	p := env.providers[0]
	img, err := p.client.GetImage(p.ctx(), probeImage)
	if err != nil {
		t.Fatal(err)
	}
	alias := "lockstep.test/probes:alias"
	p.client.ImageService().Delete(p.ctx(), alias)
	if _, err := p.client.ImageService().Create(p.ctx(), images.Image{Name: alias, Target: img.Target()}); err != nil {
		t.Fatal(err)
	}
	if again, errs, code := cli("", append(append([]string{"replay"}, common...), append([]string{log, alias}, cmd[1:]...)...)...); code != 0 || again != out {
		t.Errorf("replay of the image under another name: exit %d, same output %v: %s", code, again == out, errs)
	}
	other := ([]string{log, probeImage, "--", "/bin/busybox", "sh", "-c", "sort | head -c 100000; date; exit 2"})
	if again, errs, code := cli("", append(append([]string{"replay"}, common...), other...)...); code != 125 || again != "" || !strings.Contains(errs, "the log was recorded for "+probeImage+" -- /bin/busybox sh -c 'sort -r") {
		t.Errorf("replay of another command: exit %d, stdout %q: %s", code, again, errs)
	}
	// A recording whose output is not what this copy prints: told where.
	restore := editDigests(t, log+".digests", "stdout")
	if _, errs, code := cli("", append(append([]string{"replay"}, common...), log)...); code != divergedExit(t) || !strings.Contains(errs, "DIFFERS: stdout at checkpoint 0") {
		t.Errorf("replay against other digests: exit %d: %s", code, errs)
	}
	restore()
	b, _ := os.ReadFile(log)
	lines = strings.SplitAfter(string(b), "\n")
	lines[1], lines[2] = lines[2], lines[1] // entries 0 and 1, the seed and the config
	os.WriteFile(log, []byte(strings.Join(lines, "")), 0o600)
	if _, errs, code := cli("", append(append([]string{"replay"}, common...), append([]string{log}, cmd...)...)...); code == 0 || !strings.Contains(errs, "reordered") {
		t.Errorf("replay of a reordered log: exit %d: %s", code, errs)
	}
}

// editDigests changes every checkpoint digest of the streams named
// stream... in a recorded digest chain (lockstep run --record's
// LOG.digests); restore puts the file back.
func editDigests(t *testing.T, path, stream string) (restore func()) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if strings.Contains(l, `"stream":"`+stream) {
			l = regexp.MustCompile(`"digest":"[0-9a-f]{8}`).ReplaceAllString(l, `"digest":"00000000`)
		}
		out = append(out, l)
	}
	if err := os.WriteFile(path, []byte(strings.Join(out, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	return func() { os.WriteFile(path, b, 0o600) }
}
