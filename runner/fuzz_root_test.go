//go:build linux

package runner_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Differential fuzzing of the calls Lockstep answers or rewrites instead of
// the kernel (the agent's emulated calls, the tracer's stat fixes and timed
// waits): Go's fuzzer makes arguments, one copy of testdata/probes/sysserve
// makes each call natively and one under `lockstep exec`, and the return
// value and errno must agree. Values Lockstep virtualises (times, byte
// counts of virtual files) are compared by sign. `make test` (as root) runs
// the seeds; `make fuzz` fuzzes each target for a minute.

// Kinds of argument (sysserve.c).
const (
	kRaw = iota
	kRW
	kRO
	kUnmapped
	kPath
	kFD
	kLow
)

type fuzzCall struct {
	name  string
	nr    int32
	exact bool // the return value must be equal, not just of the same sign
	// The argument holding a timeout that the harness shortens (so that a
	// valid one ends within a millisecond on both sides), and its form.
	timeout int
	form    timeoutForm
}

type timeoutForm int

const (
	noTimeout timeoutForm = iota
	timespecArg
	timevalArg
	millisArg
)

var fuzzCalls = []fuzzCall{
	{name: "getrandom", nr: unix.SYS_GETRANDOM, exact: true},
	{name: "clock_gettime", nr: unix.SYS_CLOCK_GETTIME, exact: true},
	{name: "clock_getres", nr: unix.SYS_CLOCK_GETRES, exact: true},
	{name: "clock_nanosleep", nr: unix.SYS_CLOCK_NANOSLEEP, exact: true, timeout: 2, form: timespecArg},
	{name: "nanosleep", nr: unix.SYS_NANOSLEEP, exact: true, timeout: 0, form: timespecArg},
	{name: "gettimeofday", nr: unix.SYS_GETTIMEOFDAY, exact: true},
	{name: "time", nr: unix.SYS_TIME},
	{name: "times", nr: unix.SYS_TIMES},
	{name: "getrusage", nr: unix.SYS_GETRUSAGE, exact: true},
	{name: "uname", nr: unix.SYS_UNAME, exact: true},
	{name: "sysinfo", nr: unix.SYS_SYSINFO, exact: true},
	{name: "getcpu", nr: unix.SYS_GETCPU, exact: true},
	{name: "sched_getaffinity", nr: unix.SYS_SCHED_GETAFFINITY},
	{name: "statfs", nr: unix.SYS_STATFS, exact: true},
	{name: "fstatfs", nr: unix.SYS_FSTATFS, exact: true},
	{name: "stat", nr: unix.SYS_STAT, exact: true},
	{name: "lstat", nr: unix.SYS_LSTAT, exact: true},
	{name: "fstat", nr: unix.SYS_FSTAT, exact: true},
	{name: "newfstatat", nr: unix.SYS_NEWFSTATAT, exact: true},
	{name: "statx", nr: unix.SYS_STATX, exact: true},
	{name: "getdents64", nr: unix.SYS_GETDENTS64},
	{name: "getdents", nr: unix.SYS_GETDENTS},
	{name: "open+read", nr: -1},
	{name: "poll", nr: unix.SYS_POLL, exact: true, timeout: 2, form: millisArg},
	{name: "ppoll", nr: unix.SYS_PPOLL, exact: true, timeout: 2, form: timespecArg},
	{name: "select", nr: unix.SYS_SELECT, exact: true, timeout: 4, form: timevalArg},
	{name: "pselect6", nr: unix.SYS_PSELECT6, exact: true, timeout: 4, form: timespecArg},
	{name: "futex", nr: unix.SYS_FUTEX, exact: true, timeout: 3, form: timespecArg},
	{name: "rt_sigtimedwait", nr: unix.SYS_RT_SIGTIMEDWAIT, exact: true, timeout: 2, form: timespecArg},
	// Interval timers (virt.Timers). sysserve blocks every signal, so
	// that none it arms interrupts a later call on either side.
	{name: "alarm", nr: unix.SYS_ALARM}, // seconds left: time passes natively between calls
	{name: "setitimer", nr: unix.SYS_SETITIMER, exact: true},
	{name: "getitimer", nr: unix.SYS_GETITIMER, exact: true},
	{name: "timer_create", nr: unix.SYS_TIMER_CREATE, exact: true},
	{name: "timer_settime", nr: unix.SYS_TIMER_SETTIME, exact: true},
	{name: "timer_gettime", nr: unix.SYS_TIMER_GETTIME, exact: true},
	{name: "timer_getoverrun", nr: unix.SYS_TIMER_GETOVERRUN, exact: true},
	{name: "timer_delete", nr: unix.SYS_TIMER_DELETE, exact: true},
}

