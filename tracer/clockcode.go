package tracer

import (
	"encoding/binary"
	"fmt"

	"github.com/lockstep-run/lockstep/virt"
)

// The replacement vDSO's clock functions. They read the process's clock
// page (virt.PageSeq) at a fixed address under its sequence lock and count
// the read; past virt.SpinReads reads they add a step per read, still in
// the process. clock_gettime falls back to the real syscall (which the
// agent answers) for the CPU-time clocks and unknown clock ids.
//
// One block holds all three functions; it replaces __vdso_clock_gettime,
// and __vdso_gettimeofday and __vdso_time become jumps into it (time's
// own 40 bytes are too few).

// asm is a tiny x86-64 assembler: bytes, and jumps to labels.
type asm struct {
	b      []byte
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at    int // the rel8 byte, or the first of a rel32's
	label string
	wide  bool
}

func (a *asm) emit(b ...byte) { a.b = append(a.b, b...) }
func (a *asm) label(l string) { a.labels[l] = len(a.b) }
func (a *asm) jmp8(op byte, l string) {
	a.emit(op, 0)
	a.fixups = append(a.fixups, fixup{len(a.b) - 1, l, false})
}

// jcc32 is a conditional jump (op: its 8-bit form) with a 32-bit offset.
func (a *asm) jcc32(op byte, l string) {
	a.emit(0x0f, op+0x10, 0, 0, 0, 0)
	a.fixups = append(a.fixups, fixup{len(a.b) - 4, l, true})
}

func (a *asm) imm32(v uint32) { a.b = binary.LittleEndian.AppendUint32(a.b, v) }
func (a *asm) imm64(v uint64) { a.b = binary.LittleEndian.AppendUint64(a.b, v) }

func (a *asm) resolve() ([]byte, error) {
	for _, f := range a.fixups {
		to, ok := a.labels[f.label]
		if !ok {
			return nil, fmt.Errorf("clock code: no label %s", f.label)
		}
		if f.wide {
			binary.LittleEndian.PutUint32(a.b[f.at:], uint32(int32(to-(f.at+4))))
			continue
		}
		rel := to - (f.at + 1)
		if rel < -128 || rel > 127 {
			return nil, fmt.Errorf("clock code: jump to %s out of range", f.label)
		}
		a.b[f.at] = byte(int8(rel))
	}
	return a.b, nil
}

const (
	jae = 0x73
	jne = 0x75
	jz  = 0x74
	ja  = 0x77
	jmp = 0xeb
)

// clockBlock is the assembled block and where each function starts in it.
type clockBlock struct {
	code         []byte
	gettimeofday int
	time         int
	syscall      int // a syscall instruction (for injecting syscalls)
}

