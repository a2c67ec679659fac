package shim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"

	"github.com/lockstep-run/lockstep/seccomp"
	"github.com/lockstep-run/lockstep/virt"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Inside every container: the agent's directory, bind-mounted read-only.
const (
	ContainerDir    = virt.OwnDir
	ContainerHelper = ContainerDir + "/exec"        // lockstep-shim-exec
	AgentSocket     = "agent.sock"                  // the exec helper's handshake
	SeccompSocket   = "seccomp.sock"                // runc's listenerPath
	HelperName      = "lockstep-shim-exec"          // installed beside the shim
	DefaultStateDir = "/run/containerd-lockstep-v1" // one directory per container
)

// StateDir returns the container's directory on the host, named by a hash
// of its bundle path (unique per containerd instance, namespace and
// container): a unix socket path may not exceed 107 bytes.
func StateDir(root, bundle string) string {
	sum := sha256.Sum256([]byte(bundle))
	return filepath.Join(root, hex.EncodeToString(sum[:8]))
}

// RewriteSpec makes spec deterministic: the determinism seccomp profile
// with its listener in dir, a fixed hostname, PID, UTS, IPC, mount and
// cgroup namespaces, fixed resource limits, and the exec helper (helper on the
// host) in front of the command. The hostname chosen is stored back into s.
func RewriteSpec(spec *specs.Spec, s *Settings, dir, helper string) error {
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return fmt.Errorf("the spec has no process to run")
	}
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	if spec.Hostname == "" {
		spec.Hostname = s.Config.Hostname
	}
	s.Config.Hostname = spec.Hostname

	// The cgroup namespace hides the container's cgroup path, which holds
	// its ID (a replica's name under lockstep run) and the host's layout.
	for _, ns := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.UTSNamespace, specs.IPCNamespace, specs.MountNamespace, specs.CgroupNamespace} {
		if !hasNamespace(spec.Linux.Namespaces, ns) {
			spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: ns})
		}
	}

	profile, err := seccomp.OCI(seccomp.Rules(), filepath.Join(dir, SeccompSocket), "")
	if err != nil {
		return err
	}
	spec.Linux.Seccomp = mergeSeccomp(spec.Linux.Seccomp, profile)

	spec.Mounts = append(spec.Mounts,
		specs.Mount{Destination: ContainerDir, Type: "bind", Source: dir,
			Options: []string{"rbind", "ro", "nosuid", "nodev"}},
		specs.Mount{Destination: ContainerHelper, Type: "bind", Source: helper,
			Options: []string{"bind", "ro", "nosuid", "nodev"}},
	)
	// With no_new_privs runc installs the filter just before it execs
	// (runc 1.1 standard and setns init): without it, runc init makes
	// traced syscalls (fstatfs) before any tracer exists, and they fail.
	spec.Process.NoNewPrivileges = true
	WrapProcess(spec.Process)
	return nil
}

// WrapProcess puts the exec helper in front of a process's command and
// gives it Lockstep's resource limits (virt.Rlimits) where its spec sets
// none: runc leaves those at the shim's, which are containerd's, which
// are the host's.
func WrapProcess(p *specs.Process) {
	p.Args = append([]string{ContainerHelper}, p.Args...)
	set := map[string]bool{}
	for _, r := range p.Rlimits {
		set[r.Type] = true
	}
	for _, r := range virt.Rlimits {
		if !set[r.Name] {
			p.Rlimits = append(p.Rlimits, specs.POSIXRlimit{Type: r.Name, Hard: r.Max, Soft: r.Cur})
		}
	}
}

func hasNamespace(nss []specs.LinuxNamespace, t specs.LinuxNamespaceType) bool {
	for _, ns := range nss {
		if ns.Type == t {
			return true
		}
	}
	return false
}

// mergeSeccomp keeps the container's own profile (its default action and
// its rules for other syscalls) and puts the determinism rules in place of
// its rules for the same syscalls. Only x86_64 is allowed: i386 and x32
// syscalls meet libseccomp's bad-architecture action (kill).
func mergeSeccomp(user, det *specs.LinuxSeccomp) *specs.LinuxSeccomp {
	if user == nil {
		return det
	}
	ours := map[string]bool{}
	for _, sc := range det.Syscalls {
		for _, n := range sc.Names {
			ours[n] = true
		}
	}
	merged := *user
	merged.Architectures = det.Architectures
	merged.ListenerPath = det.ListenerPath
	merged.ListenerMetadata = det.ListenerMetadata
	merged.Syscalls = nil
	for _, sc := range user.Syscalls {
		var keep []string
		for _, n := range sc.Names {
			if !ours[n] {
				keep = append(keep, n)
			}
		}
		if len(keep) > 0 {
			sc.Names = keep
			merged.Syscalls = append(merged.Syscalls, sc)
		}
	}
	merged.Syscalls = append(merged.Syscalls, det.Syscalls...)
	// Syscalls the determinism profile routes conditionally (allowed when
	// the condition fails) must stay allowed under a default-deny profile.
	if merged.DefaultAction != specs.ActAllow {
		for _, sc := range det.Syscalls {
			if len(sc.Args) > 0 && userAllows(user, sc.Names[0]) {
				merged.Syscalls = append(merged.Syscalls, allowUnless(sc))
			}
		}
	}
	return &merged
}

func userAllows(user *specs.LinuxSeccomp, name string) bool {
	for _, sc := range user.Syscalls {
		for _, n := range sc.Names {
			if n == name && sc.Action == specs.ActAllow {
				return true
			}
		}
	}
	return false
}

// allowUnless allows the syscall when sc's one condition does not hold.
func allowUnless(sc specs.LinuxSyscall) specs.LinuxSyscall {
	a := sc.Args[0]
	switch a.Op {
	case specs.OpEqualTo:
		a.Op = specs.OpNotEqual
	case specs.OpNotEqual:
		a.Op = specs.OpEqualTo
	case specs.OpMaskedEqual:
		// arg&mask != value: with one-bit masks (the profile's), the
		// other value of the bit.
		a.ValueTwo ^= a.Value
	}
	return specs.LinuxSyscall{Names: sc.Names, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{a}}
}