// sysServer is one running copy of sysserve.
type sysServer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startSysServer(t testing.TB, argv ...string) *sysServer {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	// sysserve blocks every signal but SIGKILL, and a fuzzing worker
	// exits without a word: the copies go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &sysServer{cmd, in, bufio.NewReader(out)}
}

// do sends one request and reads the answer: return value and errno.
func (s *sysServer) do(req []byte) (ret, errno int64, err error) {
	if _, err := s.in.Write(req); err != nil {
		return 0, 0, err
	}
	var a [16]byte
	if _, err := io.ReadFull(s.out, a[:]); err != nil {
		return 0, 0, err
	}
	return int64(binary.LittleEndian.Uint64(a[:])), int64(binary.LittleEndian.Uint64(a[8:])), nil
}

var sysServers struct {
	once           sync.Once
	native, locked *sysServer
	err            error
}

// servers starts the two copies once per process: a fuzzing worker keeps
// them for all its inputs.
func servers(t testing.TB) (native, locked *sysServer) {
	s := &sysServers
	s.once.Do(func() {
		// A directory per process: each fuzzing worker has its own pair.
		dir, err := os.MkdirTemp("", "lockstep-sysserve")
		if err != nil {
			s.err = err
			return
		}
		for _, f := range []string{"a", "b", "c"} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
				s.err = err
				return
			}
		}
		prog := filepath.Join(bin.probes, "sysserve")
		s.native = startSysServer(t, prog, dir)
		s.locked = startSysServer(t, bin.lockstep, "exec", "--", prog, dir)
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.native, s.locked
}

// request encodes a call for sysserve, shortening any valid timeout it
// carries to at most a microsecond (a millisecond for poll), so that no
// input makes either side wait.
func request(c fuzzCall, args [6]uint64, kinds uint32, data []byte) []byte {
	var d [64]byte
	copy(d[:], data)
	for i := range 6 {
		if k := kinds >> (3 * i) & 7; k > kLow {
			kinds &^= 7 << (3 * i) // only the kinds sysserve knows
		}
	}
	kind := func(i int) uint32 { return kinds >> (3 * i) & 7 }
	// Calls whose native answer depends on the host beyond what Lockstep
	// virtualises: keep them to arguments that mean the same on both.
	switch c.name {
	case "sched_getaffinity":
		// PIDs differ: the host's are not the run's.
		kinds &^= 7
		// The kernel writes its cpumask_size() (NR_CPUS/8 bytes: 32 on
		// this VM's kernel, 8 on Debian's), Lockstep 8 on every host
		// (docs/determinism.md): keep a writable mask clear of the page's
		// end so that only the size differs.
		if kind(2) == kRW {
			args[2] &= 0x7ff
		}
		if int32(args[0]) > 1 {
			args[0] = args[0]&^0xffffffff | 0x3fffffff // no such process on either side
		}
	case "futex":
		// Waits and wakes only: a PI lock reads thread IDs from memory.
		if op := args[1] & 127; op != 0 && op != 1 && op != 9 { // FUTEX_WAIT, WAKE, WAIT_BITSET
			args[1] &^= 127
		}
	case "clock_gettime", "clock_getres", "clock_nanosleep", "timer_create":
		// The alarm clocks: Lockstep's machine has a real-time clock on
		// every host, so they work; this VM's kernel says EINVAL
		// (docs/determinism.md). Fuzz the others.
		id := int32(args[0])
		if kind(0) == kLow {
			id &= 4095
		}
		if (kind(0) == kRaw || kind(0) == kLow) && (id == 8 || id == 9) {
			args[0] -= 2
		}
	}
	switch c.name {
	case "clock_nanosleep":
		// A CPU-time clock's sleep ends when the process has used the
		// time; a sleeping process uses none, so only a zero one ends.
		switch int32(args[0]) {
		case 0, 1, 4, 5, 6, 7, 8, 9, 11:
		default:
			if kind(2) == kRW || kind(2) == kRO {
				o := int(args[2] & 4095)
				for i := range 16 {
					d[(o+i)%64] = 0
				}
			}
		}
	}
	// No wait without a timeout: it could last for ever on both sides. A
	// NULL timeout (or a pointer to strings that read as a long one)
	// becomes one in the last 16 bytes of the data; -1 ms becomes 1 ms.
	if c.form == millisArg {
		ms := int32(args[c.timeout])
		if kind(c.timeout) != kRaw || ms < 0 {
			ms = 1
		}
		kinds &^= 7 << (3 * c.timeout)
		args[c.timeout] = args[c.timeout]&^0xffffffff | uint64(ms%2)
	}
	if c.form == timespecArg || c.form == timevalArg {
		v := args[c.timeout]
		if k := kind(c.timeout); k == kPath || (k == kRaw && v == 0) || (k == kLow && v&4095 == 0) {
			kinds = kinds&^(7<<(3*c.timeout)) | kRW<<(3*c.timeout)
			args[c.timeout] = 48
		}
	}
	if (c.form == timespecArg || c.form == timevalArg) && (kind(c.timeout) == kRW || kind(c.timeout) == kRO) {
		o := int(args[c.timeout] & 4095)
		word := func(j int) uint64 {
			var w [8]byte
			for i := range 8 {
				w[i] = d[(o+8*j+i)%64]
			}
			return binary.LittleEndian.Uint64(w[:])
		}
		put := func(j int, v uint64) {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], v)
			for i := range 8 {
				d[(o+8*j+i)%64] = w[i]
			}
		}
		sec, frac := int64(word(0)), int64(word(1))
		limit := int64(1e9)
		if c.form == timevalArg {
			limit = 1e6
		}
		if sec >= 0 && frac >= 0 && frac < limit {
			put(0, 0)
			put(1, uint64(frac%1000))
		}
	}
	b := make([]byte, 128)
	binary.LittleEndian.PutUint32(b[0:], uint32(c.nr))
	binary.LittleEndian.PutUint32(b[4:], kinds)
	for i, a := range args {
		binary.LittleEndian.PutUint64(b[8+8*i:], a)
	}
	copy(b[56:120], d[:])
	return b
}

