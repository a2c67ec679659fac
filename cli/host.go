package cli

import (
	"fmt"
	"io"

	"github.com/lockstep-run/lockstep/hostcap"
	"github.com/spf13/pflag"
)

// exitHostLimited is the exit status of a replicated run whose replicas
// differ where their hosts could not make a source deterministic: no
// provider is blamed (exit 3 is a divergence that names one).
const exitHostLimited = 4

const requireHelp = "refuse to run unless the host makes these `SOURCES` deterministic: rdtsc, cpuid or all, comma-separated (lockstep doctor measures them)"

// requireFlag adds --require to fs.
func requireFlag(fs *pflag.FlagSet) *string { return fs.String("require", "", requireHelp) }

// parseRequire parses --require; a bad value is a usage error.
func parseRequire(name, s string, stderr io.Writer) ([]string, int) {
	req, err := hostcap.ParseRequire(s)
	if err != nil {
		return nil, errorf(stderr, exitUsage, "%s: --require: %v", name, err)
	}
	return req, -1
}

// hostGuard measures what this host cannot make deterministic. A run that
// requires any of it is refused (exit 125); otherwise one line on stderr
// says what leaks. It returns -1 when the run may go on.
func hostGuard(name string, required []string, stderr io.Writer) int {
	leaks, err := hostcap.Leaks()
	if err != nil {
		return errorf(stderr, exitRuntime, "%s: %v", name, err)
	}
	if err := hostcap.Require(required, leaks); err != nil {
		return errorf(stderr, exitRuntime, "%s: refused: %v", name, err)
	}
	if w := hostcap.Warning(leaks); w != "" {
		fmt.Fprintf(stderr, "lockstep %s: %s\n", name, w)
	}
	return -1
}
