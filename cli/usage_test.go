package cli

import (
	"strings"
	"testing"
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
		{[]string{"pipe", "--checkpoint"}, "pipe: flag needs an argument: --checkpoint"},
		{[]string{"pipe", "--require", "rdtsc,nope", "img"}, `unknown source "nope"`},
		{[]string{"replay", "--bogus"}, "replay: unknown flag: --bogus"},
		{[]string{"provider", "--bogus"}, "provider: unknown flag: --bogus"},
		{[]string{"diff", "--bogus"}, "diff: unknown flag: --bogus"},
		{[]string{"doctor", "--bogus"}, "doctor: unknown flag: --bogus"},
		{[]string{"doctor", "extra"}, "doctor: takes no arguments"},
		{[]string{"log", "cat", "--bogus", "s"}, "log cat: unknown flag: --bogus"},
		{[]string{"log", "cat", "nosuch"}, "log cat: --key FILE is required"},
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
	for _, cmd := range []string{"exec", "run", "pipe", "replay", "provider", "diff", "doctor"} {
		if errs, code := lockstep(cmd, "--help"); code != 0 || !strings.Contains(errs, "Usage: ") || !strings.Contains(errs, "lockstep "+cmd) {
			t.Errorf("lockstep %s --help: exit %d: %s", cmd, code, errs)
		}
	}
}
