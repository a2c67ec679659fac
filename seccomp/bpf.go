package seccomp

import (
	"fmt"

	"golang.org/x/net/bpf"
)

// Seccomp return values (linux/seccomp.h).
const (
	retKillProcess = 0x80000000
	retErrno       = 0x00050000
	retTrace       = 0x7ff00000
	retUserNotif   = 0x7fc00000
	retAllow       = 0x7fff0000
	retDataMask    = 0x0000ffff
	enosys         = 38
)

// Offsets in struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// Return value for a rule, as the filter returns it.
func retFor(r Rule) uint32 {
	switch r.Action {
	case ActNotify:
		return retUserNotif
	case ActTrace:
		return retTrace
	case ActErrno:
		return retErrno | uint32(r.Errno)&retDataMask
	}
	return retAllow
}

// program is a BPF program under construction with forward jumps by label.
type program struct {
	insns  []bpf.Instruction
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at          int
	true, false string // "" means fall through
}

func (p *program) emit(i bpf.Instruction) { p.insns = append(p.insns, i) }

func (p *program) label(name string) { p.labels[name] = len(p.insns) }

// jump emits a conditional jump whose targets are labels ("" = next).
func (p *program) jump(cond bpf.JumpTest, val uint32, onTrue, onFalse string) {
	p.fixups = append(p.fixups, fixup{at: len(p.insns), true: onTrue, false: onFalse})
	p.emit(bpf.JumpIf{Cond: cond, Val: val})
}

func (p *program) resolve() ([]bpf.Instruction, error) {
	for _, f := range p.fixups {
		j := p.insns[f.at].(bpf.JumpIf)
		skip := func(l string) (uint8, error) {
			if l == "" {
				return 0, nil
			}
			to, ok := p.labels[l]
			if !ok {
				return 0, fmt.Errorf("bpf: no label %q", l)
			}
			d := to - f.at - 1
			if d < 0 || d > 255 {
				return 0, fmt.Errorf("bpf: jump to %q out of range (%d)", l, d)
			}
			return uint8(d), nil
		}
		var err error
		if j.SkipTrue, err = skip(f.true); err != nil {
			return nil, err
		}
		if j.SkipFalse, err = skip(f.false); err != nil {
			return nil, err
		}
		p.insns[f.at] = j
	}
	return p.insns, nil
}

// condition emits the test of c; control reaches the next instruction when
// it holds and jumps to fail when it does not.
func (p *program) condition(c Cond, fail, pass string) {
	lo, hi := uint32(offArgs+8*c.Arg), uint32(offArgs+8*c.Arg+4)
	vlo, vhi := uint32(c.Value), uint32(c.Value>>32)
	switch c.Op {
	case OpEq:
		p.emit(bpf.LoadAbsolute{Off: lo, Size: 4})
		p.jump(bpf.JumpEqual, vlo, "", fail)
		p.emit(bpf.LoadAbsolute{Off: hi, Size: 4})
		p.jump(bpf.JumpEqual, vhi, "", fail)
	case OpNe:
		p.emit(bpf.LoadAbsolute{Off: lo, Size: 4})
		p.jump(bpf.JumpEqual, vlo, "", pass)
		p.emit(bpf.LoadAbsolute{Off: hi, Size: 4})
		p.jump(bpf.JumpEqual, vhi, fail, "")
	case OpMaskedEq:
		p.emit(bpf.LoadAbsolute{Off: lo, Size: 4})
		p.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: uint32(c.Mask)})
		p.jump(bpf.JumpEqual, vlo, "", fail)
		p.emit(bpf.LoadAbsolute{Off: hi, Size: 4})
		p.emit(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: uint32(c.Mask >> 32)})
		p.jump(bpf.JumpEqual, vhi, "", fail)
	case OpPositive32: // the kernel reads an int: the low 32 bits
		p.emit(bpf.LoadAbsolute{Off: lo, Size: 4})
		p.jump(bpf.JumpEqual, 0, fail, "")
		p.jump(bpf.JumpGreaterOrEqual, 1<<31, fail, "")
	}
	p.label(pass)
}

// Assemble compiles rules to a seccomp BPF program for x86_64: other
// architectures and x32 syscalls get ENOSYS, rules map to their actions,
// everything else is allowed. Every path that does not load an argument
// ends in a constant, so the kernel's action cache (Linux 5.11+) lets
// allowed syscalls skip the filter entirely.
func Assemble(rules []Rule) ([]bpf.RawInstruction, error) {
	if err := Check(rules); err != nil {
		return nil, err
	}
	p := &program{labels: map[string]int{}}
	p.emit(bpf.LoadAbsolute{Off: offArch, Size: 4})
	p.jump(bpf.JumpEqual, auditArchX86_64, "arch_ok", "")
	p.emit(bpf.RetConstant{Val: retErrno | enosys})
	p.label("arch_ok")
	p.emit(bpf.LoadAbsolute{Off: offNr, Size: 4})
	p.jump(bpf.JumpGreaterOrEqual, x32SyscallBit, "", "native")
	p.emit(bpf.RetConstant{Val: retErrno | enosys})
	p.label("native")
	for i, r := range rules {
		next := fmt.Sprintf("next%d", i)
		p.jump(bpf.JumpEqual, r.Nr, "", next)
		if r.Cond != nil {
			fail := fmt.Sprintf("fail%d", i)
			p.condition(*r.Cond, fail, fmt.Sprintf("pass%d", i))
			p.emit(bpf.RetConstant{Val: retFor(r)})
			p.label(fail)
			p.emit(bpf.RetConstant{Val: retAllow})
		} else {
			p.emit(bpf.RetConstant{Val: retFor(r)})
		}
		p.label(next)
	}
	p.emit(bpf.RetConstant{Val: retAllow})
	insns, err := p.resolve()
	if err != nil {
		return nil, err
	}
	return bpf.Assemble(insns)
}
