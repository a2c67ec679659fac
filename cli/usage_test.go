package cli

import (
	"strings"
	"testing"

	"github.com/lockstep-run/lockstep/replicate"
)

// TestUsageErrors: every command answers a bad flag, a flag without its
// value and a bad value with one line that names it, and exit status 2;
// --help is exit 0.
func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"exec", "--bogus"}, "exec: unknown flag: --bogus"},
		{[]string{"exec", "--seed", "abc", "--", "true"}, `invalid argument "abc" for "--seed"`},
		{[]string{"exec", "--require", "clock", "--", "true"}, `--require: unknown source "clock"`},
		{[]string{"exec", "--cpus"}, "flag needs an argument: --cpus"},
		{[]string{"exec"}, "no command given"},
		{[]string{"run", "--bogus"}, "run: unknown flag: --bogus"},
		{[]string{"run", "--replicas", "0", "img"}, "--replicas 0: want at least 1"},
		{[]string{"run", "--replicas", "x", "img"}, `invalid argument "x" for "--replicas"`},
		{[]string{"run"}, "run: no IMAGE given"},
		{[]string{"run", "--stderr", "some", "img"}, `--stderr: "some": want majority, none or replica-N`},
		{[]string{"run", "--fetch", "each", "img"}, `run: --fetch is guard or providers, not "each"`},
		{[]string{"pipe", "--checkpoint"}, "pipe: flag needs an argument: --checkpoint"},
		{[]string{"pipe", "--require", "rdtsc,nope", "img"}, `unknown source "nope"`},
		{[]string{"replay", "--bogus"}, "replay: unknown flag: --bogus"},
		{[]string{"provider", "--bogus"}, "provider: unknown flag: --bogus"},
		{[]string{"diff", "--bogus"}, "diff: unknown flag: --bogus"},
		{[]string{"doctor", "--bogus"}, "doctor: unknown flag: --bogus"},
		{[]string{"doctor", "extra"}, "doctor: takes no arguments"},
		{[]string{"log", "cat", "--bogus", "s"}, "log cat: unknown flag: --bogus"},
		{[]string{"log", "cat", "nosuch"}, "log cat: --key FILE is required"},
		{[]string{"log", "cat", "--key", "k"}, "log cat: want 1 argument(s), got 0"},
		{[]string{"serve", "--bogus"}, "serve: unknown flag: --bogus"},
		{[]string{"serve"}, "serve: no IMAGE given"},
		{[]string{"serve", "--port", "80", "img"}, "serve: --listen ADDR is required"},
		{[]string{"serve", "--listen", ":1", "--port", "0", "img"}, "serve: --port 0: want the TCP port"},
		{[]string{"serve", "--listen", ":1", "--port", "x", "img"}, `invalid argument "x" for "--port"`},
		{[]string{"serve", "--join", "s"}, "serve --join: --logd ADDR is required"},
		{[]string{"serve", "--join", "s", "--logd", "x", "img"}, "serve: --join takes no IMAGE and no --listen"},
		{[]string{"serve", "--join", "s", "--logd", "127.0.0.1:1"}, "serve --join: the logd at http://127.0.0.1:1: "},
		{[]string{"replay"}, "replay: no LOG given"},
		{[]string{"replay", "/nonexistent/run.log"}, "replay: open /nonexistent/run.log: no such file"},
		{[]string{"diff"}, "diff: want two digest files"},
		{[]string{"provider"}, "provider: --logd ADDR is required"},
		{[]string{"provider", "--logd", "x", "extra"}, "provider: takes no arguments"},
		{[]string{"exec", "--log"}, "flag needs an argument: --log"},
		{[]string{"nosuch"}, `unknown command "nosuch"`},
	}
	lockstep := func(args ...string) (string, int) {
		var o, e strings.Builder
		code := dispatch(args, &o, &e)
		return e.String(), code
	}
	for _, c := range cases {
		errs, code := lockstep(c.args...)
		if code != exitUsage || !strings.Contains(errs, c.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("lockstep %s: exit %d, stderr %q; want exit 2 and one line with %q", strings.Join(c.args, " "), code, errs, c.want)
		}
	}
	for _, cmd := range []string{"exec", "run", "pipe", "serve", "replay", "provider", "diff", "doctor"} {
		if errs, code := lockstep(cmd, "--help"); code != 0 || !strings.Contains(errs, "Usage: ") || !strings.Contains(errs, "lockstep "+cmd) {
			t.Errorf("lockstep %s --help: exit %d: %s", cmd, code, errs)
		}
	}
}

// TestShowStderr: the stderr most agreeing replicas wrote is shown once;
// replica-N shows one; none shows none; a split is said.
func TestShowStderr(t *testing.T) {
	v := replicate.Verdict{Replicas: []replicate.ReplicaReport{
		{Name: "replica-0", State: "agreed", Stderr: "sh: /bin/nonexistent: not found\n"},
		{Name: "replica-1", State: "agreed", Stderr: "sh: /bin/nonexistent: not found\n"},
		{Name: "replica-2", State: "odd", Stderr: "other\n"},
	}}
	show := func(mode string, v replicate.Verdict) string {
		var b strings.Builder
		showStderr(&b, "run", mode, v)
		return b.String()
	}
	if got := show("majority", v); got != "sh: /bin/nonexistent: not found\n" {
		t.Errorf("majority: %q", got)
	}
	if got := show("replica-2", v); got != "other\n" {
		t.Errorf("replica-2: %q", got)
	}
	if got := show("none", v); got != "" {
		t.Errorf("none: %q", got)
	}
	v.Replicas[1].Stderr = "third\n"
	if got := show("majority", v); !strings.Contains(got, "different stderr") {
		t.Errorf("a split: %q", got)
	}
	if err := checkStderrMode("replica-3", 3); err == nil {
		t.Error("replica-3 of 3 accepted")
	}
}