// describe shows a request as sysserve makes the call.
func describe(c fuzzCall, req []byte) string {
	kinds := binary.LittleEndian.Uint32(req[4:])
	s := c.name + "("
	names := []string{"", "rw+", "ro+", "unmapped+", "path#", "fd#", "low+"}
	for i := range 6 {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s%#x", names[kinds>>(3*i)&7], binary.LittleEndian.Uint64(req[8+8*i:]))
	}
	return s + fmt.Sprintf(") data %x", req[56:120])
}

// FuzzEmulatedCalls: every call Lockstep answers or rewrites returns what
// the kernel returns, for any arguments.
func FuzzEmulatedCalls(f *testing.F) {
	if os.Geteuid() != 0 || bin.lockstep == "" {
		f.Skip("differential fuzzing runs lockstep exec: run as root (`make test`, `make fuzz`)")
	}
	// Seeds: each call with valid pointers and paths, with NULL, unmapped
	// and read-only ones, and with junk in the registers' upper halves.
	good := uint32(kRW | kRW<<3 | kRW<<6 | kRW<<9 | kRW<<12)
	for i := range fuzzCalls {
		w := uint8(i)
		f.Add(w, uint64(0), uint64(64), uint64(0), uint64(256), uint64(0), uint64(0), good, []byte{})
		f.Add(w, uint64(1), uint64(8), uint64(1), uint64(0), uint64(0), uint64(0), uint32(kRaw|kRO<<3|kRaw<<6|kRW<<9), []byte{1, 0, 0, 0, 0, 0, 0, 0, 5})
		f.Add(w, uint64(4), uint64(3), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kPath|kUnmapped<<3|kRaw<<6|kLow<<9), []byte{0xff})
		f.Add(w, uint64(0), uint64(0), uint64(4090), uint64(0x100000000), uint64(0), uint64(0), uint32(kFD|kRW<<3|kRW<<6|kRaw<<9), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x42, 0x0f})
		f.Add(w, uint64(2), uint64(4095), uint64(100), uint64(0), uint64(0), uint64(0), uint32(kPath|kRW<<3|kRW<<6|kRaw<<9), []byte{3, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	// What the fuzzer found, each once different under Lockstep.
	index := func(name string) uint8 {
		for i, c := range fuzzCalls {
			if c.name == name {
				return uint8(i)
			}
		}
		panic(name)
	}
	// getrandom into a buffer that runs into an unmapped page: the kernel
	// fills what is mapped and says how much.
	f.Add(index("getrandom"), uint64(1), uint64(8), uint64(1), uint64(0), uint64(0), uint64(0), uint32(kRW|kUnmapped<<3), []byte{})
	// The coarse and raw clocks cannot sleep (EOPNOTSUPP), checked
	// before the timespec is read.
	f.Add(index("clock_nanosleep"), uint64(5), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kRaw|kRaw<<3|kRW<<6), []byte{})
	f.Add(index("clock_nanosleep"), uint64(0x40000001), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kRaw|kRaw<<3|kUnmapped<<6), []byte{})
	// A CPU clock of a process that does not exist (PID 4242).
	f.Add(index("clock_gettime"), uint64(0xffffffff^(4242<<3)^2), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kRaw|kRW<<3), []byte{})
	// A size in bytes whose size in bits wraps around an unsigned int.
	f.Add(index("sched_getaffinity"), uint64(0), uint64(0x20000000), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kRaw|kRaw<<3|kRW<<6), []byte{})
	// Timers: made, armed (1 s, then every 2 ms), read, overrun, deleted,
	// on both sides in the same order.
	spec := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x84, 0x1e, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	f.Add(index("timer_create"), uint64(1), uint64(0), uint64(0x100), uint64(0), uint64(0), uint64(0), uint32(kRaw|kRaw<<3|kRW<<6), []byte{})
	f.Add(index("timer_settime"), uint64(0), uint64(0), uint64(0), uint64(0x200), uint64(0), uint64(0), uint32(kRaw|kRaw<<3|kRW<<6|kRW<<9), spec)
	f.Add(index("timer_gettime"), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kRaw|kRW<<3), []byte{})
	f.Add(index("timer_getoverrun"), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kRaw), []byte{})
	f.Add(index("timer_delete"), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kRaw), []byte{})
	f.Add(index("timer_delete"), uint64(0), uint64(1), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kRaw), []byte{}) // again: EINVAL
	f.Add(index("timer_gettime"), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kRaw|kRW<<3), []byte{1})
	f.Add(index("setitimer"), uint64(0), uint64(0), uint64(0x10), uint64(0), uint64(0), uint64(0), uint32(kRaw|kRW<<3|kRW<<6), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x42, 0x0f, 0, 0, 0, 0, 0, 5})
	f.Add(index("getitimer"), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kRaw|kRW<<3), []byte{})
	f.Add(index("alarm"), uint64(100), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kRaw), []byte{})
	f.Add(index("alarm"), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kRaw), []byte{})
	// /proc/self as the caller's, not the agent's.
	f.Add(index("statfs"), uint64(2), uint64(0xfff), uint64(0), uint64(0), uint64(0), uint64(0), uint32(kPath|kRW<<3), []byte{})
	f.Fuzz(func(t *testing.T, which uint8, a0, a1, a2, a3, a4, a5 uint64, kinds uint32, data []byte) {
		c := fuzzCalls[int(which)%len(fuzzCalls)]
		args := [6]uint64{a0, a1, a2, a3, a4, a5}
		req := request(c, args, kinds, data)
		native, locked := servers(t)
		type answer struct {
			ret, errno int64
			err        error
		}
		done := make(chan [2]answer, 1)
		go func() {
			var a [2]answer
			a[0].ret, a[0].errno, a[0].err = native.do(req)
			a[1].ret, a[1].errno, a[1].err = locked.do(req)
			done <- a
		}()
		var a [2]answer
		select {
		case a = <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: no answer in 20 s", describe(c, req))
		}
		if a[0].err != nil || a[1].err != nil {
			t.Fatalf("%s: sysserve died: native %v, under lockstep %v", describe(c, req), a[0].err, a[1].err)
		}
		n, l := a[0], a[1]
		same := n.ret == l.ret
		if !c.exact {
			same = (n.ret < 0) == (l.ret < 0) && (n.ret == 0) == (l.ret == 0)
		}
		if !same || n.errno != l.errno {
			t.Errorf("%s: natively %d (%v), under lockstep %d (%v)", describe(c, req),
				n.ret, errnoName(n.errno), l.ret, errnoName(l.errno))
		}
	})
}

func errnoName(e int64) string {
	if e == 0 {
		return "ok"
	}
	return unix.ErrnoName(syscall.Errno(e))
}
