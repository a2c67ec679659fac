package seccomp

import (
	"encoding/binary"
	"syscall"
	"testing"

	"golang.org/x/net/bpf"
)

// run executes the compiled profile on one syscall, as the kernel would.
// The kernel loads seccomp_data words in host order and x/net/bpf's VM in
// network order, so each 32-bit word is stored big-endian here: a load at
// an offset then sees the value the kernel sees there.
func run(t *testing.T, vm *bpf.VM, arch, nr uint32, args [6]uint64) uint32 {
	t.Helper()
	data := make([]byte, 64)
	be := binary.BigEndian
	be.PutUint32(data[0:], nr)
	be.PutUint32(data[4:], arch)
	for i, a := range args {
		be.PutUint32(data[16+8*i:], uint32(a)) // low word first, as on x86_64
		be.PutUint32(data[16+8*i+4:], uint32(a>>32))
	}
	ret, err := vm.Run(data)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(ret)
}

func profileVM(t *testing.T) *bpf.VM {
	t.Helper()
	raw, err := Assemble(Rules())
	if err != nil {
		t.Fatal(err)
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("profile does not disassemble")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

func TestProfileIsConsistent(t *testing.T) {
	if err := Check(Rules()); err != nil {
		t.Fatal(err)
	}
}

// TestFilterMatchesTable checks the compiled filter against Lookup (the
// table's meaning) for every rule, with its condition both true and false.
func TestFilterMatchesTable(t *testing.T) {
	vm := profileVM(t)
	rules := Rules()
	for _, r := range rules {
		for _, args := range argsFor(r) {
			want, _ := Lookup(rules, r.Nr, args)
			got := run(t, vm, auditArchX86_64, r.Nr, args)
			if got != retFor(want) {
				t.Errorf("%s%v: filter returns %#x, table says %s (%#x)", r.Name, args, got, want.Action, retFor(want))
			}
		}
	}
}

// argsFor returns arguments that make r's condition hold and fail.
func argsFor(r Rule) [][6]uint64 {
	var hold, fail [6]uint64
	if c := r.Cond; c != nil {
		switch c.Op {
		case OpEq:
			hold[c.Arg], fail[c.Arg] = c.Value, c.Value+1
		case OpNe:
			hold[c.Arg], fail[c.Arg] = c.Value+1<<32, c.Value
		case OpMaskedEq:
			hold[c.Arg], fail[c.Arg] = c.Value, c.Value^c.Mask
		}
	}
	return [][6]uint64{hold, fail}
}

func TestFilterDecisions(t *testing.T) {
	vm := profileVM(t)
	enosysRet := uint32(retErrno | uint32(syscall.ENOSYS))
	cases := []struct {
		name string
		arch uint32
		nr   uint32
		args [6]uint64
		want uint32
	}{
		{"getpid runs", auditArchX86_64, 39, [6]uint64{}, retAllow},
		{"clock_gettime notified", auditArchX86_64, sysClockGettime, [6]uint64{}, retUserNotif},
		{"getrandom notified", auditArchX86_64, sysGetrandom, [6]uint64{}, retUserNotif},
		{"fstat notified", auditArchX86_64, sysFstat, [6]uint64{}, retUserNotif},
		{"newfstatat traced", auditArchX86_64, sysNewfstatat, [6]uint64{}, retTrace},
		{"io_uring denied", auditArchX86_64, sysIoUringSetup, [6]uint64{}, enosysRet},
		{"i386 (int 0x80) denied", 0x40000003, 20, [6]uint64{}, enosysRet},
		{"x32 denied", auditArchX86_64, x32SyscallBit | 39, [6]uint64{}, enosysRet},
		{"poll without timeout runs", auditArchX86_64, sysPoll, [6]uint64{0, 1, 0}, retAllow},
		{"poll with timeout traced", auditArchX86_64, sysPoll, [6]uint64{0, 1, 100}, retTrace},
		{"poll with no timeout (-1) runs", auditArchX86_64, sysPoll, [6]uint64{0, 1, 0xffffffff}, retAllow},
		{"poll with no timeout (-1, sign-extended) runs", auditArchX86_64, sysPoll, [6]uint64{0, 1, ^uint64(0)}, retAllow},
		{"poll with a timeout in the low 32 bits traced", auditArchX86_64, sysPoll, [6]uint64{0, 1, 0xffffffff00000005}, retTrace},
		{"epoll_pwait with timeout traced", auditArchX86_64, sysEpollPwait, [6]uint64{3, 0, 128, 20}, retTrace},
		{"epoll_pwait without timeout runs", auditArchX86_64, sysEpollPwait, [6]uint64{3, 0, 128, 0xffffffff}, retAllow},
		{"epoll_wait polling (0) runs", auditArchX86_64, sysEpollWait, [6]uint64{3, 0, 128, 0}, retAllow},
		{"futex wake runs", auditArchX86_64, sysFutex, [6]uint64{0, 1, 1, 0}, retAllow},
		{"personality query runs", auditArchX86_64, sysPersonality, [6]uint64{0xffffffff}, retAllow},
		{"personality keeping no-ASLR runs", auditArchX86_64, sysPersonality, [6]uint64{personalityAddrNoRandomize}, retAllow},
		{"personality enabling ASLR denied", auditArchX86_64, sysPersonality, [6]uint64{0}, retErrno | uint32(syscall.EPERM)},
		{"PR_SET_TSC traced (the tracer decides)", auditArchX86_64, sysPrctl, [6]uint64{prSetTSC, 1}, retTrace},
		{"PR_SET_NAME runs", auditArchX86_64, sysPrctl, [6]uint64{15}, retAllow},
		{"MAP_DROPPABLE denied", auditArchX86_64, sysMmap, [6]uint64{0, 4096, 3, mapDroppable | 0x20}, retErrno | uint32(syscall.ENOMEM)},
		{"MAP_PRIVATE runs", auditArchX86_64, sysMmap, [6]uint64{0, 4096, 3, 0x22}, retAllow},
		{"ARCH_SET_CPUID traced", auditArchX86_64, sysArchPrctl, [6]uint64{archSetCPUID}, retTrace},
		{"ARCH_SET_FS runs", auditArchX86_64, sysArchPrctl, [6]uint64{0x1002}, retAllow},
	}
	for _, c := range cases {
		if got := run(t, vm, c.arch, c.nr, c.args); got != c.want {
			t.Errorf("%s: got %#x, want %#x", c.name, got, c.want)
		}
	}
}

func TestCheckRejectsOverlap(t *testing.T) {
	rules := []Rule{notify("a", 1), deny("b", 1, syscall.EPERM)}
	if err := Check(rules); err == nil {
		t.Fatal("two rules for one syscall accepted")
	}
}

func TestOCI(t *testing.T) {
	s, err := OCI(Rules(), "/run/lockstep/agent.sock", "meta")
	if err != nil {
		t.Fatal(err)
	}
	if s.DefaultAction != "SCMP_ACT_ALLOW" || s.ListenerPath != "/run/lockstep/agent.sock" {
		t.Fatalf("bad profile header: %+v", s)
	}
	byName := map[string]string{}
	for _, sc := range s.Syscalls {
		byName[sc.Names[0]] = string(sc.Action)
	}
	for name, want := range map[string]string{"clock_gettime": "SCMP_ACT_NOTIFY", "statx": "SCMP_ACT_TRACE", "io_uring_setup": "SCMP_ACT_ERRNO"} {
		if byName[name] != want {
			t.Errorf("%s: %s, want %s", name, byName[name], want)
		}
	}
	for _, sc := range s.Syscalls {
		if sc.Names[0] == "mmap" && (len(sc.Args) != 1 || sc.Args[0].Op != "SCMP_CMP_MASKED_EQ" || sc.Args[0].Value != mapDroppable || sc.Args[0].ValueTwo != mapDroppable) {
			t.Errorf("mmap condition: %+v", sc.Args)
		}
	}
}
