//go:build linux

package seccomp

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAddFDSendUnderSignals answers thousands of notifications with ADDFD
// while the answering thread is showered with signals. Interrupted in its
// wait, the ioctl used to leave the call answered with no fd: the retry
// failed EINPROGRESS and the caller's syscall returned 0.
func TestAddFDSendUnderSignals(t *testing.T) {
	const calls = 5000
	bin := filepath.Join(t.TempDir(), "addfd")
	if out, err := exec.Command("gcc", "-O1", "-o", bin, "testdata/addfd.c").CombinedOutput(); err != nil {
		t.Fatalf("build the test program (gcc is needed): %v\n%s", err, out)
	}
	cmd := exec.Command(bin, fmt.Sprint(calls))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	out := bufio.NewReader(stdout)
	var childFD int
	if _, err := fmt.Fscan(out, &childFD); err != nil {
		t.Fatalf("the test program did not install its filter: %v", err)
	}
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	listener, err := unix.PidfdGetfd(pidfd, childFD, 0)
	unix.Close(pidfd)
	if err != nil {
		t.Fatalf("pidfd_getfd of the listener: %v", err)
	}
	defer unix.Close(listener)
	devNull, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(devNull)

	var tid atomic.Int32
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the shower: SIGURG, which the Go runtime takes and ignores
		for {
			select {
			case <-stop:
				return
			default:
			}
			if t := tid.Load(); t != 0 {
				unix.Tgkill(os.Getpid(), int(t), unix.SIGURG)
			}
			runtime.Gosched()
		}
	}()
	served := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid.Store(int32(unix.Gettid()))
		for i := 0; i < calls; i++ {
			var n Notif
			if err := Recv(listener, &n); err != nil {
				served <- fmt.Errorf("recv %d: %w", i, err)
				return
			}
			if _, err := AddFDSend(listener, n.ID, devNull, true); err != nil {
				served <- fmt.Errorf("answer %d: %w", i, err)
				return
			}
		}
		served <- nil
	}()
	stdin.Write([]byte{'g'})
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	var bad int
	if _, err := fmt.Fscan(out, &bad); err != nil {
		t.Fatalf("the test program's count: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the test program: %v", err)
	}
	if bad != 0 {
		t.Fatalf("%d of %d calls answered with no fd", bad, calls)
	}
}
