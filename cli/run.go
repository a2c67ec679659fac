package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/lockstep-run/lockstep/ebpf"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

const runUsage = `Usage: lockstep run [FLAGS] IMAGE [-- CMD ARGS...]

Runs IMAGE as --replicas deterministic containers (runtime
io.containerd.lockstep.v1) fed from one input log: the seed and stdin
become log entries, every replica reads the verified log as its stdin, and
the output a majority agrees on is written to stdout as soon as it is
agreed. Replicas run on the local containerd (--address), or on the
provider hosts given by --provider (each runs lockstep provider and reads
the log from the logd given by --logd). The exit status is the agreed one;
if a replica differs from the majority, or no majority forms, the replicas
are named on stderr and the exit status is 3; where the replicas differ
and a host of theirs cannot make a source deterministic (rdtsc, cpuid:
lockstep doctor), none is blamed and the exit status is 4. Exit 125: the
run could not start (image, containerd, logd, a provider; --require); 2:
a bad flag or value; 130 or 143: interrupted by SIGINT or SIGTERM (the
replicas are stopped and removed); 141: stdout was closed. With --json,
stderr gets an object whose exit_kind names which. See docs/run.md.

With --hub ID@HOST:PORT (or $LOCKSTEP_HUB), IMAGE is the NAME of a service
registered at the hub (lockstep register), and the hub is the run's guard:
it places the replicas, keeps the log and votes, and this process sends
its stdin and receives the verified output once (docs/hub.md).

Flags:
`

const pipeUsage = `Usage: cmd0 | lockstep pipe [FLAGS] IMAGE [-- CMD ARGS...] | cmd2

A stage of a pipeline of verified services: lockstep run, reading stdin as
it comes and writing each checkpoint of output as soon as a majority of the
replicas agree on it, so that stages stream into each other. A slow reader
slows the replicas down (their stdout blocks), and stdin is read no faster
than the replicas read the log. When the replicas have exited, the rest of
stdin is not read. With --hub (or $LOCKSTEP_HUB), IMAGE is the NAME of a
service registered at the hub: cmd0 | lockstep pipe NAME1 | lockstep pipe
NAME2. See docs/run.md and docs/hub.md.

Flags:
`

func runMain(args []string, stdout, stderr io.Writer) int {
	return replicated("run", runUsage, args, stdout, stderr)
}

func pipeMain(args []string, stdout, stderr io.Writer) int {
	return replicated("pipe", pipeUsage, args, stdout, stderr)
}

