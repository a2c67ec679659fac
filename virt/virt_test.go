package virt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func world(t *testing.T, seed uint64) *World {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Seed = seed
	w, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Start()
	return w
}

func TestClocksStandStillBeforeStart(t *testing.T) {
	w, _ := New(DefaultConfig(), nil)
	w.ReadClock(0, ClockMonotonic)
	w.NanoSlept(0, time.Second)
	w.Start()
	if v, _ := w.ReadClock(0, ClockMonotonic); v != int64(monoStart) {
		t.Fatalf("setup moved the monotonic clock to %d", v)
	}
}

func TestWallClockStartsAtEpochAndStandsStill(t *testing.T) {
	w := world(t, 0)
	a, _ := w.ReadClock(0, ClockRealtime)
	b, _ := w.ReadClock(0, ClockRealtime)
	if a != DefaultEpoch.UnixNano() {
		t.Fatalf("first read %d, want the epoch %d", a, DefaultEpoch.UnixNano())
	}
	if b != a {
		t.Fatalf("second read %d after %d: a read moved the clock", b, a)
	}
	tai, _ := w.ReadClock(0, ClockTAI)
	if tai-b != int64(taiOffset) {
		t.Fatalf("TAI %d is not wall + 37 s", tai)
	}
}

// TestSpinningReads: a process that reads its clock SpinReads times
// without its time moving sees it step from then on, so that a loop
// waiting for the clock ends; a wait that moves its time resets the count.
func TestSpinningReads(t *testing.T) {
	w := world(t, 0)
	a, _ := w.ReadClock(0, ClockMonotonic)
	for range SpinReads - 1 {
		w.ReadClock(0, ClockMonotonic)
	}
	b, _ := w.ReadClock(0, ClockMonotonic)
	c, _ := w.ReadClock(0, ClockMonotonic)
	if b != a || c != a+int64(defaultStep) {
		t.Fatalf("reads %d, %d, %d: want the clock still until read %d, then stepping", a, b, c, SpinReads+1)
	}
	w.TimedOut(0, ClockMonotonic, c+int64(time.Millisecond))
	d, _ := w.ReadClock(0, ClockMonotonic)
	e, _ := w.ReadClock(0, ClockMonotonic)
	if d != c+int64(time.Millisecond) || e != d {
		t.Fatalf("after a timeout: %d, %d: want %d twice", d, e, c+int64(time.Millisecond))
	}
}

// TestClockPage: the page a process reads in-process holds its clocks,
// follows every move, and counts reads with the world's.
func TestClockPage(t *testing.T) {
	child := exec.Command("sleep", "10")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	pid := int32(child.Process.Pid)
	w := world(t, 0)
	w.Root(pid, 1)
	page := make([]byte, PageSize)
	released := false
	if err := w.AttachClock(pid, page, func() { released = true }, true); err != nil {
		t.Fatal(err)
	}
	word := func(off int) int64 { return int64(binary.LittleEndian.Uint64(page[off:])) }
	pair := func(off int) int64 { return word(off)*1e9 + word(off+8) }
	if pair(PageWallSec) != DefaultEpoch.UnixNano() || pair(PageMonoSec) != int64(monoStart) ||
		pair(PageTAISec) != DefaultEpoch.UnixNano()+int64(taiOffset) || word(PageLimit) != SpinReads || word(PageSeq)%2 != 0 {
		t.Fatalf("a new page: wall %d, mono %d, TAI %d, limit %d, seq %d", pair(PageWallSec), pair(PageMonoSec), pair(PageTAISec), word(PageLimit), word(PageSeq))
	}
	w.ReadClock(pid, ClockRealtime)
	if word(PageReads) != 1 {
		t.Fatalf("a read through the agent counted %d", word(PageReads))
	}
	w.Slept(pid, ClockMonotonic, false, int64(1500*time.Millisecond), 1500*time.Millisecond)
	if pair(PageMonoSec) != int64(monoStart+1500*time.Millisecond) || pair(PageWallSec) != DefaultEpoch.UnixNano()+int64(1500*time.Millisecond) || word(PageReads) != 0 {
		t.Fatalf("after a sleep: wall %d, mono %d, reads %d", pair(PageWallSec), pair(PageMonoSec), word(PageReads))
	}
	w.Exit(pid)
	if !released {
		t.Fatal("the page was not released with its process")
	}
}

