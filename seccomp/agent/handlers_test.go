//go:build linux

package agent

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/seccomp"
	"github.com/lockstep-run/lockstep/virt"
	"golang.org/x/sys/unix"
)

// notified runs testdata/notified.c under the determinism filter, its
// notifications served by an agent in this process, and returns its
// records by tag, and the agent's world.
func notified(t *testing.T, dir, file string) (map[uint8][]record, *virt.World) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "notified")
	if out, err := exec.Command("gcc", "-O1", "-o", bin, "testdata/notified.c").CombinedOutput(); err != nil {
		t.Fatalf("build the test program (gcc is needed): %v\n%s", err, out)
	}
	raw, err := seccomp.Assemble(seccomp.Rules())
	if err != nil {
		t.Fatal(err)
	}
	prog := binary.LittleEndian.AppendUint16(nil, uint16(len(raw)))
	for _, r := range raw {
		prog = binary.LittleEndian.AppendUint16(prog, r.Op)
		prog = append(prog, r.Jt, r.Jf)
		prog = binary.LittleEndian.AppendUint32(prog, r.K)
	}
	cmd := exec.Command(bin, dir, file)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	stdin.Write(prog)
	var childFD int32
	if err := binary.Read(stdout, binary.LittleEndian, &childFD); err != nil {
		t.Fatalf("the test program did not install the filter: %v", err)
	}
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdGetfd(pidfd, int(childFD), 0)
	unix.Close(pidfd)
	if err != nil {
		t.Fatalf("pidfd_getfd of the listener: %v", err)
	}
	w, _ := virt.New(virt.DefaultConfig(), nil)
	w.Start()
	agentErr := make(chan error, 1)
	go func() { agentErr <- New(fd, w).Run() }()
	stdin.Write([]byte{'g'})

	recs := map[uint8][]record{}
	for {
		var h struct {
			Tag   uint8
			Ret   int64
			Errno int32
			Len   uint32
		}
		if err := binary.Read(stdout, binary.LittleEndian, &h); err != nil {
			break
		}
		b := make([]byte, h.Len)
		if _, err := io.ReadFull(stdout, b); err != nil {
			t.Fatal(err)
		}
		recs[h.Tag] = append(recs[h.Tag], record{h.Ret, unix.Errno(h.Errno), b})
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the test program: %v", err)
	}
	select {
	case err := <-agentErr:
		if err != nil {
			t.Fatalf("agent: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not end with the process")
	}
	return recs, w
}

type record struct {
	ret   int64
	errno unix.Errno
	b     []byte
}

func le(b []byte, i int) int64 { return int64(binary.LittleEndian.Uint64(b[8*i:])) }

