package integration

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/replicate"
)

// TestSetupFailures: a run that cannot start (a missing image, no
// containerd) says why in one line and exits 125, not as a divergence; a
// run interrupted by SIGINT says so, exits 130 and leaves no container.
func TestSetupFailures(t *testing.T) {
	p := env.providers[0]
	sock := filepath.Join(p.dir, "containerd.sock")
	serve := []string{"serve", "--listen", "127.0.0.1:0", "--port", "8080"}
	for _, c := range []struct {
		cmd  []string
		args []string
		want string
	}{
		{[]string{"run"}, []string{"--address", sock, "nosuch/image:1"}, `image "nosuch/image:1": not found (import it with ctr image import)`},
		{[]string{"run"}, []string{"--address", filepath.Join(t.TempDir(), "none.sock"), probeImage}, "is containerd running"},
		{[]string{"pipe"}, []string{"--address", sock, "nosuch/image:1"}, `image "nosuch/image:1": not found`},
		{serve, []string{"--address", sock, "nosuch/image:1"}, `image "nosuch/image:1": not found`},
	} {
		args := append(append(append([]string{}, c.cmd...), "--json", "--replicas", "3", "--namespace", namespace), c.args...)
		_, errs, code := runCLI(t, "", nil, append(args, "--", "/bin/busybox", "true")...)
		if code != 125 || !strings.Contains(errs, "no replica ran: replica-") || !strings.Contains(errs, "replica-0 on local:") || !strings.Contains(errs, "replica-2 on local:") || !strings.Contains(errs, c.want) || strings.Contains(errs, "DIVERGED") || !strings.Contains(errs, `"exit_kind": "setup"`) {
			t.Errorf("%v: exit %d: %s", c.args, code, errs)
		}
		t.Logf("%v: exit %d: %s", c.args, code, strings.TrimSpace(errs))
	}

	// What the replicas wrote to stderr is shown (the majority's, once),
	// so a failing command says why.
	for _, c := range []struct {
		argv []string
		code int
		want string
	}{
		{[]string{"/bin/busybox", "sh", "-c", "echo oops >&2; exit 3"}, 3, "oops\n"},
		{[]string{"/bin/nonexistent"}, 127, "/bin/nonexistent"},
	} {
		args := append([]string{"run", "--replicas", "3", "--address", sock, "--namespace", namespace, probeImage, "--"}, c.argv...)
		_, errs, code := runCLI(t, "", nil, args...)
		if code != c.code || strings.Count(errs, c.want) != 1 {
			t.Errorf("%v: exit %d (want %d), stderr %q (want %q once)", c.argv, code, c.code, errs, c.want)
		}
	}

	// A provider whose image of the run's name is another image (its
	// digest differs) refuses the job.
	lc := startLogd(t)
	_, err := replicate.Run(context.Background(), replicate.Options{
		Providers: []replicate.Provider{p.local(lc)}, Image: probeImage, Digest: "sha256:" + strings.Repeat("0", 64),
		Args: []string{"/bin/busybox", "true"}, Replicas: 1, Logd: lc, Stream: newID(t), Stdin: strings.NewReader(""), Stdout: io.Discard,
	})
	if err == nil || !strings.Contains(err.Error(), "the run's is sha256:0000") {
		t.Errorf("a run of another image digest: %v", err)
	}

	cmd := exec.Command(lockstepBinary(t), "run", "--json", "--replicas", "3", "--address", sock, "--namespace", namespace, probeImage, "--", "/bin/busybox", "sleep", "60")
	var errs bytes.Buffer
	cmd.Stderr = &errs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	cmd.Process.Signal(syscall.SIGINT)
	start := time.Now()
	cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	if code != 130 || !strings.Contains(errs.String(), "interrupted: the replicas were stopped and removed") || strings.Contains(errs.String(), "DIVERGED") || !strings.Contains(errs.String(), `"exit_kind": "interrupted"`) {
		t.Errorf("SIGINT: exit %d after %v: %s", code, time.Since(start), errs.String())
	}
	ctx := p.ctx()
	cs, err := p.client.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if strings.HasPrefix(c.ID(), "run-") {
			t.Errorf("container %s left behind after SIGINT", c.ID())
		}
	}
}
