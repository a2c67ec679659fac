package seccomp

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// OCI returns the profile as an OCI LinuxSeccomp for runc. Notified
// syscalls go to the agent listening on listenerPath; listenerMetadata is
// passed to it verbatim (runc 1.1+).
func OCI(rules []Rule, listenerPath, listenerMetadata string) (*specs.LinuxSeccomp, error) {
	if err := Check(rules); err != nil {
		return nil, err
	}
	s := &specs.LinuxSeccomp{
		DefaultAction:    specs.ActAllow,
		Architectures:    []specs.Arch{specs.ArchX86_64},
		ListenerPath:     listenerPath,
		ListenerMetadata: listenerMetadata,
	}
	for _, r := range rules {
		sc := specs.LinuxSyscall{Names: []string{r.Name}}
		switch r.Action {
		case ActAllow:
			continue
		case ActNotify:
			sc.Action = specs.ActNotify
		case ActTrace:
			sc.Action = specs.ActTrace
		case ActErrno:
			sc.Action = specs.ActErrno
			e := uint(r.Errno)
			sc.ErrnoRet = &e
		}
		if c := r.Cond; c != nil {
			a := specs.LinuxSeccompArg{Index: c.Arg, Value: c.Value}
			switch c.Op {
			case OpEq:
				a.Op = specs.OpEqualTo
			case OpNe:
				a.Op = specs.OpNotEqual
			case OpMaskedEq:
				a.Op, a.Value, a.ValueTwo = specs.OpMaskedEqual, c.Mask, c.Value
			case OpPositive32:
				// One comparison per argument: traced unless negative. A
				// zero timeout (a poll) is traced too; the tracer lets it
				// through unchanged.
				a.Op, a.Value, a.ValueTwo = specs.OpMaskedEqual, 1<<31, 0
			}
			sc.Args = []specs.LinuxSeccompArg{a}
		}
		s.Syscalls = append(s.Syscalls, sc)
	}
	return s, nil
}
