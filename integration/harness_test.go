//go:build linux

package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/lockstep-run/lockstep/hack/ociimage"
)

const (
	lockstepRuntime = "io.containerd.lockstep.v1"
	runcRuntime     = "io.containerd.runc.v2"
	probeImage      = "lockstep.test/probes:1"
	pythonImage     = "lockstep.test/python:1"
	dnsImage        = "lockstep.test/python-dns:1" // the Python image with an /etc/resolv.conf naming webAddr
	namespace       = "lockstep-test"
)

// env is what TestMain built and started.
var env struct {
	dir       string
	bin       string // the shim and its helper
	providers []*provider
	archive   []byte // the probe image
}

// provider is one private containerd: its own root, state and socket, as
// on one provider host.
type provider struct {
	name   string
	dir    string
	cmd    *exec.Cmd
	client *containerd.Client
}

func TestMain(m *testing.M) {
	if os.Getenv("LOCKSTEP_INTEGRATION") == "" {
		fmt.Println("integration: skipped; run `make integration` (root, containerd and runc installed)")
		os.Exit(0)
	}
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration setup:", err)
		code = 1
	}
	teardown()
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	if os.Geteuid() != 0 {
		return 1, fmt.Errorf("integration tests must run as root")
	}
	for _, tool := range []string{"containerd", "runc", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return 1, fmt.Errorf("%s is not installed (apt-get install -y containerd runc gcc)", tool)
		}
	}
	dir, err := os.MkdirTemp("", "lockstep-it")
	if err != nil {
		return 1, err
	}
	env.dir, env.bin = dir, filepath.Join(dir, "bin")
	steps := [][]string{
		{"go", "build", "-o", filepath.Join(env.bin, "containerd-shim-lockstep-v1"), "../cmd/containerd-shim-lockstep-v1"},
		{"gcc", "-static", "-O2", "-o", filepath.Join(env.bin, "lockstep-shim-exec"), "../shim/helper/exec.c"},
		{"../testdata/probes/build.sh", filepath.Join(dir, "probes")},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return 1, fmt.Errorf("%s: %v\n%s", strings.Join(s, " "), err, out)
		}
	}
	archive, err := buildProbeImage(filepath.Join(dir, "probes"))
	if err != nil {
		return 1, err
	}
	env.archive = archive
	python, err := buildPythonImage(filepath.Join(dir, "python"), pythonImage, nil)
	if err != nil {
		return 1, err
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+webAddr+"\n"), 0o644); err != nil {
		return 1, err
	}
	dns, err := buildPythonImage(filepath.Join(dir, "python-dns"), dnsImage, map[string]string{"/etc/resolv.conf": resolv})
	if err != nil {
		return 1, err
	}
	for _, name := range []string{"provider-a", "provider-b"} {
		p, err := startProvider(name, "")
		if err != nil {
			return 1, err
		}
		env.providers = append(env.providers, p)
		for _, a := range [][]byte{archive, python, dns} {
			if err := p.importImage(a); err != nil {
				return 1, err
			}
		}
	}
	return m.Run(), nil
}

func teardown() {
	for _, p := range env.providers {
		p.stop()
	}
	if env.dir != "" {
		os.RemoveAll(env.dir)
	}
}

