package logd

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// These tests run lockstep-logd as real processes: kill -9 during appends,
// and a three-member cluster on loopback with one member killed.

var daemonBin string

func buildDaemon(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs lockstep-logd processes")
	}
	if os.Getenv("LOCKSTEP_LOGD_BIN") != "" {
		return os.Getenv("LOCKSTEP_LOGD_BIN")
	}
	if daemonBin == "" {
		dir, err := os.MkdirTemp("", "logd-test")
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(dir, "lockstep-logd")
		if out, err := exec.Command("go", "build", "-o", bin, "../cmd/lockstep-logd").CombinedOutput(); err != nil {
			t.Fatalf("build lockstep-logd: %v\n%s", err, out)
		}
		daemonBin = bin
	}
	return daemonBin
}

type daemon struct {
	cmd  *exec.Cmd
	addr string
	args []string
}

func startDaemon(t testing.TB, bin string, args ...string) *daemon {
	t.Helper()
	d := newDaemon(t, args...)
	if err := d.start(t, bin); err != nil {
		t.Fatal(err)
	}
	return d
}

func newDaemon(t testing.TB, args ...string) *daemon {
	return &daemon{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), args: args}
}

// start starts the daemon and waits until it serves; it may be called
// from any goroutine.
func (d *daemon) start(t testing.TB, bin string) error {
	d.cmd = exec.Command(bin, append([]string{"--listen", d.addr}, d.args...)...)
	out, _ := d.cmd.StdoutPipe()
	d.cmd.Stderr = os.Stderr
	if err := d.cmd.Start(); err != nil {
		return err
	}
	t.Cleanup(func() { d.cmd.Process.Kill(); d.cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "serving on") {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			return fmt.Errorf("lockstep-logd %v exited before serving", d.args)
		}
	case <-time.After(60 * time.Second):
		return fmt.Errorf("lockstep-logd %v did not start", d.args)
	}
	return nil
}

func (d *daemon) kill9() { d.cmd.Process.Signal(syscall.SIGKILL); d.cmd.Wait() }

// TestKill9LosesNoAcknowledgedEntry: appends go on while logd is killed
// with SIGKILL; after a restart on the same data every acknowledged entry
// is there and the stream verifies.
func TestKill9LosesNoAcknowledgedEntry(t *testing.T) {
	bin := buildDaemon(t)
	dir := t.TempDir()
	args := []string{"--data-dir", filepath.Join(dir, "data"),
		"--client-url", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		"--peer-url", fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}
	d := startDaemon(t, bin, args...)
	ctx := context.Background()
	c := NewClient(d.addr)
	k := key(t, 1)
	a := newStream(t, c, "s", k)
	var acked atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := int64(0); ; i += 8 {
			if _, err := a.Append(ctx, inputs(8, i)); err != nil {
				return // the daemon is gone
			}
			acked.Store(a.Size())
		}
	}()
	time.Sleep(700 * time.Millisecond)
	d.kill9()
	<-done
	if acked.Load() == 0 {
		t.Fatal("no append was acknowledged before the kill")
	}
	if err := d.start(t, bin); err != nil {
		t.Fatal(err)
	}
	f, err := NewClient(d.addr).Follow(ctx, "s", k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	for {
		es, err := f.Next(ctx, 0)
		if err != nil {
			t.Fatalf("after restart: %v", err)
		}
		if len(es) == 0 {
			break
		}
		got += int64(len(es))
	}
	if got < acked.Load() {
		t.Fatalf("%d entries acknowledged before kill -9, %d after restart", acked.Load(), got)
	}
	t.Logf("%d entries acknowledged before kill -9; %d verified after restart", acked.Load(), got)
}

// TestThreeMemberCluster: three logd processes, one etcd member each, on
// loopback. With one member killed, appends through one survivor and a
// subscription through the other go on.
func TestThreeMemberCluster(t *testing.T) {
	bin := buildDaemon(t)
	dir := t.TempDir()
	type member struct{ name, client, peer string }
	var ms []member
	var cluster []string
	for i := 1; i <= 3; i++ {
		m := member{fmt.Sprintf("m%d", i), fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}
		ms = append(ms, m)
		cluster = append(cluster, m.name+"="+m.peer)
	}
	ds := make([]*daemon, 3)
	started := make(chan error, 3)
	for i, m := range ms {
		ds[i] = newDaemon(t, "--name", m.name, "--data-dir", filepath.Join(dir, m.name),
			"--client-url", m.client, "--peer-url", m.peer, "--initial-cluster", strings.Join(cluster, ","))
		// Members start together: each waits for a quorum.
		go func() { started <- ds[i].start(t, bin) }()
	}
	for range 3 {
		if err := <-started; err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	k := key(t, 1)
	pub := k.Public().(ed25519.PublicKey)
	c1, c3 := NewClient(ds[0].addr), NewClient(ds[2].addr)
	a := newStream(t, c1, "s", k)
	if _, err := a.Append(ctx, inputs(10, 0)); err != nil {
		t.Fatal(err)
	}
	f, err := c3.Follow(ctx, "s", pub)
	if err != nil {
		t.Fatal(err)
	}
	if es, err := f.Next(ctx, 5*time.Second); err != nil || len(es) != 10 {
		t.Fatalf("follow through member 3: %d entries, %v", len(es), err)
	}
	ds[1].kill9()
	for i := int64(10); i < 30; i += 5 {
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := a.Append(actx, inputs(5, i))
		cancel()
		if err != nil {
			t.Fatalf("append with member 2 dead: %v", err)
		}
	}
	var got int
	deadline := time.Now().Add(20 * time.Second)
	for got < 20 && time.Now().Before(deadline) {
		es, err := f.Next(ctx, 5*time.Second)
		if err != nil {
			t.Fatalf("subscription with member 2 dead: %v", err)
		}
		got += len(es)
	}
	if got != 20 {
		t.Fatalf("subscription got %d of 20 entries appended after the kill", got)
	}
}

// TestExternalEtcd: a logd with --etcd uses a cluster it does not run (here
// the embedded member of another logd); both serve the same streams.
func TestExternalEtcd(t *testing.T) {
	bin := buildDaemon(t)
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	owner := startDaemon(t, bin, "--data-dir", filepath.Join(t.TempDir(), "data"),
		"--client-url", clientURL, "--peer-url", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	user := startDaemon(t, bin, "--etcd", clientURL)
	ctx := context.Background()
	k := key(t, 1)
	cu := NewClient(user.addr)
	a := newStream(t, cu, "ext", k)
	if _, err := a.Append(ctx, inputs(3, 0)); err != nil {
		t.Fatal(err)
	}
	f, err := NewClient(owner.addr).Follow(ctx, "ext", k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if es, err := f.Next(ctx, 0); err != nil || len(es) != 3 {
		t.Fatalf("read through the other logd: %d entries, %v", len(es), err)
	}
}
