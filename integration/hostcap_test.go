package integration

import (
	"path/filepath"
	"strings"
	"testing"

	containerd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/lockstep-run/lockstep/shim"
)

// TestHostLimits follows what this host can make deterministic (hostcap):
// where rdtsc cannot be trapped, three replicas of a program that reads
// the TSC are reported as the host's limit with no provider named (exit
// 4), the run says so once, and --require rdtsc (or the shim's
// io.lockstep.require) refuses to start; where it can, the replicas agree
// and --require runs.
func TestHostLimits(t *testing.T) {
	leaky := hostDependent(t)["rdtsc"]
	sock := filepath.Join(env.providers[0].dir, "containerd.sock")
	localRun := func(extra ...string) (string, string, int) {
		args := append([]string{"run", "--replicas", "3", "--address", sock, "--namespace", namespace}, extra...)
		return runCLI(t, "", nil, append(args, probeImage, "--", "/probe-static")...)
	}
	out, errs, code := localRun()
	switch {
	case leaky && (code != 4 || strings.Count(errs, "warning: this host cannot make rdtsc") != 1 ||
		!strings.Contains(errs, "NOT VERIFIED: host cannot make rdtsc") || strings.Contains(errs, " odd")):
		t.Errorf("a host that cannot trap rdtsc: exit %d: %s", code, errs)
	case !leaky && (code != 0 || !strings.Contains(out, "rdtsc ")):
		t.Errorf("a host that traps rdtsc: exit %d: %s", code, errs)
	}
	t.Logf("run: exit %d: %s", code, strings.TrimSpace(errs))

	out, errs, code = localRun("--require", "rdtsc")
	switch {
	case leaky && (code != 125 || out != "" || !strings.Contains(errs, "refused") || !strings.Contains(errs, "rdtsc runs untrapped")):
		t.Errorf("--require rdtsc on a host that cannot: exit %d, stdout %q: %s", code, out, errs)
	case !leaky && code != 0:
		t.Errorf("--require rdtsc on a host that can: exit %d: %s", code, errs)
	}
	t.Logf("run --require rdtsc: exit %d: %s", code, strings.TrimSpace(errs))

	p := env.providers[0]
	c := p.newContainer(t, run{runtime: lockstepRuntime, args: []string{"/probe-static"},
		annotations: map[string]string{shim.AnnotationRequire: "rdtsc"}})
	ctx := p.ctx()
	task, err := c.NewTask(ctx, cio.NullIO)
	if err == nil {
		task.Delete(ctx, containerd.WithProcessKill)
	}
	switch {
	case leaky && (err == nil || !strings.Contains(err.Error(), shim.AnnotationRequire) || !strings.Contains(err.Error(), "rdtsc runs untrapped")):
		t.Errorf("io.lockstep.require=rdtsc on a host that cannot: %v", err)
	case !leaky && err != nil:
		t.Errorf("io.lockstep.require=rdtsc on a host that can: %v", err)
	}
}