// replicated is lockstep run and lockstep pipe.
func replicated(name, usage string, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	f := addFleetFlags(name, fs)
	checkpoint := fs.Int("checkpoint", 64<<10, "compare the outputs every `BYTES`")
	progress := fs.String("progress", "auto", "progress on stderr: auto (when stderr is a terminal), always or never")
	record := fs.String("record", "", "write the input log to `FILE` (the portable form) and the verified output's digest chain to FILE.digests, for lockstep replay")
	hf := f.hf
	fs.Usage = func() { io.WriteString(stderr, usage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if *hf.addr != "" && fs.NArg() >= 1 && *checkpoint >= 1 {
		return named(name, f, fs, hf, *checkpoint, *record, stdout, stderr)
	}
	switch {
	case fs.NArg() < 1:
		return errorf(stderr, exitUsage, "%s: no IMAGE given (lockstep %s [FLAGS] IMAGE [-- CMD ARGS...]; --help lists the flags)", name, name)
	case *checkpoint < 1:
		return errorf(stderr, exitUsage, "%s: --checkpoint %d: want at least 1 byte", name, *checkpoint)
	}
	if code := f.check(stderr); code >= 0 {
		return code
	}
	showProgress, ok := map[string]bool{"auto": isTerminal(stderr), "always": true, "never": false}[*progress]
	if !ok {
		return errorf(stderr, exitUsage, "%s: --progress is auto, always or never, not %q", name, *progress)
	}
	ctx, interrupted, stop := cancelOnSignal()
	defer stop()
	// A closed stdout is an error of Write (the run stops, its containers
	// are removed), not a signal that kills lockstep mid-run.
	signal.Ignore(syscall.SIGPIPE)
	if err := batchScheduling(); err != nil {
		fmt.Fprintf(stderr, "%s: warning: %v (the run goes on, slower)\n", name, err)
	}
	client, ps, closeFleet, code := f.open(stderr)
	if code >= 0 {
		return code
	}
	defer closeFleet()
	chains := ebpf.NewChains(int64(*checkpoint))
	o := f.options(ps, client, fs.Arg(0), fs.Args()[1:])
	o.Stdin, o.Stdout, o.Checkpoint = os.Stdin, io.MultiWriter(stdout, chainWriter{chains}), *checkpoint
	if showProgress {
		o.Progress = func(p replicate.Progress) {
			fmt.Fprintf(stderr, "\rlockstep %s: %s in, %s verified out, %d of %d replicas running  ", name, size(p.In), size(p.Out), p.Running, *f.replicas)
		}
	}
	g := f.guard(nil, ps, stderr)
	o.Entries, o.Net = g.Entries(), g
	v, err := replicate.Run(ctx, o)
	g.Over()
	if err == nil {
		g.Judge(&v)
	}
	if showProgress {
		fmt.Fprint(stderr, "\r\033[K")
	}
	if errors.Is(err, replicate.ErrStdout) {
		if *f.asJSON {
			f.fail(stderr, 141, "stdout_closed", err) // as a shell reports a stage killed by SIGPIPE
		}
		return 141
	}
	if errors.Is(err, replicate.ErrInterrupted) {
		return f.fail(stderr, 128+int(interrupted()), "interrupted", err)
	}
	if err != nil {
		return f.fail(stderr, exitRuntime, "setup", err)
	}
	if *record != "" {
		if err := recordRun(ctx, client, o.Stream, *record, chains, v.ExitCode); err != nil {
			return f.fail(stderr, exitRuntime, "setup", fmt.Errorf("record: %w", err))
		}
	}
	f.show(stderr, v, verdictExit(v))
	return verdictExit(v)
}

// verdictExit is a run's exit status: the agreed one, exitHostLimited
// where the replicas differ as their hosts can explain, 3 where they
// diverge otherwise.
func verdictExit(v replicate.Verdict) int {
	switch {
	case v.HostLimited:
		return exitHostLimited
	case !v.Agreed:
		return 3
	}
	return v.ExitCode
}

// printVerdict says what went wrong, if anything.
func printVerdict(w io.Writer, name string, v replicate.Verdict) {
	if e := v.Egress; e != nil && (e.Mode == "providers" || len(e.Odd) > 0) {
		fmt.Fprintf(w, "lockstep %s: %s\n", name, egressLine(e))
		for _, o := range e.Odd {
			fmt.Fprintf(w, "lockstep %s:   a fetch differed: %s\n", name, o)
		}
	}
	if v.Agreed && len(v.Lost) == 0 {
		if len(v.Leaks) > 0 {
			fmt.Fprintf(w, "lockstep %s: %s, though %s\n", name, v.Detail, logd.LeakList(v.Leaks)+" (lockstep doctor)")
		}
		return
	}
	word := "DIVERGED"
	switch {
	case v.HostLimited:
		word = "NOT VERIFIED"
	case v.Agreed:
		word = "verified by a majority"
	}
	fmt.Fprintf(w, "lockstep %s: %s: %s\n", name, word, v.Detail)
	for _, r := range v.Replicas {
		if r.State != "agreed" {
			fmt.Fprintf(w, "lockstep %s:   %s on provider %s: %s: %s\n", name, r.Name, r.Provider, r.State, r.Why)
		}
	}
	if v.Log.State != "" {
		fmt.Fprintf(w, "lockstep %s:   log verdict: %s, %s\n", name, v.Log.State, v.Log.Detail)
	}
}

// egressLine says how the run's outbound connections were made.
func egressLine(e *replicate.Egress) string {
	n := fmt.Sprintf("%d outbound connections", e.Connections)
	if e.Connections == 1 {
		n = "1 outbound connection"
	}
	if e.Mode == "providers" {
		return n + ", each made by every replica's provider, the replicas reading what a majority of them read (--fetch providers)"
	}
	return n + ", each made once by the guard"
}

// cancelOnSignal returns a context that SIGINT or SIGTERM cancels, and
// which of them did (as a shell reports it: exit 128+N).
func cancelOnSignal() (context.Context, func() syscall.Signal, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	var got atomic.Int32
	go func() {
		select {
		case s := <-ch:
			got.Store(int32(s.(syscall.Signal)))
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() syscall.Signal { return syscall.Signal(got.Load()) }, func() { signal.Stop(ch); cancel() }
}

// localProvider runs replicas on the containerd at address, with a key
// made for this run.
func localProvider(address, ns string, client *logd.Client) *replicate.Local {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	host, _ := os.Hostname()
	return &replicate.Local{ProviderName: "local:" + host, Containerd: address, Namespace: ns, Logd: client, Key: key}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func size(n int64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 10<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// openLogd returns a client of the logd at addr, or of one started here
// on an embedded etcd member in a temporary directory.
func openLogd(addr string) (*logd.Client, func(), error) {
	if addr != "" {
		return logd.NewClient(addr), func() {}, nil
	}
	dir, err := os.MkdirTemp("", "lockstep-run-logd")
	if err != nil {
		return nil, nil, err
	}
	e, cl, err := logd.StartEmbedded(logd.Member{Dir: dir, Quiet: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cl.Close()
		e.Close()
		os.RemoveAll(dir)
		return nil, nil, err
	}
	srv := &http.Server{Handler: logd.NewServer(logd.NewStore(cl))}
	go srv.Serve(ln)
	return logd.NewClient(ln.Addr().String()), func() { srv.Close(); cl.Close(); e.Close(); os.RemoveAll(dir) }, nil
}

// chainWriter digests what a run writes to stdout.
type chainWriter struct{ cs *ebpf.Chains }

func (w chainWriter) Write(p []byte) (int, error) {
	w.cs.Write("stdout", p)
	return len(p), nil
}

// recordRun writes the run's log (file form) and its output's digest chain
// with the exit status, and more chains made elsewhere (a network
// service's answers, digested by the hub).
func recordRun(ctx context.Context, c *logd.Client, stream, path string, cs *ebpf.Chains, exit int, more ...ebpf.Checkpoint) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := logd.Export(ctx, c, stream, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	cs.Write("exit", []byte(strconv.Itoa(exit)))
	return ebpf.WriteCheckpoints(path+".digests", append(more, cs.Finish()...))
}
