//go:build linux

package shim

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWaitDrained: the wait ends only once the writer has closed and the
// reader has read everything; it gives up when nothing moves.
func TestWaitDrained(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdout")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString("tail of the output\n"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- waitDrained(context.Background(), path, 10*time.Second) }()
	expectWaiting := func(why string) {
		t.Helper()
		select {
		case err := <-done:
			t.Fatalf("the wait ended (%v) while %s", err, why)
		case <-time.After(100 * time.Millisecond):
		}
	}
	expectWaiting("a writer was open and 19 bytes unread")
	w.Close()
	expectWaiting("19 bytes were unread")
	b, err := io.ReadAll(io.LimitReader(r, 19))
	if err != nil || len(b) != 19 {
		t.Fatalf("read %q: %v", b, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the wait did not end once the FIFO was drained")
	}

	// Nobody reads: the wait gives up after its patience, and says why.
	w, err = os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.WriteString("unread")
	start := time.Now()
	err = waitDrained(context.Background(), path, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "6 bytes unread, 1 writers still open") {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("gave up after %v, before its patience", d)
	}
}