// assembleClock assembles the block for a clock page mapped at page.
//
// Each read, under the page's sequence lock: count it (lock xadd on the
// read counter, inside the lock, so that a count the world takes in and
// the clock it moves agree), and take the clock's seconds and nanoseconds;
// a read past the limit takes the clock's nanoseconds plus a step per read
// past it instead (virt.SpinReads).
func assembleClock(page uint64) (clockBlock, error) {
	a := &asm{labels: map[string]int{}}
	movPage := func() {
		a.emit(0x48, 0xb8) // movabs rax, page
		a.imm64(page)
	}
	// With rax = page and rcx = the clock's offset: r11 = seconds,
	// r9 = nanoseconds. Clobbers rdx, r8, r10.
	read := func(p string) {
		a.label(p + "retry")
		a.emit(0x4c, 0x8b, 0x00)       // mov r8, [rax]: seq
		a.emit(0x41, 0xf6, 0xc0, 0x01) // test r8b, 1
		a.jmp8(jne, p+"pause")
		a.emit(0xba)
		a.imm32(1)                                           // mov edx, 1
		a.emit(0xf0, 0x48, 0x0f, 0xc1, 0x50, virt.PageReads) // lock xadd [rax+reads], rdx
		a.emit(0x4c, 0x8b, 0x50, virt.PageLimit)             // mov r10, [rax+limit]
		a.emit(0x4c, 0x8b, 0x1c, 0x08)                       // mov r11, [rax+rcx]
		a.emit(0x4c, 0x8b, 0x4c, 0x08, 0x08)                 // mov r9, [rax+rcx+8]
		a.emit(0x4c, 0x39, 0xd2)                             // cmp rdx, r10
		a.jmp8(jae, p+"spin")
		a.emit(0x4c, 0x3b, 0x00) // cmp r8, [rax]
		a.jmp8(jne, p+"retry")
		a.jmp8(jmp, p+"done")
		a.label(p + "spin")
		a.emit(0x4c, 0x29, 0xd2)             // sub rdx, r10
		a.emit(0x48, 0x69, 0xd2)             // imul rdx, rdx, step
		a.imm32(uint32(virt.SpinStep))       //
		a.emit(0x48, 0x03, 0x54, 0x08, 0x10) // add rdx, [rax+rcx+16]
		a.emit(0x4c, 0x3b, 0x00)             // cmp r8, [rax]
		a.jmp8(jne, p+"retry")               //
		a.emit(0x49, 0x89, 0xc2)             // mov r10, rax
		a.emit(0x48, 0x89, 0xd0)             // mov rax, rdx
		a.emit(0x31, 0xd2)                   // xor edx, edx
		a.emit(0x41, 0xb9)                   // mov r9d, 1e9
		a.imm32(1e9)                         //
		a.emit(0x49, 0xf7, 0xf1)             // div r9
		a.emit(0x49, 0x89, 0xc3)             // mov r11, rax
		a.emit(0x49, 0x89, 0xd1)             // mov r9, rdx
		a.emit(0x4c, 0x89, 0xd0)             // mov rax, r10
		a.jmp8(jmp, p+"done")                //
		a.label(p + "pause")
		a.emit(0xf3, 0x90) // pause
		a.jmp8(jmp, p+"retry")
		a.label(p + "done")
	}
	fallback := func(l string, nr uint32) int {
		a.label(l)
		a.emit(0xb8)
		a.imm32(nr) // mov eax, nr
		at := len(a.b)
		a.emit(0x0f, 0x05, 0xc3) // syscall; ret
		return at
	}

	// clock_gettime(edi = id, rsi = ts)
	a.emit(0x83, 0xff, 0x0b) // cmp edi, 11
	a.jcc32(ja, "cg_sys")
	a.emit(0x89, 0xff)                   // mov edi, edi
	a.emit(0x48, 0x8d, 0x0d, 0, 0, 0, 0) // lea rcx, [rip+table]
	leaEnd := len(a.b)
	a.emit(0x0f, 0xb6, 0x0c, 0x39) // movzx ecx, byte [rcx+rdi]
	a.emit(0x85, 0xc9)             // test ecx, ecx
	a.jcc32(jz, "cg_sys")
	movPage()
	read("cg_")
	a.emit(0x4c, 0x89, 0x1e)       // mov [rsi], r11
	a.emit(0x4c, 0x89, 0x4e, 0x08) // mov [rsi+8], r9
	a.emit(0x31, 0xc0, 0xc3)       // xor eax, eax; ret
	sc := fallback("cg_sys", sysClockGettime)
	table := len(a.b)
	binary.LittleEndian.PutUint32(a.b[leaEnd-4:], uint32(table-leaEnd))
	var ids [12]byte
	for id := range ids {
		switch cl, err := virt.ClassOf(int32(id)); {
		case err != nil || cl == virt.CPU:
		case id == virt.ClockTAI:
			ids[id] = virt.PageTAISec
		case cl == virt.Wall:
			ids[id] = virt.PageWallSec
		case cl == virt.Mono:
			ids[id] = virt.PageMonoSec
		}
	}
	a.emit(ids[:]...)

	// gettimeofday(rdi = tv, rsi = tz)
	gtod := len(a.b)
	a.emit(0x48, 0x85, 0xff) // test rdi, rdi
	a.jcc32(jz, "gt_tz")
	a.emit(0xb9)
	a.imm32(virt.PageWallSec) // mov ecx, wall
	movPage()
	read("gt_")
	a.emit(0x4c, 0x89, 0x1f)       // mov [rdi], r11
	a.emit(0x4c, 0x89, 0xc8)       // mov rax, r9
	a.emit(0x31, 0xd2)             // xor edx, edx
	a.emit(0xb9)                   // mov ecx, 1000
	a.imm32(1000)                  //
	a.emit(0x48, 0xf7, 0xf1)       // div rcx
	a.emit(0x48, 0x89, 0x47, 0x08) // mov [rdi+8], rax
	a.label("gt_tz")
	a.emit(0x48, 0x85, 0xf6) // test rsi, rsi
	a.jmp8(jz, "gt_ret")
	a.emit(0x48, 0xc7, 0x06, 0, 0, 0, 0) // mov qword [rsi], 0: UTC
	a.label("gt_ret")
	a.emit(0x31, 0xc0, 0xc3) // xor eax, eax; ret

	// time(rdi = tloc)
	tm := len(a.b)
	a.emit(0xb9)
	a.imm32(virt.PageWallSec) // mov ecx, wall
	movPage()
	read("tm_")
	a.emit(0x4c, 0x89, 0xd8) // mov rax, r11
	a.emit(0x48, 0x85, 0xff) // test rdi, rdi
	a.jmp8(jz, "tm_ret")
	a.emit(0x48, 0x89, 0x07) // mov [rdi], rax
	a.label("tm_ret")
	a.emit(0xc3)

	code, err := a.resolve()
	return clockBlock{code: code, gettimeofday: gtod, time: tm, syscall: sc}, err
}

// sysClockGettime is x86_64's (not from x/sys: this file builds everywhere).
const sysClockGettime = 228

// jmpRel32 is `jmp to` placed at from.
func jmpRel32(from, to uint64) []byte {
	b := []byte{0xe9, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[1:], uint32(int32(int64(to)-int64(from+5))))
	return b
}