// The wall and monotonic clocks move together, by the larger move;
// reads and a runtime's short nanosleeps move neither.
func TestClocksMoveTogether(t *testing.T) {
	w := world(t, 0)
	for i := 0; i < 100; i++ {
		w.ReadClock(0, ClockMonotonic)
	}
	w.NanoSlept(0, RuntimeSleep)
	if v, _ := w.Now(0, ClockRealtime); v != DefaultEpoch.UnixNano() {
		t.Fatalf("reads and a runtime's nanosleep moved the wall clock: %d", v)
	}
	m0, _ := w.Now(0, ClockMonotonic)
	w.TimedOut(0, ClockMonotonic, m0+int64(time.Second))
	if v, _ := w.Now(0, ClockRealtime); v != DefaultEpoch.UnixNano()+int64(time.Second) {
		t.Fatalf("a monotonic timeout of 1 s moved the wall clock to %d", v)
	}
}

func TestSleepsAdvanceClocks(t *testing.T) {
	w := world(t, 0)
	m0, _ := w.Now(0, ClockMonotonic)
	w0, _ := w.Now(0, ClockRealtime)
	w.Slept(0, ClockRealtime, false, int64(time.Second), time.Second)
	m1, _ := w.Now(0, ClockMonotonic)
	w1, _ := w.Now(0, ClockRealtime)
	if m1-m0 != int64(time.Second) || w1-w0 != int64(time.Second) {
		t.Fatalf("relative clock_nanosleep of 1 s moved mono by %d, wall by %d", m1-m0, w1-w0)
	}
	deadline := m1 + int64(2*time.Second)
	d, _ := w.SleepLength(0, ClockMonotonic, true, deadline)
	if d != 2*time.Second {
		t.Fatalf("absolute sleep length %s, want 2s", d)
	}
	w.Slept(0, ClockMonotonic, true, deadline, d)
	if m2, _ := w.Now(0, ClockMonotonic); m2 != deadline {
		t.Fatalf("after an absolute sleep mono is %d, want the deadline %d", m2, deadline)
	}
	if d, _ := w.SleepLength(0, ClockMonotonic, true, 0); d != 0 {
		t.Fatalf("a deadline in the past sleeps %s", d)
	}
}

func TestTimedOutNeverGoesBack(t *testing.T) {
	w := world(t, 0)
	now, _ := w.Now(0, ClockMonotonic)
	w.TimedOut(0, ClockMonotonic, now+500)
	w.TimedOut(0, ClockMonotonic, now+100) // an earlier deadline, seen later
	if v, _ := w.Now(0, ClockMonotonic); v != now+500 {
		t.Fatalf("mono %d, want %d", v, now+500)
	}
}

func TestBadClock(t *testing.T) {
	w := world(t, 0)
	for _, id := range []int32{10, 12, 99, -5 /* a CLOCKFD id: (^fd << 3) | 3 */} {
		if _, err := w.ReadClock(0, id); !errors.Is(err, ErrBadClock) {
			t.Errorf("clock %d: err %v, want ErrBadClock", id, err)
		}
	}
	if _, err := w.ReadClock(0, -6); err != nil { // another process's CPU clock
		t.Errorf("CPU clock of a pid: %v", err)
	}
}

func TestEntropyIsSeeded(t *testing.T) {
	read := func(seed uint64) (r, dev, exec []byte) {
		w := world(t, seed)
		w.Root(10, 1)
		r = make([]byte, 32)
		w.Random(10, r)
		s, _ := w.OpenEntropy(10, "/dev/urandom")
		dev = make([]byte, 32)
		s.Read(dev)
		x, _ := w.ExecRandom(10, "/bin/true")
		return r, dev, x[:]
	}
	r1, d1, x1 := read(1)
	r2, d2, x2 := read(1)
	r3, d3, x3 := read(2)
	if !bytes.Equal(r1, r2) || !bytes.Equal(d1, d2) || !bytes.Equal(x1, x2) {
		t.Fatal("same seed, different values")
	}
	if bytes.Equal(r1, r3) || bytes.Equal(d1, d3) || bytes.Equal(x1, x3) {
		t.Fatal("different seeds, same values")
	}
	if bytes.Equal(r1, d1) {
		t.Fatal("getrandom and /dev/urandom share a stream")
	}
}

