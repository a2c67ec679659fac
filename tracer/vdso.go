package tracer

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
)

// Patch is one write into a tracee's memory.
type Patch struct {
	Symbol string
	Addr   uint64
	Size   uint64 // the symbol's
	Code   []byte
}

// vdsoSyscalls maps the vDSO's entry points to the syscalls that replace
// them (x86_64 numbers).
var vdsoSyscalls = map[string]uint32{
	"__vdso_clock_gettime": 228,
	"__vdso_gettimeofday":  96,
	"__vdso_time":          201,
	"__vdso_clock_getres":  229,
	"__vdso_getcpu":        309,
	"__vdso_getrandom":     318,
}

// syscallStub is `mov eax, nr; syscall; ret`: the vDSO function becomes a
// real syscall with the same arguments (the x86_64 C and syscall
// conventions agree on the first three; clock and getcpu calls need no
// more, and getrandom's extra vDSO arguments are dropped).
func syscallStub(nr uint32) []byte {
	b := []byte{0xb8, 0, 0, 0, 0, 0x0f, 0x05, 0xc3}
	binary.LittleEndian.PutUint32(b[1:], nr)
	return b
}

// stubSyscallOffset is where the syscall instruction sits in a stub.
const stubSyscallOffset = 5

// PlanVDSO returns the patches that turn the vDSO image img, mapped at
// base, into syscall stubs. It fails if a clock entry point is missing:
// a vDSO that cannot be patched must not be left to read the host clock.
func PlanVDSO(img []byte, base uint64) ([]Patch, error) {
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return nil, fmt.Errorf("vdso: %w", err)
	}
	var vaddr uint64
	found := false
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Off == 0 {
			vaddr, found = p.Vaddr, true
			break
		}
	}
	if !found {
		return nil, errors.New("vdso: no PT_LOAD segment at offset 0")
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return nil, fmt.Errorf("vdso symbols: %w", err)
	}
	var patches []Patch
	seen := map[uint64]bool{}
	for _, s := range syms {
		nr, ok := vdsoSyscalls[s.Name]
		if !ok || elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Value < vaddr {
			continue
		}
		addr := base + s.Value - vaddr
		if seen[addr] {
			continue
		}
		if s.Size != 0 && s.Size < uint64(len(syscallStub(nr))) {
			return nil, fmt.Errorf("vdso: %s is too small to patch (%d bytes)", s.Name, s.Size)
		}
		seen[addr] = true
		patches = append(patches, Patch{Symbol: s.Name, Addr: addr, Size: s.Size, Code: syscallStub(nr)})
	}
	for _, need := range []string{"__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time"} {
		if !hasSymbol(patches, need) {
			return nil, fmt.Errorf("vdso: no %s to patch", need)
		}
	}
	return patches, nil
}

func hasSymbol(ps []Patch, name string) bool {
	for _, p := range ps {
		if p.Symbol == name {
			return true
		}
	}
	return false
}

// Auxiliary vector entries the tracer reads.
const (
	atRandom      = 25
	atSysinfoEhdr = 33
)

// parseAuxv returns the auxiliary vector as a map.
func parseAuxv(b []byte) map[uint64]uint64 {
	m := map[uint64]uint64{}
	for ; len(b) >= 16; b = b[16:] {
		k, v := binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
		if k == 0 {
			break
		}
		m[k] = v
	}
	return m
}