// TestHandlers drives every handler with a real notification from a real
// process and checks each answer against the world's.
func TestHandlers(t *testing.T) {
	dir := t.TempDir()
	names := []string{"zeta", "alpha", "mu", "beta", "omega"}
	for _, n := range names {
		os.WriteFile(filepath.Join(dir, n), nil, 0o600)
	}
	sort.Strings(names)
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("x"), 0o600)
	recs, w := notified(t, dir, file)
	one := func(tag uint8, what string) record {
		t.Helper()
		rs := recs[tag]
		if len(rs) == 0 {
			t.Fatalf("%s: no record", what)
		}
		if rs[0].errno != 0 {
			t.Errorf("%s: %v", what, rs[0].errno)
		}
		return rs[0]
	}
	epoch := virt.DefaultEpoch.UnixNano()
	fresh := func() *virt.World { w, _ := virt.New(virt.DefaultConfig(), nil); return w }

	t.Run("clocks", func(t *testing.T) {
		rs := recs[1]
		if len(rs) != 2 {
			t.Fatalf("clock_gettime: %d records", len(rs))
		}
		a, b := le(rs[0].b, 0)*1e9+le(rs[0].b, 1), le(rs[1].b, 0)*1e9+le(rs[1].b, 1)
		if a < epoch || a > epoch+int64(time.Second) || b != a {
			t.Errorf("CLOCK_REALTIME %d then %d, epoch %d: want the epoch twice (reads do not move time)", a, b, epoch)
		}
		tv := one(2, "gettimeofday").b
		if us := le(tv, 0)*1e6 + le(tv, 1); us*1000 != b {
			t.Errorf("gettimeofday %d µs after %d ns", us, b)
		}
		if r := one(3, "time"); r.ret != epoch/1e9 || le(r.b, 0) != epoch/1e9 {
			t.Errorf("time: %d, %d", r.ret, le(r.b, 0))
		}
		want, _ := w.Resolution(virt.ClockMonotonic)
		if r := one(4, "clock_getres"); le(r.b, 0)*1e9+le(r.b, 1) != want {
			t.Errorf("clock_getres: %x, want %d ns", r.b, want)
		}
		if r := recs[5]; len(r) != 1 || r[0].errno != unix.EINVAL {
			t.Errorf("a clock that does not exist: %+v", r)
		}
	})

	t.Run("sleeps", func(t *testing.T) {
		one(6, "nanosleep")
		one(7, "clock_nanosleep")
		if moved := time.Duration(le(one(8, "").b, 0)); moved < 60*time.Millisecond || moved > time.Second {
			t.Errorf("two 30 ms sleeps moved the monotonic clock %v", moved)
		}
	})

	t.Run("times and rusage", func(t *testing.T) {
		if r := one(9, "times"); !bytes.Equal(r.b, make([]byte, 32)) || r.ret < 0 {
			t.Errorf("times: %d %x", r.ret, r.b)
		}
		if r := one(10, "getrusage"); !bytes.Equal(r.b, make([]byte, len(r.b))) {
			t.Errorf("getrusage: %x", r.b)
		}
	})

	t.Run("getrandom", func(t *testing.T) {
		want := make([]byte, 64)
		fresh().Random(0, want) // a process never announced, as this one
		if r := one(11, "getrandom"); r.ret != 64 || !bytes.Equal(r.b, want) {
			t.Errorf("getrandom: %d\n got %x\nwant %x", r.ret, r.b, want)
		}
		if r := recs[12]; len(r) != 1 || r[0].errno != unix.EINVAL {
			t.Errorf("an unknown flag: %+v", r)
		}
	})

	t.Run("identity", func(t *testing.T) {
		if r := one(13, "uname"); !bytes.Equal(r.b, w.Uname()) {
			t.Errorf("uname: %q", r.b)
		}
		if r := one(14, "sysinfo"); !bytes.Equal(r.b, w.Sysinfo(0)) {
			t.Errorf("sysinfo: %x", r.b)
		}
		if r := one(15, "getcpu"); !bytes.Equal(r.b, make([]byte, 8)) {
			t.Errorf("getcpu: cpu and node %x", r.b)
		}
		if r := one(16, "sched_getaffinity"); r.ret != int64(len(w.CPUMask())) || !bytes.Equal(r.b, w.CPUMask()) {
			t.Errorf("sched_getaffinity: %d %x", r.ret, r.b)
		}
	})

	t.Run("files", func(t *testing.T) {
		for tag, path := range map[uint8]string{17: "/proc/cpuinfo", 18: "/proc/meminfo", 19: "/proc/loadavg"} {
			want, _, _ := w.File(0, path)
			if r := one(tag, path); !bytes.Equal(r.b, want) {
				t.Errorf("%s:\n%s\nwant\n%s", path, r.b, want)
			}
		}
		s, _ := fresh().OpenEntropy(0, "/dev/urandom")
		want := make([]byte, 32)
		s.Read(want)
		if r := one(20, "/dev/urandom"); !bytes.Equal(r.b, want) {
			t.Errorf("/dev/urandom:\n got %x\nwant %x", r.b, want)
		}
		if r := one(21, "/proc/self/comm"); string(r.b) != "notified\n" {
			t.Errorf("a file Lockstep does not serve is the kernel's: %q", r.b)
		}
	})

	t.Run("directory order", func(t *testing.T) {
		for tag, nameAt := range map[uint8]int{22: 19, 23: 18} { // getdents64, getdents
			b := one(tag, "getdents").b
			var got []string
			for off := 0; off+18 < len(b); {
				reclen := int(binary.LittleEndian.Uint16(b[off+16:]))
				if s := unix.ByteSliceToString(b[off+nameAt : off+reclen]); s != "." && s != ".." {
					got = append(got, s)
				}
				off += reclen
			}
			if strings.Join(got, " ") != strings.Join(names, " ") {
				t.Errorf("getdents (record %d): %v, want %v", tag, got, names)
			}
		}
	})

	t.Run("stat", func(t *testing.T) {
		var real unix.Stat_t
		if err := unix.Stat(file, &real); err != nil {
			t.Fatal(err)
		}
		b := one(24, "fstat").b
		var st unix.Stat_t
		binary.Read(bytes.NewReader(b), binary.LittleEndian, &st)
		if st.Size != 1 || st.Ino != w.Ino(real.Dev, real.Ino) || st.Ino == real.Ino || st.Mtim.Nano() != w.FileTime(0, real.Dev, real.Ino, real.Mtim.Nano()) {
			t.Errorf("fstat: ino %d (host %d), mtime %d, size %d", st.Ino, real.Ino, st.Mtim.Nano(), st.Size)
		}
		var host unix.Statfs_t
		unix.Statfs(file, &host)
		a, f := one(25, "statfs").b, one(26, "fstatfs").b
		var sfs unix.Statfs_t
		binary.Read(bytes.NewReader(a), binary.LittleEndian, &sfs)
		if !bytes.Equal(a, f) || sfs.Type != host.Type || sfs.Blocks != 1<<24 || sfs.Fsid != (unix.Fsid{}) {
			t.Errorf("statfs %+v (host type %#x); fstatfs the same: %v", sfs, host.Type, bytes.Equal(a, f))
		}
	})
}