func TestIdentity(t *testing.T) {
	w := world(t, 0)
	u := w.Uname()
	field := func(i int) string { return string(bytes.TrimRight(u[i*65:(i+1)*65], "\x00")) }
	if field(0) != "Linux" || field(1) != "lockstep" || field(4) != "x86_64" {
		t.Fatalf("uname fields %q %q %q", field(0), field(1), field(4))
	}
	si := w.Sysinfo(0)
	if binary.LittleEndian.Uint64(si[32:]) != 4<<30 || binary.LittleEndian.Uint32(si[104:]) != 1 {
		t.Fatal("sysinfo totalram or mem_unit wrong")
	}
	if m := binary.LittleEndian.Uint64(w.CPUMask()); m != 1 {
		t.Fatalf("affinity mask %#x for 1 CPU", m)
	}
	cpu, ok, _ := w.File(10, "/proc/cpuinfo")
	if !ok || !strings.Contains(string(cpu), "model name\t: Lockstep Virtual CPU") || strings.Contains(string(cpu), "rdrand") {
		t.Fatalf("cpuinfo:\n%s", cpu)
	}
	if on, _, _ := w.File(10, "/sys/devices/system/cpu/online"); string(on) != "0\n" {
		t.Fatalf("cpu/online %q", on)
	}
	a, _, _ := w.File(10, "/proc/sys/kernel/random/uuid")
	b, _, _ := w.File(10, "/proc/sys/kernel/random/uuid")
	if bytes.Equal(a, b) {
		t.Fatal("two reads of random/uuid are equal")
	}
	if _, ok, _ := w.File(10, "/etc/passwd"); ok {
		t.Fatal("/etc/passwd is served")
	}
}

func TestInodesAreStable(t *testing.T) {
	w := world(t, 0)
	a, b := w.Ino(2049, 1234567), w.Ino(2049, 42)
	if a != firstIno || b != firstIno+1 || w.Ino(2049, 1234567) != a {
		t.Fatalf("inodes %d %d: want first-seen order", a, b)
	}
	if w.Dev(2049) != firstDev || w.Dev(64) != firstDev+1 {
		t.Fatal("devices not in first-seen order")
	}
	// Another device's files do not take numbers from this one's.
	if c, d := w.Ino(64, 7), w.Ino(2049, 99); c != firstIno || d != firstIno+2 {
		t.Errorf("inodes %d on another device, %d after it: want per-device counts", c, d)
	}
	// A pipe's device has its fixed number, whenever it is first seen.
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(p[0])
	defer syscall.Close(p[1])
	var st syscall.Stat_t
	if err := syscall.Fstat(p[0], &st); err != nil {
		t.Fatal(err)
	}
	if v := w.Dev(st.Dev); v != pipefsDev {
		t.Errorf("pipefs: virtual device %d, want %d", v, pipefsDev)
	}
	if w.Dev(2050) != firstDev+2 {
		t.Error("a fixed device number took a first-seen one")
	}
}

func TestFileTime(t *testing.T) {
	w := world(t, 0)
	old := int64(1e18)
	if w.FileTime(0, 1, 1, old) != old {
		t.Fatal("a time before the run was changed")
	}
	written := time.Now().UnixNano()
	v := w.FileTime(0, 1, 1, written)
	w.ReadClock(0, ClockRealtime)
	if v != DefaultEpoch.UnixNano() || w.FileTime(0, 1, 1, written) != v {
		t.Fatalf("a time written during the run maps to %d, want the virtual time it was first seen", v)
	}
}

func TestLogRecordReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.log")
	h := Header{Seed: 7, Epoch: DefaultEpoch, CPUs: 1, MemBytes: 4 << 30, Hostname: "h", Argv: []string{"x"}}
	rec, err := CreateLog(path, h)
	if err != nil {
		t.Fatal(err)
	}
	rec.Event("", "clock", "CLOCK_REALTIME", "1")
	rec.Event("1", "getrandom", "16", "ab")
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	rep, got, err := OpenLog(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seed != 7 || got.Hostname != "h" {
		t.Fatalf("header %+v", got)
	}
	if err := rep.Event("", "clock", "CLOCK_REALTIME", "1"); err != nil {
		t.Fatal(err)
	}
	err = rep.Event("1", "getrandom", "16", "cd")
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "event 1") {
		t.Fatalf("mismatch not reported: %v", err)
	}

	short, _, _ := OpenLog(path)
	short.Event("", "clock", "CLOCK_REALTIME", "1")
	if err := short.Close(); !errors.Is(err, ErrMismatch) {
		t.Fatalf("a replay that stops early: %v", err)
	}
}

// TestEntropyPerProcess: a process's values depend on its place in the
// process tree, not on the order in which processes ask, and a replay
// accepts concurrent processes' values in another order.
func TestEntropyPerProcess(t *testing.T) {
	draw := func(w *World, tgid int32) string {
		b := make([]byte, 8)
		w.Random(tgid, b)
		x, _ := w.ExecRandom(tgid, "/bin/x")
		return fmt.Sprintf("%x %x", b, x)
	}
	path := filepath.Join(t.TempDir(), "run.log")
	log, err := CreateLog(path, Header{Epoch: DefaultEpoch, CPUs: 1, MemBytes: 4 << 30, Hostname: "h"})
	if err != nil {
		t.Fatal(err)
	}
	w1, _ := New(DefaultConfig(), log)
	w1.Root(100, 1)
	w1.Fork(100, 101) // "1.0"
	w1.Fork(100, 102) // "1.1"
	a1, b1 := draw(w1, 101), draw(w1, 102)
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	// Another run: other host PIDs, the children ask in the other order.
	replay, _, err := OpenLog(path)
	if err != nil {
		t.Fatal(err)
	}
	w2, _ := New(DefaultConfig(), replay)
	w2.Root(500, 1)
	w2.Fork(500, 700)
	w2.Fork(500, 600)
	b2, a2 := draw(w2, 600), draw(w2, 700)
	if a1 != a2 || b1 != b2 || a1 == b1 {
		t.Errorf("child 1.0: %s, then %s; child 1.1: %s, then %s", a1, a2, b1, b2)
	}
	if err := replay.Close(); err != nil {
		t.Errorf("replay in another order between processes: %v", err)
	}
	// Within a process, order still matters.
	replay, _, _ = OpenLog(path)
	w3, _ := New(DefaultConfig(), replay)
	w3.Root(1, 1)
	w3.Fork(1, 2)
	w3.ExecRandom(2, "/bin/x")
	if err := replay.Close(); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "process 1.0: getrandom") {
		t.Errorf("a process's values in another order: %v", err)
	}
}

