package hostcap

import "encoding/binary"

// A program is x86-64 machine code for a static ELF with no libraries
// and no stack use: a few syscalls and the instruction under test, then
// exit_group with the status in edi.
type program []byte

const (
	sysArchPrctl = 158
	sysPrctl     = 157
	sysExitGroup = 231
	prSetTSC     = 26
	prTSCSegv    = 2
	archSetCPUID = 0x1012
	x32Bit       = 0x40000000
	enosys       = 38
)

func movEAX(v uint32) []byte { return le32(0xb8, v) } // mov eax, imm32
func movEDI(v uint32) []byte { return le32(0xbf, v) } // mov edi, imm32
func movESI(v uint32) []byte { return le32(0xbe, v) } // mov esi, imm32

func le32(op byte, v uint32) []byte {
	return binary.LittleEndian.AppendUint32([]byte{op}, v)
}

var (
	opSyscall   = []byte{0x0f, 0x05}
	opXorEDI    = []byte{0x31, 0xff}
	opXorEDX    = []byte{0x31, 0xd2}
	opXorECX    = []byte{0x31, 0xc9}
	opXorR10    = []byte{0x45, 0x31, 0xd2}
	opXorR8     = []byte{0x45, 0x31, 0xc0}
	opMovEDIEAX = []byte{0x89, 0xc7}
	opTestEAX   = []byte{0x85, 0xc0}
	opRdtsc     = []byte{0x0f, 0x31}
	opCpuid     = []byte{0x0f, 0xa2}
	opInt80     = []byte{0xcd, 0x80}
)

func cat(parts ...[]byte) program {
	var p []byte
	for _, b := range parts {
		p = append(p, b...)
	}
	return p
}

// exit ends a program with the status in edi.
var exit = cat(movEAX(sysExitGroup), opSyscall)

// guarded runs set-up (a syscall whose result is in eax), then the test
// instructions if it returned 0; it exits 0 after them, or with the
// set-up's -errno (as a status byte) if that failed.
func guarded(setup, test []byte) program {
	tail := cat(test, opXorEDI)
	return cat(setup, opMovEDIEAX, opTestEAX, []byte{0x75, byte(len(tail))}, tail, exit) // jnz over tail
}

var (
	// progTrue exits 0.
	progTrue = cat(opXorEDI, exit)
	// progRdtsc sets PR_TSC_SIGSEGV, then runs rdtsc: SIGSEGV if the trap
	// works, exit 0 if rdtsc ran untrapped.
	progRdtsc = guarded(cat(movEDI(prSetTSC), movESI(prTSCSegv), opXorEDX, opXorR10, opXorR8, movEAX(sysPrctl), opSyscall), opRdtsc)
	// progCPUID arms CPUID faulting, then runs cpuid: SIGSEGV if it
	// faults, exit 0 if not, the errno if arch_prctl refused.
	progCPUID = guarded(cat(movEDI(archSetCPUID), movESI(0), movEAX(sysArchPrctl), opSyscall), cat(movEAX(0), opXorECX, opCpuid))
	// progInt80 makes the i386 getpid: exit 0 with IA32 emulation,
	// SIGSEGV without.
	progInt80 = cat(movEAX(20), opInt80, opXorEDI, exit)
	// progX32 makes the x32 getpid: exit 1 if it is ENOSYS (no x32 ABI),
	// 0 if it ran.
	progX32 = cat(movEAX(x32Bit|39), opSyscall, opXorEDI,
		[]byte{0x83, 0xf8, byte(-enosys & 0xff)}, // cmp eax, -ENOSYS
		[]byte{0x40, 0x0f, 0x94, 0xc7},           // sete dil
		exit)
)

// image wraps code as a static x86-64 ELF executable: the ELF header,
// one PT_LOAD program header mapping the file read+execute at 0x400000,
// and the code at the entry point.
func (p program) image() []byte {
	const base, ehsize, phsize = 0x400000, 64, 56
	b := make([]byte, ehsize+phsize, ehsize+phsize+len(p))
	copy(b, "\x7fELF\x02\x01\x01")
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], base+ehsize+phsize) // entry
	le.PutUint64(b[32:], ehsize)             // phoff
	le.PutUint16(b[52:], ehsize)
	le.PutUint16(b[54:], phsize)
	le.PutUint16(b[56:], 1) // phnum
	ph := b[ehsize:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5) // PF_R|PF_X
	le.PutUint64(ph[16:], base)
	le.PutUint64(ph[24:], base)
	size := uint64(ehsize + phsize + len(p))
	le.PutUint64(ph[32:], size)
	le.PutUint64(ph[40:], size)
	le.PutUint64(ph[48:], 0x1000)
	return append(b, p...)
}
