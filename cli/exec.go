package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lockstep-run/lockstep/ebpf"
	"github.com/lockstep-run/lockstep/runner"
	"github.com/lockstep-run/lockstep/virt"
	"github.com/spf13/pflag"
)

const execUsage = `Usage: lockstep exec [FLAGS] -- CMD [ARGS...]

Runs CMD and all its descendants deterministically: clocks, randomness,
host identity, PIDs, directory order and inode numbers come from the seed
and the epoch, so two runs of the same command print the same bytes. The
exit status is CMD's (128+N if a signal N ended it); 125 means lockstep
itself failed, or with --verify that the two runs differed. The command's
environment is PATH and HOME (--base-env minimal) and what --env sets, not
the caller's, which differs from host to host.

Flags:
`

func execMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("exec", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	def := virt.DefaultConfig()
	seed := fs.Uint64("seed", def.Seed, "seed of every random value")
	epoch := fs.String("epoch", def.Epoch.Format(time.RFC3339), "wall-clock time at the first read (RFC 3339); with --log, a new record starts at the real time unless this is given")
	cpus := fs.Int("cpus", def.CPUs, "number of CPUs reported")
	hostname := fs.String("hostname", def.Hostname, "host name reported")
	logPath := fs.String("log", "", "record the values served to `FILE`; if FILE exists, replay it and report the first mismatch")
	verify := fs.Bool("verify", false, "run CMD twice and compare stdout, stderr and exit status")
	digests := fs.String("digests", "", "trace the run's I/O with eBPF and write each stream's digest chain to `FILE` (JSON lines; compare two with lockstep diff)")
	every := fs.Int64("digest-every", 64<<10, "a digest checkpoint every `BYTES` of a stream")
	tracePath := fs.String("trace", "", "with --digests, also write every traced byte to `FILE`, so that lockstep diff --trace can show a divergence byte by byte")
	audit := fs.Bool("audit", false, "list the nondeterministic syscalls and files the run touched that the profile does not answer (eBPF), on stderr")
	baseEnv := fs.String("base-env", "minimal", "the command's environment before --env: minimal (PATH and HOME), empty, or host (lockstep's own, which differs from host to host)")
	envs := fs.StringArray("env", nil, "set `KEY=VALUE` in the command's environment (KEY alone: the caller's value); repeatable")
	unordered := fs.Bool("unordered-wakes", false, "let a process that wakes another run on at once, in the host's order, instead of after the woken one waits again (faster pipelines; what two processes write to one pipe may interleave differently): to measure the ordering's cost")
	require := requireFlag(fs)
	fs.Usage = func() { io.WriteString(stderr, execUsage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return errorf(stderr, exitUsage, "exec: no command given (lockstep exec [FLAGS] -- CMD [ARGS...]; --help lists the flags)")
	}
	t, err := time.Parse(time.RFC3339Nano, *epoch)
	if err != nil {
		return errorf(stderr, exitUsage, "exec: --epoch %q: want RFC 3339, such as 2025-01-01T00:00:00Z", *epoch)
	}
	cfg := virt.Config{Seed: *seed, Epoch: t, CPUs: *cpus, MemBytes: def.MemBytes, Hostname: *hostname}
	if err := cfg.Validate(); err != nil {
		return errorf(stderr, exitUsage, "exec: %v", err)
	}
	env, err := commandEnv(*baseEnv, *envs)
	if err != nil {
		return errorf(stderr, exitUsage, "exec: %v", err)
	}
	required, code := parseRequire("exec", *require, stderr)
	if code >= 0 {
		return code
	}
	if code := hostGuard("exec", required, stderr); code >= 0 {
		return code
	}
	if *verify {
		if *logPath != "" {
			return errorf(stderr, exitUsage, "exec: --verify and --log do not go together")
		}
		return verifyRuns(cfg, argv, env, stdout, stderr)
	}
	var log *virt.Log
	if *logPath != "" {
		if log, cfg, env, err = openLog(*logPath, cfg, argv, env, fs); err != nil {
			return errorf(stderr, exitRuntime, "exec: %v", err)
		}
	}
	if *every < 1 {
		return errorf(stderr, exitUsage, "exec: --digest-every must be at least 1")
	}
	var chains *ebpf.Chains
	if *digests != "" {
		chains = ebpf.NewChains(*every)
	}
	var trace *ebpf.TraceWriter
	if *tracePath != "" {
		if chains == nil {
			return errorf(stderr, exitUsage, "exec: --trace needs --digests")
		}
		if trace, err = ebpf.CreateTrace(*tracePath); err != nil {
			return errorf(stderr, exitRuntime, "exec: %v", err)
		}
	}
	var aud *ebpf.Audit
	if *audit {
		aud = ebpf.NewAudit()
	}
	res, err := runner.Run(runner.Options{Config: cfg, Log: log, Argv: argv, Env: env, Stdin: os.Stdin, Stdout: stdout, Stderr: stderr, Digests: chains, Audit: aud, Trace: trace, UnorderedWakes: *unordered})
	if trace != nil {
		if cerr := trace.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil && aud != nil {
		found := aud.Findings()
		fmt.Fprintf(stderr, "lockstep audit: %d nondeterministic sources touched\n", len(found))
		for _, f := range found {
			fmt.Fprintf(stderr, "lockstep audit: %s\n", f)
		}
	}
	if err == nil && chains != nil {
		err = ebpf.WriteCheckpoints(*digests, chains.Finish())
	}
	if log != nil {
		if e, ok := log.Outside(); ok && !log.Replaying() {
			fmt.Fprintf(stderr, "exec: warning: %s reached outside the run (%s): what came back is not in the log, so a replay of %s will be refused\n", procName(e.Proc), e.What, *logPath)
		}
		if cerr := log.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return errorf(stderr, exitRuntime, "exec: %v", err)
	}
	return res.ExitCode
}

// minimalEnv is the environment of a command run with --base-env minimal.
// procName names a process of a run by its place in the process tree.
func procName(proc string) string {
	if proc == "" {
		return "the program"
	}
	return "process " + proc
}

var minimalEnv = []string{"HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// commandEnv makes the command's environment: the base, then each
// KEY=VALUE of --env in order (KEY alone takes the caller's value).
func commandEnv(base string, sets []string) ([]string, error) {
	var env []string
	switch base {
	case "minimal":
		env = slices.Clone(minimalEnv)
	case "empty":
		env = []string{}
	case "host":
		env = os.Environ()
	default:
		return nil, fmt.Errorf("--base-env %q: want minimal, empty or host", base)
	}
	for _, kv := range sets {
		k, _, ok := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("--env %q: want KEY=VALUE or KEY", kv)
		}
		if !ok {
			v, found := os.LookupEnv(k)
			if !found {
				return nil, fmt.Errorf("--env %s: not set here (give KEY=VALUE)", k)
			}
			kv = k + "=" + v
		}
		env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
		env = append(env, kv)
	}
	return env, nil
}

// openLog records to a new log, or replays an existing one: its header
// then gives the configuration and the environment, and flags may not
// contradict them.
func openLog(path string, cfg virt.Config, argv, env []string, fs *pflag.FlagSet) (*virt.Log, virt.Config, []string, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		// Time is part of the record: a new one starts at the real time,
		// which its replays then reproduce.
		if !fs.Changed("epoch") {
			cfg.Epoch = time.Now().UTC()
		}
		l, err := virt.CreateLog(path, virt.Header{Seed: cfg.Seed, Epoch: cfg.Epoch, CPUs: cfg.CPUs,
			MemBytes: cfg.MemBytes, Hostname: cfg.Hostname, Argv: argv, Env: env})
		return l, cfg, env, err
	}
	l, h, err := virt.OpenLog(path)
	if err != nil {
		return nil, cfg, nil, err
	}
	if h.Env != nil {
		if (fs.Changed("env") || fs.Changed("base-env")) && !slices.Equal(env, h.Env) {
			l.Close()
			return nil, cfg, nil, fmt.Errorf("--env and --base-env give another environment than the log %s recorded; drop them to replay", path)
		}
		env = h.Env
	}
	logged := h.Config()
	for _, f := range []struct {
		flag     string
		same     bool
		got, was any
	}{
		{"seed", cfg.Seed == logged.Seed, cfg.Seed, logged.Seed},
		{"epoch", cfg.Epoch.Equal(logged.Epoch), cfg.Epoch, logged.Epoch},
		{"cpus", cfg.CPUs == logged.CPUs, cfg.CPUs, logged.CPUs},
		{"hostname", cfg.Hostname == logged.Hostname, cfg.Hostname, logged.Hostname},
	} {
		if fs.Changed(f.flag) && !f.same {
			l.Close()
			return nil, cfg, nil, fmt.Errorf("--%s %v contradicts the log %s (recorded with %v); drop the flag to replay", f.flag, f.got, path, f.was)
		}
	}
	if !slices.Equal(argv, h.Argv) {
		l.Close()
		return nil, cfg, nil, fmt.Errorf("the log %s recorded the command %q, not %q: replay it with that command, or record this one in another --log", path, h.Argv, argv)
	}
	if e, ok := l.Outside(); ok {
		l.Close()
		return nil, cfg, nil, fmt.Errorf("the log %s cannot be replayed: %s reached outside the run (%s), and what came back is not in the log (see docs/exec-log.md)", path, procName(e.Proc), e.What)
	}
	return l, logged, env, nil
}

// verifyRuns runs argv twice with the same stdin and compares.
func verifyRuns(cfg virt.Config, argv, env []string, stdout, stderr io.Writer) int {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		return errorf(stderr, exitRuntime, "exec: read stdin: %v", err)
	}
	var outs [2]runner.Output
	for i := range outs {
		var o, e bytes.Buffer
		res, err := runner.Run(runner.Options{Config: cfg, Argv: argv, Env: env, Stdin: bytes.NewReader(in), Stdout: &o, Stderr: &e})
		if err != nil {
			return errorf(stderr, exitRuntime, "exec: run %d: %v", i+1, err)
		}
		outs[i] = runner.Output{Stdout: o.Bytes(), Stderr: e.Bytes(), ExitCode: res.ExitCode}
	}
	stdout.Write(outs[0].Stdout)
	stderr.Write(outs[0].Stderr)
	if d := runner.FirstDifference(outs[0], outs[1]); d != "" {
		return errorf(stderr, exitRuntime, "verify: the two runs differ: %s", d)
	}
	fmt.Fprintf(stderr, "lockstep: verify: 2 runs identical (stdout %d bytes, stderr %d bytes, exit status %d)\n",
		len(outs[0].Stdout), len(outs[0].Stderr), outs[0].ExitCode)
	return outs[0].ExitCode
}
