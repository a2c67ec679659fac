package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// Exit statuses of lockstep itself (the command's own otherwise).
const (
	exitUsage   = 2
	exitRuntime = 125
)

type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"exec", "run a command and its descendants deterministically", execMain},
		{"run", "run an image as verified deterministic replicas fed from one input log", runMain},
		{"pipe", "a verified stage of a pipeline: cmd0 | lockstep pipe IMAGE -- cmd1 | ...", pipeMain},
		{"serve", "serve a network service as verified replicas behind one address", serveMain},
		{"parallel", "GNU parallel over a named service: one verified run per input line, output in order", parallelMain},
		{"hub", "the hub: named services, providers, and the guard of their runs", hubMain},
		{"register", "register a named service at the hub: lockstep register NAME IMAGE@DIGEST -- CMD", registerMain},
		{"services", "list the services registered at the hub", servicesMain},
		{"id", "print this party's ID (its public key), for --trust and ID@HOST:PORT", idMain},
		{"provider", "serve replicas on this host's containerd to lockstep run --provider", providerMain},
		{"replay", "start one more copy of a recorded run and check it reproduces the output", replayMain},
		{"doctor", "measure what this host can make deterministic (rdtsc, cpuid, seccomp, ptrace, BPF, ...)", doctorMain},
		{"diff", "compare two runs' digest chains (lockstep exec --digests)", diffMain},
		{"log", "the replicated input log: create, append, cat, verify, export, import, status", logMain},
		{"version", "print the version", func([]string, io.Writer, io.Writer) int { fmt.Println(Version); return 0 }},
	}
}

// Version is set at build time.
var Version = "dev"

// Main runs the lockstep command line and returns the exit status.
func Main(args []string) int { return dispatch(args, os.Stdout, os.Stderr) }

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "lockstep: unknown command %q (see lockstep --help)\n", args[0])
	return exitUsage
}

func usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("Lockstep runs unmodified Linux programs deterministically.\n\nUsage: lockstep COMMAND [FLAGS] [-- ARGS]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-10s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun 'lockstep COMMAND --help' for a command's flags.\n")
	io.WriteString(w, b.String())
}

func errorf(w io.Writer, code int, format string, args ...any) int {
	fmt.Fprintf(w, "lockstep: "+format+"\n", args...)
	return code
}

// parseFlags parses a command's flags. It returns -1 when the command may
// go on, 0 after --help, and exitUsage after one line naming the bad flag
// or value (pflag's ContinueOnError prints nothing itself).
func parseFlags(fs *pflag.FlagSet, args []string, stderr io.Writer) int {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return -1
	case errors.Is(err, pflag.ErrHelp):
		return 0
	}
	name := strings.TrimPrefix(fs.Name(), "lockstep ")
	return errorf(stderr, exitUsage, "%s: %v (lockstep %s --help lists the flags)", name, err, name)
}
