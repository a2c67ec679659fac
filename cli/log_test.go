package cli

import (
	"bytes"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockstep-run/lockstep/logd"
)

// run calls the CLI in-process with stdin.
func run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var o, e bytes.Buffer
	old := os.Stdin
	r, w, _ := os.Pipe()
	go func() { w.WriteString(stdin); w.Close() }()
	os.Stdin = r
	defer func() { os.Stdin = old; r.Close() }()
	code := logMain(args, &o, &e)
	return o.String(), e.String(), code
}

// TestLogCommands drives lockstep log against a real logd (embedded etcd).
func TestLogCommands(t *testing.T) {
	t.Setenv("LOCKSTEP_LOGD", startLogd(t))
	dir := t.TempDir()
	key := filepath.Join(dir, "svc.key")
	input := strings.Repeat("some input\n", 50000) // 550 kB: several entries

	if _, errs, code := run(t, "", "create", "--key", key, "svc"); code != 0 {
		t.Fatalf("create: %d %s", code, errs)
	}
	if _, errs, code := run(t, input, "append", "--key", key, "--chunk", "100000", "--end", "svc"); code != 0 {
		t.Fatalf("append: %d %s", code, errs)
	}
	if out, errs, code := run(t, "", "cat", "--key", key, "svc"); code != 0 || out != input {
		t.Fatalf("cat: %d, %d bytes, %s", code, len(out), errs)
	}
	out, _, code := run(t, "", "export", "svc")
	if code != 0 {
		t.Fatal("export failed")
	}
	file := filepath.Join(dir, "svc.log")
	os.WriteFile(file, []byte(out), 0o600)
	if out, errs, code := run(t, "", "verify", "--key", key, "--json", file); code != 0 || !strings.Contains(out, `"entries": 7`) {
		t.Errorf("verify: %d %s %s", code, out, errs)
	}
	// Reordered entries are refused, naming the line.
	b, _ := os.ReadFile(file)
	ls := strings.SplitAfter(string(b), "\n")
	ls[1], ls[2] = ls[2], ls[1] // swap the first two entries
	bad := filepath.Join(dir, "bad.log")
	os.WriteFile(bad, []byte(strings.Join(ls, "")), 0o600)
	if _, errs, code := run(t, "", "verify", bad); code != 1 || !strings.Contains(errs, "line 2") || !strings.Contains(errs, "reordered") {
		t.Errorf("verify of a reordered log: %d %s", code, errs)
	}
	// Importing over an existing stream is refused; into another logd
	// it gives the same stream back.
	if _, errs, code := run(t, "", "import", file); code != 1 || !strings.Contains(errs, "exists") {
		t.Errorf("import over an existing stream: %d %s", code, errs)
	}
	other := startLogd(t)
	if _, errs, code := run(t, "", "import", "--logd", other, "--key", key, file); code != 0 {
		t.Errorf("import: %d %s", code, errs)
	}
	if out, errs, code := run(t, "", "cat", "--logd", other, "--key", key, "svc"); code != 0 || out != input {
		t.Errorf("cat of the imported stream: %d, %d bytes, %s", code, len(out), errs)
	}
	if out, errs, code := run(t, "", "status", "--json", "svc"); code != 0 || !strings.Contains(out, `"state": "pending"`) {
		t.Errorf("status: %d %s %s", code, out, errs)
	}
	if _, errs, code := run(t, "more", "append", "--key", key, "svc"); code != 1 || !strings.Contains(errs, "follows the end") {
		t.Errorf("append after the end: %d %s", code, errs)
	}
	for _, sub := range []string{"create", "append", "cat", "verify", "export", "import", "status"} {
		if _, errs, code := run(t, "", sub, "--help"); code != 0 || !strings.Contains(errs, "Usage: lockstep log "+sub) {
			t.Errorf("%s --help: %d %s", sub, code, errs)
		}
	}
}

// startLogd runs logd's API on an embedded etcd member and returns its URL.
func startLogd(t *testing.T) string {
	t.Helper()
	m := logd.Member{Dir: t.TempDir()}
	e, cl, err := logd.StartEmbedded(m)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(logd.NewServer(logd.NewStore(cl)))
	t.Cleanup(func() { srv.Close(); cl.Close(); e.Close() })
	return srv.URL
}
