package shim

import (
	"strings"
	"testing"

	"github.com/lockstep-run/lockstep/virt"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRewriteSpec(t *testing.T) {
	spec := &specs.Spec{
		Process: &specs.Process{Args: []string{"/probe", "x"}, Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}}},
		Linux:   &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}},
	}
	s := DefaultSettings()
	dir := StateDir(DefaultStateDir, "/run/containerd/io.containerd.runtime.v2.task/k8s.io/"+strings.Repeat("f", 64))
	if err := RewriteSpec(spec, &s, dir, "/usr/local/bin/lockstep-shim-exec"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(spec.Process.Args, " "); got != ContainerHelper+" /probe x" {
		t.Errorf("args %q", got)
	}
	if spec.Hostname != "lockstep" || !spec.Process.NoNewPrivileges {
		t.Errorf("hostname %q, no_new_privs %v", spec.Hostname, spec.Process.NoNewPrivileges)
	}
	for _, ns := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.UTSNamespace, specs.IPCNamespace, specs.MountNamespace, specs.CgroupNamespace, specs.NetworkNamespace} {
		if !hasNamespace(spec.Linux.Namespaces, ns) {
			t.Errorf("no %s namespace", ns)
		}
	}
	sc := spec.Linux.Seccomp
	if sc == nil || len(sc.ListenerPath) >= 108 || !strings.HasPrefix(sc.ListenerPath, dir) {
		t.Fatalf("listener path %q (max 107 bytes, in %s)", sc.ListenerPath, dir)
	}
	if len(sc.Architectures) != 1 || sc.Architectures[0] != specs.ArchX86_64 {
		t.Errorf("architectures %v: i386 and x32 must meet the bad-arch action", sc.Architectures)
	}
	limits := map[string]specs.POSIXRlimit{}
	for _, r := range spec.Process.Rlimits {
		limits[r.Type] = r
	}
	if len(limits) != len(virt.Rlimits) || len(spec.Process.Rlimits) != len(virt.Rlimits) {
		t.Errorf("rlimits %v: want each of the %d once", spec.Process.Rlimits, len(virt.Rlimits))
	}
	if r := limits["RLIMIT_NOFILE"]; r.Soft != 1024 || r.Hard != 1024 {
		t.Errorf("the spec's RLIMIT_NOFILE became %+v", r)
	}
	if r := limits["RLIMIT_SIGPENDING"]; r.Soft != 16384 || r.Hard != 16384 {
		t.Errorf("RLIMIT_SIGPENDING %+v, want Lockstep's 16384", r)
	}
	mounts := map[string]string{}
	for _, m := range spec.Mounts {
		mounts[m.Destination] = m.Source
	}
	if mounts[ContainerDir] != dir || mounts[ContainerHelper] != "/usr/local/bin/lockstep-shim-exec" {
		t.Errorf("mounts %v", mounts)
	}
}

func TestRewriteSpecKeepsHostname(t *testing.T) {
	spec := &specs.Spec{Hostname: "web-1", Process: &specs.Process{Args: []string{"/bin/sh"}}}
	s := DefaultSettings()
	if err := RewriteSpec(spec, &s, "/run/x", "/h"); err != nil {
		t.Fatal(err)
	}
	if spec.Hostname != "web-1" || s.Config.Hostname != "web-1" {
		t.Errorf("hostname %q, world's %q", spec.Hostname, s.Config.Hostname)
	}
	if err := RewriteSpec(&specs.Spec{Process: &specs.Process{}}, &s, "/run/x", "/h"); err == nil {
		t.Error("a spec with no command was accepted")
	}
}

// TestMergeSeccomp: a container's default-deny profile keeps its default
// action and other rules; the determinism rules replace its rules for the
// same syscalls; a conditionally routed syscall it allowed stays allowed
// when the condition fails.
func TestMergeSeccomp(t *testing.T) {
	user := &specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"read", "clock_gettime", "personality", "mmap"}, Action: specs.ActAllow},
			{Names: []string{"mount"}, Action: specs.ActErrno},
		},
	}
	s := DefaultSettings()
	spec := &specs.Spec{Process: &specs.Process{Args: []string{"/x"}}, Linux: &specs.Linux{Seccomp: user}}
	if err := RewriteSpec(spec, &s, "/run/x", "/h"); err != nil {
		t.Fatal(err)
	}
	m := spec.Linux.Seccomp
	if m.DefaultAction != specs.ActErrno || len(m.Architectures) != 1 {
		t.Errorf("default %s, architectures %v", m.DefaultAction, m.Architectures)
	}
	actions := map[string][]specs.LinuxSyscall{}
	for _, sc := range m.Syscalls {
		for _, n := range sc.Names {
			actions[n] = append(actions[n], sc)
		}
	}
	if a := actions["clock_gettime"]; len(a) != 1 || a[0].Action != specs.ActNotify {
		t.Errorf("clock_gettime: %+v", a)
	}
	if a := actions["read"]; len(a) != 1 || a[0].Action != specs.ActAllow {
		t.Errorf("read: %+v", a)
	}
	if a := actions["mount"]; len(a) != 1 || a[0].Action != specs.ActErrno {
		t.Errorf("mount: %+v", a)
	}
	// personality: EPERM when ADDR_NO_RANDOMIZE is clear, allowed when set.
	p := actions["personality"]
	if len(p) != 2 || p[0].Action != specs.ActErrno || p[1].Action != specs.ActAllow ||
		p[1].Args[0].Value != p[0].Args[0].Value || p[1].Args[0].ValueTwo != p[0].Args[0].Value {
		t.Errorf("personality: %+v", p)
	}
	// prctl was not allowed by the container: only the traced case exists.
	if a := actions["prctl"]; len(a) != 1 || a[0].Action != specs.ActTrace {
		t.Errorf("prctl: %+v", a)
	}
}