func TestLogRefusesBadFiles(t *testing.T) {
	good := `{"format":"lockstep-exec-log","version":1,"seed":1,"epoch":"2025-01-01T00:00:00Z","cpus":1,"mem_bytes":4294967296,"hostname":"h","argv":["x"]}
{"seq":0,"kind":"clock","what":"CLOCK_REALTIME","value":"1"}
{"seq":1,"kind":"clock","what":"CLOCK_REALTIME","value":"2"}
`
	if _, _, err := ReadLog(strings.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"empty":       "",
		"not a log":   "hello\n",
		"truncated":   good[:len(good)-20],
		"reordered":   strings.Replace(good, `"seq":1`, `"seq":2`, 1),
		"version":     strings.Replace(good, `"version":1`, `"version":9`, 1),
		"unknown key": strings.Replace(good, `"seq":0,`, `"seq":0,"x":1,`, 1),
		"bad config":  strings.Replace(good, `"cpus":1`, `"cpus":0`, 1),
	}
	for name, text := range bad {
		if _, _, err := ReadLog(strings.NewReader(text)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzReadLog(f *testing.F) {
	f.Add([]byte(`{"format":"lockstep-exec-log","version":1,"seed":1,"epoch":"2025-01-01T00:00:00Z","cpus":1,"mem_bytes":4294967296,"hostname":"h","argv":["x"]}` + "\n" + `{"seq":0,"kind":"clock","what":"a","value":"1"}` + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, events, err := ReadLog(bytes.NewReader(b))
		if err != nil {
			return
		}
		if h.Format != LogFormat || h.Config().Validate() != nil {
			t.Fatalf("accepted a bad header %+v", h)
		}
		for i, e := range events {
			if e.Seq != uint64(i) || e.Kind == "" {
				t.Fatalf("accepted a bad event %d: %+v", i, e)
			}
		}
	})
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.CPUs = 0
	if c.Validate() == nil {
		t.Fatal("0 CPUs accepted")
	}
}

// TestClocksPerProcess: a child starts at its parent's time, moves its own
// clocks, and its parent's clocks take in the child's when it reaps it.
func TestClocksPerProcess(t *testing.T) {
	child := exec.Command("sleep", "10")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	parent, kid := int32(os.Getpid()), int32(child.Process.Pid)
	w := world(t, 0)
	w.Start()
	w.Root(parent, 1)
	w.ReadClock(parent, ClockRealtime)
	p0, _ := w.Now(parent, ClockRealtime)
	w.Fork(parent, kid)
	if c0, _ := w.Now(kid, ClockRealtime); c0 != p0 {
		t.Fatalf("the child starts at %d, its parent is at %d", c0, p0)
	}
	w.Slept(kid, ClockRealtime, false, int64(time.Second), time.Second)
	w.ReadClock(parent, ClockRealtime)
	if p1, _ := w.Now(parent, ClockRealtime); p1 != p0 {
		t.Fatalf("the parent's clock moved with its child's sleep: %d, then %d", p0, p1)
	}
	c1, _ := w.Now(kid, ClockRealtime)
	w.Exit(kid)
	w.Reaped(parent, kid) // same PID namespace: its PID is the host's
	if p2, _ := w.Now(parent, ClockRealtime); p2 != c1 {
		t.Errorf("after the wait the parent is at %d, the child ended at %d", p2, c1)
	}
	if m, _ := w.Now(parent, ClockMonotonic); m < int64(monoStart+time.Second) {
		t.Errorf("the parent's monotonic clock did not take in the child's sleep: %d", m)
	}
}

func TestCheckLimits(t *testing.T) {
	var b strings.Builder
	fmt.Fprintf(&b, "%-25s %-20s %-20s %-10s\n", "Limit", "Soft Limit", "Hard Limit", "Units")
	for _, l := range Rlimits {
		fmt.Fprintf(&b, "%-25s %-20s %-20s %-10s\n", "Max "+l.Name, FormatLimit(l.Cur), FormatLimit(l.Max), "units")
	}
	if err := CheckLimits(b.String(), Rlimits[:]); err != nil {
		t.Errorf("Lockstep's own limits: %v", err)
	}
	host := strings.Replace(b.String(), "16384                16384", "96363                96363", 1)
	if err := CheckLimits(host, Rlimits[:]); err == nil || !strings.Contains(err.Error(), "RLIMIT_NPROC") {
		t.Errorf("a host's process limit: %v", err)
	}
	if err := CheckLimits("Limit\n", Rlimits[:]); err == nil {
		t.Error("an empty list passed")
	}
}

func TestParseProcFile(t *testing.T) {
	for path, want := range map[string]string{
		"/proc/self/stat":                "self  stat",
		"/proc/thread-self/status":       "thread-self  status",
		"/proc/100/statm":                "100  statm",
		"/proc/100/task/101/stat":        "100 101 stat",
		"/proc/stat":                     "",
		"/proc/self/task/1/stat":         "",
		"/proc/0/stat":                   "",
		"/proc/100/stat/x":               "",
		"/proc/100/task/101/task/1/stat": "",
	} {
		pf, ok := ParseProcFile(path)
		got := ""
		if ok {
			got = pf.PID + " " + pf.TID + " " + pf.Name
		}
		if got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
}

// TestProcFile rewrites files as a process reads them from procfs (these
// were read on the project's VM, a command name with spaces and ')' put in).
func TestProcFile(t *testing.T) {
	w := world(t, 0)
	w.Root(1<<30, 1) // not a live PID: its namespace PID is unknown (0)
	stat := "4850 (a b) c) S 4846 4850 16064 34816 4850 4194304 99 0 3 0 17 5 0 0 20 0 1 0 485117 3133440 358 " +
		"18446744073709551615 93824992239616 93824992259497 140737488349152 0 0 0 0 0 0 0 0 0 17 1 0 0 7 2 3 " +
		"93824992275504 93824992277120 93824992280576 140737488349882 140737488349902 140737488349902 140737488351211 0\n"
	got, err := w.ProcFile("stat", 4850, 1<<30, []byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	want := "4850 (a b) c) R 4846 4850 16064 34816 4850 4194304 0 0 0 0 0 0 0 0 20 0 1 0 10000 3133440 0 " +
		"18446744073709551615 93824992239616 93824992259497 140737488349152 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 " +
		"93824992275504 93824992277120 93824992280576 140737488349882 140737488349902 140737488349902 140737488351211 0\n"
	if string(got) != want {
		t.Errorf("stat:\n got %q\nwant %q", got, want)
	}
	// Another process's file: a tracing stop shows as sleep. A PID the
	// world does not know (lockstep exec's init) started with the run and
	// has no memory.
	got, _ = w.ProcFile("stat", 77, 0, []byte(strings.Replace(stat, ") S ", ") t ", 1)))
	if string(got) != strings.Replace(strings.Replace(want, ") R ", ") S ", 1), " 10000 3133440 ", " 10000 0 ", 1) {
		t.Errorf("another process: %q", got)
	}
	if _, err := w.ProcFile("stat", 1, 0, []byte("1 (x) S 0\n")); err == nil {
		t.Error("a short stat line passed")
	}

	got, err = w.ProcFile("statm", 4850, 1<<30, []byte("731 358 300 5 0 89 0\n"))
	if err != nil || string(got) != "731 0 0 5 0 89 0\n" {
		t.Errorf("statm: %q, %v", got, err)
	}
	if got, _ = w.ProcFile("statm", 1, 0, []byte("731 358 300 5 0 89 0\n")); string(got) != "0 0 0 0 0 0 0\n" {
		t.Errorf("statm of a process not the run's: %q", got)
	}

	status := "Name:\tcat\nState:\tS (sleeping)\nVmSize:\t    3060 kB\nVmRSS:\t    1632 kB\nVmPTE:\t      52 kB\n" +
		"SigQ:\t3/16384\nSpeculation_Store_Bypass:\tthread force mitigated\nCpus_allowed:\tffff,ffffffff\n" +
		"Cpus_allowed_list:\t0-47\nMems_allowed_list:\t0-1\nnonvoluntary_ctxt_switches:\t12\n"
	got, _ = w.ProcFile("status", 1, 1<<30, []byte(status))
	want = "Name:\tcat\nState:\tR (running)\nVmSize:\t    3060 kB\nVmRSS:\t       0 kB\nVmPTE:\t       0 kB\n" +
		"SigQ:\t0/16384\nSpeculation_Store_Bypass:\tthread vulnerable\nCpus_allowed:\t1\n" +
		"Cpus_allowed_list:\t0\nMems_allowed_list:\t0\nnonvoluntary_ctxt_switches:\t0\n"
	if string(got) != want {
		t.Errorf("status:\n got %q\nwant %q", got, want)
	}
}

// TestProcStartTime: a process's start time is its parent's monotonic
// clock at the fork, found by its PID in the namespace.
func TestProcStartTime(t *testing.T) {
	w := world(t, 0)
	me := int32(os.Getpid())
	w.Root(me, 1)
	w.pr.advance(me, Mono, 0, 5*time.Second)
	child := exec.Command("sleep", "10")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	w.Fork(me, int32(child.Process.Pid))
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for pid, want := range map[int32]string{int32(child.Process.Pid): "10500", me: "10000", 1: "10000"} {
		got, err := w.ProcFile("stat", pid, 0, b)
		if f := strings.Fields(string(got)); err != nil || len(f) < 22 || f[21] != want {
			t.Errorf("PID %d: start time %q, want %s (%v)", pid, got, want, err)
		}
	}
}

func TestCPUMask(t *testing.T) {
	for n, want := range map[int]string{1: "1", 2: "3", 4: "f", 5: "1f", 32: "ffffffff", 33: "1,ffffffff", 64: "ffffffff,ffffffff"} {
		if got := cpuMask(n); got != want {
			t.Errorf("%d CPUs: %q, want %q", n, got, want)
		}
	}
}

// TestMountTable rewrites a container's mount table as read on the
// project's VM (an optional field and a bind mount of a host directory
// put in).
func TestMountTable(t *testing.T) {
	w := world(t, 0)
	info := "106 59 0:46 / / rw,relatime shared:417 - overlay overlay rw,lowerdir=/var/lib/containerd/snapshots/1/fs,upperdir=/var/lib/containerd/snapshots/2/fs,workdir=/var/lib/containerd/snapshots/2/work\n" +
		"107 106 0:55 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n" +
		"114 106 254:0 /run/containerd-lockstep-v1/5fbe0a35f36026e2 /.lockstep ro,nosuid,nodev,relatime - ext4 /dev/vda rw,discard\n" +
		"115 114 254:0 /usr/local/bin/lockstep-shim-exec /.lockstep/exec ro,nosuid,nodev,relatime - ext4 /dev/vda rw,discard\n" +
		"116 106 254:1 /var/lib/kubelet/pods/0f3a/volumes/data /data rw,relatime master:417 - xfs /dev/nvme0n1p2 rw,attr2\n" +
		"60 107 0:55 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw\n"
	got, err := w.ProcFile("mountinfo", 1, 0, []byte(info))
	want := "20 19 0:32 / / rw,relatime shared:1 - overlay overlay rw\n" +
		"21 20 0:33 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n" +
		"22 20 0:34 /data /data rw,relatime master:1 - xfs /dev/root rw,attr2\n" +
		"23 21 0:33 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw\n"
	if err != nil || string(got) != want {
		t.Errorf("mountinfo (%v):\n got %q\nwant %q", err, got, want)
	}
	mounts := "overlay / overlay rw,relatime,lowerdir=/var/lib/containerd/snapshots/1/fs,upperdir=/x/2/fs,workdir=/x/2/work 0 0\n" +
		"/dev/vda /.lockstep ext4 ro,nosuid,nodev,relatime,discard 0 0\n" +
		"/dev/nvme0n1p2 /data xfs rw,relatime,attr2 0 0\n"
	got, err = w.ProcFile("mounts", 1, 0, []byte(mounts))
	want = "overlay / overlay rw,relatime 0 0\n/dev/root /data xfs rw,relatime,attr2 0 0\n"
	if err != nil || string(got) != want {
		t.Errorf("mounts (%v):\n got %q\nwant %q", err, got, want)
	}
	if _, err := w.ProcFile("mountinfo", 1, 0, []byte("1 2 0:3 / /\n")); err == nil {
		t.Error("a malformed mountinfo line passed")
	}
}

func TestSysfsHidden(t *testing.T) {
	w := world(t, 0) // 1 CPU
	cpu := map[string]bool{"cpu0": true, "cpu1": true, "cpu12": true, "cpufreq": true, "possible": true, "kernel_max": true, "online": true}
	hidden := w.SysfsHidden(cpu)
	var got []string
	for _, n := range []string{"cpu0", "cpu1", "cpu12", "cpufreq", "cpuidle", "possible"} {
		if hidden(n) {
			got = append(got, n)
		}
	}
	if strings.Join(got, " ") != "cpu1 cpu12" {
		t.Errorf("cpu directory: hidden %v, want cpu1 cpu12", got)
	}
	if h := w.SysfsHidden(map[string]bool{"node0": true, "node1": true, "possible": true, "has_cpu": true}); h("node0") || !h("node1") {
		t.Error("node directory: want node1 hidden, node0 shown")
	}
	if w.SysfsHidden(map[string]bool{"cpu1": true})("cpu1") {
		t.Error("another directory lost an entry")
	}
}

func TestVmstat(t *testing.T) {
	b, ok, err := world(t, 0).File(10, "/proc/vmstat")
	ls := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if !ok || err != nil || len(ls) < 10 || !strings.HasPrefix(string(b), "nr_free_pages 0\n") {
		t.Fatalf("/proc/vmstat: served %v, %v:\n%s", ok, err, b)
	}
	for _, l := range ls {
		if !strings.HasSuffix(l, " 0") {
			t.Errorf("counter %q", l)
		}
	}
}

// TestProcFileRewrites rewrites files as read on the project's VM.
func TestProcFileRewrites(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"maps",
			"55f90dad4000-55f90dae4000 r--p 00000000 fe:00 247026                     /usr/bin/cat\n" +
				"55f90dae4000-55f90dae5000 rw-p 00000000 00:00 0 \n" +
				"7f129fcb7000-7f129fcba000 r--p 00000000 00:2e 9980335                    /usr/lib/x86_64-linux-gnu/libc.so.6\n" +
				"7fff0000-7fff1000 r-xp 00000000 fe:00 247026                             /usr/bin/cat (deleted)\n",
			"55f90dad4000-55f90dae4000 r--p 00000000 00:20 2                          /usr/bin/cat\n" +
				"55f90dae4000-55f90dae5000 rw-p 00000000 00:00 0 \n" +
				"7f129fcb7000-7f129fcba000 r--p 00000000 00:21 2                          /usr/lib/x86_64-linux-gnu/libc.so.6\n" +
				"7fff0000-7fff1000 r-xp 00000000 00:20 2                                  /usr/bin/cat (deleted)\n"},
		{"smaps",
			"55cf061c6000-55cf061c8000 r--p 00000000 fe:00 247278                     /usr/bin/head\n" +
				"Size:                  8 kB\nKernelPageSize:        4 kB\nRss:                   8 kB\nPrivate_Hugetlb:       4 kB\n" +
				"THPeligible:    0\nVmFlags: rd mr mw me sd \n",
			"55cf061c6000-55cf061c8000 r--p 00000000 00:20 2                          /usr/bin/head\n" +
				"Size:                  8 kB\nKernelPageSize:        4 kB\nRss:                   0 kB\nPrivate_Hugetlb:       0 kB\n" +
				"THPeligible:    0\nVmFlags: rd mr mw me sd \n"},
		{"io",
			"rchar: 6976\nwchar: 0\nsyscr: 10\nsyscw: 0\nread_bytes: 1744896\nwrite_bytes: 53248\ncancelled_write_bytes: 4096\n",
			"rchar: 6976\nwchar: 0\nsyscr: 10\nsyscw: 0\nread_bytes: 0\nwrite_bytes: 0\ncancelled_write_bytes: 0\n"},
		{"sched",
			"cat (100, #threads: 1)\n-------------------------------------------------------------------\n" +
				"se.exec_start                                :       8395157.775109\nnr_switches                                  :                    3\n" +
				"current_node=0, numa_group_id=0\n",
			"cat (100, #threads: 1)\n-------------------------------------------------------------------\n" +
				"se.exec_start                                :                    0\nnr_switches                                  :                    0\n" +
				"current_node=0, numa_group_id=0\n"},
	} {
		got, err := world(t, 0).ProcFile(c.name, 100, 0, []byte(c.in))
		if err != nil || string(got) != c.want {
			t.Errorf("%s (%v):\n got %q\nwant %q", c.name, err, got, c.want)
		}
	}
}

func TestKernelFiles(t *testing.T) {
	w := world(t, 0)
	for path, want := range map[string]string{
		"/proc/sys/kernel/threads-max": "32768\n",
		"/proc/sys/fs/file-nr":         "1024\t0\t419430\n",
		"/proc/pressure/irq":           "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
		"/proc/cmdline":                "BOOT_IMAGE=/boot/vmlinuz-6.1.0-lockstep root=/dev/root ro quiet\n",
		"/proc/diskstats":              "",
	} {
		if b, ok, _ := w.File(10, path); !ok || string(b) != want {
			t.Errorf("%s: %q, want %q", path, b, want)
		}
	}
}
