package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/lockstep-run/lockstep/hostcap"
	"github.com/spf13/pflag"
)

const doctorUsage = `Usage: lockstep doctor [--json] [--containers]

Measures, never assumes, what this host can do: each capability the
runtime depends on is tried (rdtsc trapping, CPUID faulting, IA32 and x32
emulation, seccomp user notification with ADDFD, ptrace and the vDSO,
namespaces, BPF, cgroups, runc, containerd), with how it was tried, what
is lost without it and what to do. Exit status: 0 when Lockstep can make
runs deterministic here; 1 when it runs but names sources it cannot make
deterministic (rdtsc, cpuid: see --require); 125 when a capability it
cannot run without is missing.

Flags:
`

func doctorMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("doctor", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	containers := fs.Bool("containers", false, "also require runc and containerd (lockstep run, pipe, provider and the shim need them)")
	fs.Usage = func() { io.WriteString(stderr, doctorUsage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return errorf(stderr, exitUsage, "doctor: takes no arguments, got %q", fs.Arg(0))
	}
	r := hostcap.Doctor(hostcap.Options{Containers: *containers})
	if *asJSON {
		printJSON(stdout, r)
	} else {
		printDoctor(stdout, r)
	}
	switch {
	case len(r.Missing) > 0:
		return exitRuntime
	case len(r.Leaks) > 0:
		return 1
	}
	return 0
}

func printDoctor(w io.Writer, r hostcap.Report) {
	fmt.Fprintf(w, "lockstep doctor: %s, Linux %s\n\n%-16s %-8s %s\n", r.CPU, r.Kernel, "CHECK", "STATUS", "FOUND")
	var notes strings.Builder
	for _, c := range r.Checks {
		status := "ok"
		if !c.OK {
			status = map[hostcap.Need]string{hostcap.Determinism: "LEAK", hostcap.Required: "MISSING", hostcap.Containers: "MISSING", hostcap.Info: "off"}[c.Need]
			fmt.Fprintf(&notes, "\n%s (%s): %s\n  measured: %s\n", c.Name, c.Need, c.Found, c.How)
			if c.Without != "" {
				fmt.Fprintf(&notes, "  without it: %s\n", c.Without)
			}
			if c.Fix != "" {
				fmt.Fprintf(&notes, "  to fix: %s\n", c.Fix)
			}
		}
		fmt.Fprintf(w, "%-16s %-8s %s\n", c.Name, status, c.Found)
	}
	io.WriteString(w, notes.String())
	switch {
	case len(r.Missing) > 0:
		fmt.Fprintf(w, "\nLockstep cannot run here: %s missing.\n", strings.Join(r.Missing, ", "))
	case len(r.Leaks) > 0:
		fmt.Fprintf(w, "\nLockstep runs here, but cannot make %s deterministic: every run says so, digest reports and verdicts record it, and --require %s refuses such hosts.\n",
			strings.Join(r.Leaks, " and "), strings.Join(r.Leaks, ","))
	default:
		fmt.Fprintln(w, "\nLockstep can make runs deterministic here.")
	}
}