// buildProbeImage makes the probe image: the C probes (static and
// dynamic, with the libraries it loads), the Go probe, busybox.
func buildProbeImage(probes string) ([]byte, error) {
	im := &ociimage.Image{Name: probeImage}
	for _, b := range []struct{ src, dst string }{
		{filepath.Join(probes, "probe-static"), "/probe-static"},
		{filepath.Join(probes, "probe-dynamic"), "/probe-dynamic"},
		{filepath.Join(probes, "goprobe"), "/goprobe"},
		{filepath.Join(probes, "writer"), "/writer"},
		{filepath.Join(probes, "tickecho"), "/tickecho"},
		{filepath.Join(probes, "kv"), "/kv"},
		{filepath.Join(probes, "timercount"), "/timercount"},
		{filepath.Join(probes, "alarmloop"), "/alarmloop"},
		{filepath.Join(probes, "killcompute"), "/killcompute"},
		{filepath.Join(probes, "selecttwo"), "/selecttwo"},
		{filepath.Join(probes, "forkwrite"), "/forkwrite"},
		{"/bin/busybox", "/bin/busybox"},
	} {
		if err := im.AddBinary(b.src, b.dst); err != nil {
			return nil, err
		}
	}
	var buf bytes.Buffer
	if err := im.WriteArchive(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// buildPythonImage makes a Python image of that name: Debian's python3
// with its standard library, the services of testdata/python at /srv, a
// 300 KiB file of pseudo-random bytes at /srv/www/docs/data.bin (made in
// dir), and files (path in the image -> host path).
func buildPythonImage(dir, name string, files map[string]string) ([]byte, error) {
	im := &ociimage.Image{Name: name, Trees: map[string]string{"/srv": "../testdata/python"}}
	if err := im.AddPython("/usr/bin/python3"); err != nil {
		return nil, fmt.Errorf("the python image (apt-get install -y python3): %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	data := make([]byte, 300<<10)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for dst, src := range files {
		im.Files[dst] = src
	}
	im.Files["/srv/www/docs/data.bin"] = filepath.Join(dir, "data.bin")
	if err := os.WriteFile(im.Files["/srv/www/docs/data.bin"], data, 0o644); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := im.WriteArchive(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// startProvider starts a private containerd; in network namespace netns,
// if given (a provider host).
func startProvider(name, netns string) (*provider, error) {
	dir := filepath.Join(env.dir, name)
	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = "%s.ttrpc"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	if netns != "" {
		// nsenter joins only the network namespace (ip netns exec would
		// remount /sys, and runc would find no cgroup mount).
		cmd = exec.Command("nsenter", "--net=/run/netns/"+netns, "containerd", "--config", filepath.Join(dir, "config.toml"))
	}
	cmd.Env = append(os.Environ(), "PATH="+env.bin+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	p := &provider{name: name, dir: dir, cmd: cmd}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := containerd.New(sock, containerd.WithTimeout(time.Second))
		if err == nil {
			if _, err = c.Version(context.Background()); err == nil {
				p.client = c
				return p, nil
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s: containerd did not come up: %v (log: %s)", name, err, filepath.Join(dir, "containerd.log"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *provider) stop() {
	if p.client != nil {
		p.client.Close()
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
	// Shims outlive containerd by design; none should be left.
	exec.Command("pkill", "-f", "containerd-shim-lockstep-v1 -namespace "+namespace).Run()
}

func (p *provider) ctx() context.Context {
	return namespaces.WithNamespace(context.Background(), namespace)
}

func (p *provider) importImage(archive []byte) error {
	ctx := p.ctx()
	imgs, err := p.client.Import(ctx, bytes.NewReader(archive))
	if err != nil {
		return fmt.Errorf("%s: import: %w", p.name, err)
	}
	for _, img := range imgs {
		if err := containerd.NewImage(p.client, img).Unpack(ctx, "overlayfs"); err != nil {
			return fmt.Errorf("%s: unpack %s: %w", p.name, img.Name, err)
		}
	}
	return nil
}

// run describes one container run.
type run struct {
	image       string // default probeImage
	runtime     string
	options     any // runtime options sent to the shim (e.g. CRI's runtimeoptions)
	args        []string
	stdin       string
	annotations map[string]string
}

type runResult struct {
	stdout, stderr string
	code           uint32
}

var seq int

func newID(t *testing.T) string {
	seq++
	return fmt.Sprintf("%s-%d-%d", strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), os.Getpid(), seq)
}

// newContainer creates a container (not its task) and deletes it at the
// end of the test.
func (p *provider) newContainer(t *testing.T, r run) containerd.Container {
	t.Helper()
	ctx := p.ctx()
	image := r.image
	if image == "" {
		image = probeImage
	}
	img, err := p.client.GetImage(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	id := newID(t)
	opts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithProcessArgs(r.args...)}
	if r.annotations != nil {
		opts = append(opts, oci.WithAnnotations(r.annotations))
	}
	c, err := p.client.NewContainer(ctx, id,
		containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(opts...),
		containerd.WithRuntime(r.runtime, r.options))
	if err != nil {
		t.Fatalf("%s: new container: %v", p.name, err)
	}
	t.Cleanup(func() { c.Delete(ctx, containerd.WithSnapshotCleanup) })
	return c
}

// run runs a container to its end and returns its output and status.
func (p *provider) run(t *testing.T, r run) runResult {
	t.Helper()
	ctx := p.ctx()
	c := p.newContainer(t, r)
	var o, e bytes.Buffer
	in := &stdinCloser{r: strings.NewReader(r.stdin)}
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(in, &o, &e)))
	in.setClose(func() { task.CloseIO(ctx, containerd.WithStdinCloser) })
	if err != nil {
		t.Fatalf("%s: new task %v: %v", p.name, r.args, err)
	}
	defer task.Delete(ctx, containerd.WithProcessKill)
	status, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("%s: start %v: %v", p.name, r.args, err)
	}
	var st containerd.ExitStatus
	select {
	case st = <-status:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: %v did not end in 60 s", p.name, r.args)
	}
	task.IO().Wait() // Delete would cancel the copying of the output's tail
	task.Delete(ctx)
	return runResult{o.String(), e.String(), st.ExitCode()}
}

// execIn runs a process in a running task, like `ctr task exec`.
func (p *provider) execIn(t *testing.T, task containerd.Task, execID string, args []string, stdin string) runResult {
	t.Helper()
	ctx := p.ctx()
	spec, err := task.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ps := *spec.Process
	ps.Args = args
	var o, e bytes.Buffer
	in := &stdinCloser{r: strings.NewReader(stdin)}
	proc, err := task.Exec(ctx, execID, &ps, cio.NewCreator(cio.WithStreams(in, &o, &e)))
	in.setClose(func() { proc.CloseIO(ctx, containerd.WithStdinCloser) })
	if err != nil {
		t.Fatalf("exec %v: %v", args, err)
	}
	defer proc.Delete(ctx)
	status, err := proc.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Start(ctx); err != nil {
		t.Fatalf("exec start %v: %v", args, err)
	}
	var st containerd.ExitStatus
	select {
	case st = <-status:
	case <-time.After(60 * time.Second):
		t.Fatalf("exec %v did not end in 60 s", args)
	}
	proc.IO().Wait()
	proc.Delete(ctx)
	return runResult{o.String(), e.String(), st.ExitCode()}
}

// startTask creates and starts a long-running task.
func (p *provider) startTask(t *testing.T, r run) containerd.Task {
	t.Helper()
	ctx := p.ctx()
	c := p.newContainer(t, r)
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, io.Discard, io.Discard)))
	if err != nil {
		t.Fatalf("new task: %v", err)
	}
	t.Cleanup(func() { task.Delete(ctx, containerd.WithProcessKill) })
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	return task
}

func lines(s string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(l, " ")
		m[k] = v
	}
	return m
}

// stdinCloser closes the process's stdin in the shim when its reader is
// done, as ctr does: the shim holds the fifo open otherwise.
type stdinCloser struct {
	r     io.Reader
	mu    sync.Mutex
	eof   bool
	close func()
}

func (s *stdinCloser) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		s.mu.Lock()
		if !s.eof && s.close != nil {
			s.close()
		}
		s.eof = true
		s.mu.Unlock()
	}
	return n, err
}

// setClose sets how to close; if the reader is done already, it closes.
func (s *stdinCloser) setClose(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.close = f
	if s.eof {
		f()
	}
}
