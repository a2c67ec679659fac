package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/lockstep-run/lockstep/ebpf"
	"github.com/lockstep-run/lockstep/replicate"
	"github.com/lockstep-run/lockstep/serve"
	"github.com/spf13/pflag"
)

const serveUsage = `Usage: lockstep serve [FLAGS] --listen ADDR --port PORT IMAGE [-- CMD ARGS...]

Serves a network service as --replicas deterministic containers behind one
address. Every connection to --listen (its open, each chunk of bytes the
client sends, its close) becomes an entry of the run's input log, with its
time; each replica receives the same connections, in log order, as real
TCP connections to PORT inside its own network namespace, so an unmodified
server needs no change. A client gets each byte of its response once a
majority of the replicas sent it identically; a replica that differs is
named on stderr and leaves the vote, and the others go on answering.
SIGINT or SIGTERM stops the service at a point of the log (a stop entry)
and prints the verdict: exit status 0 when verified, 3 when a replica
differed or no majority could answer. See docs/serve.md.

Flags:
`

func serveMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	replicas := fs.Int("replicas", 3, "number of replicas")
	seed := fs.Uint64("seed", 0, "the seed of every replica's entropy (the log's first entry)")
	listen := fs.String("listen", "", "accept clients at `ADDR` (host:port)")
	port := fs.Int("port", 0, "the service's TCP `PORT` inside each replica (it listens on it, on 127.0.0.1 or any address)")
	address := fs.String("address", "/run/containerd/containerd.sock", "the local containerd's `SOCKET`")
	ns := fs.String("namespace", "lockstep", "containerd `NAMESPACE`")
	providers := fs.StringArray("provider", nil, "run replicas on the lockstep provider at `ADDR` (repeat for each host; replicas are placed in turn)")
	tokenFile := fs.String("provider-token-file", "", "present the token in `FILE` to the providers (lockstep provider --token-file)")
	logdAddr := fs.String("logd", "", "use the logd at `ADDR` (default: an embedded one, with its data in a temporary directory)")
	tick := fs.Duration("tick", 10*time.Millisecond, "the log clock's resolution (1ms to 1s): see lockstep run --help")
	asJSON := fs.Bool("json", false, "print the verdict as JSON on stderr")
	require := requireFlag(fs)
	stderrMode := fs.String("stderr", "majority", "the replicas' stderr to show after the run: majority, replica-N, or none")
	record := fs.String("record", "", "write the input log to `FILE` and the digest chains of the answers (each connection's) and of stdout to FILE.digests, for lockstep replay")
	fs.Usage = func() { io.WriteString(stderr, serveUsage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	switch {
	case fs.NArg() < 1:
		return errorf(stderr, exitUsage, "serve: no IMAGE given (lockstep serve --listen ADDR --port PORT IMAGE [-- CMD ARGS...])")
	case *listen == "":
		return errorf(stderr, exitUsage, "serve: --listen ADDR is required: where clients connect, e.g. 127.0.0.1:8080")
	case *port < 1 || *port > 65535:
		return errorf(stderr, exitUsage, "serve: --port %d: want the TCP port the service listens on inside the container, 1 to 65535", *port)
	case *replicas < 1:
		return errorf(stderr, exitUsage, "serve: --replicas %d: want at least 1 (3 or more to name an odd replica)", *replicas)
	case *tick < time.Millisecond || *tick > time.Second:
		return errorf(stderr, exitUsage, "serve: --tick %v: want 1ms to 1s", *tick)
	case len(*providers) > 0 && *logdAddr == "":
		return errorf(stderr, exitUsage, "serve: --provider needs --logd ADDR, the logd the providers read the log from")
	}
	required, code := parseRequire("serve", *require, stderr)
	if code >= 0 {
		return code
	}
	if err := checkStderrMode(*stderrMode, *replicas); err != nil {
		return errorf(stderr, exitUsage, "serve: --stderr: %v", err)
	}
	token, err := readToken(*tokenFile)
	if err != nil {
		return errorf(stderr, exitUsage, "serve: %v", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return errorf(stderr, exitUsage, "serve: --listen: %v", err)
	}
	client, stopLogd, err := openLogd(*logdAddr)
	if err != nil {
		ln.Close()
		return errorf(stderr, exitRuntime, "serve: %v", err)
	}
	defer stopLogd()
	var ps []replicate.Provider
	for _, a := range *providers {
		ps = append(ps, &replicate.Remote{Addr: a, Token: token})
	}
	if len(ps) == 0 {
		if code := hostGuard("serve", required, stderr); code >= 0 {
			ln.Close()
			return code
		}
		local := localProvider(*address, *ns, client)
		defer local.Close()
		ps = append(ps, local)
	}
	id := make([]byte, 6)
	rand.Read(id)
	stream := "serve-" + hex.EncodeToString(id)
	chains := &syncChains{cs: ebpf.NewChains(64 << 10)}
	g := serve.New(ln, *replicas)
	g.Tap = chains.conn
	signal.Ignore(syscall.SIGPIPE)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := stopOnSignal(g, cancel, stderr)
	g.Config(*port) // the entries' buffer takes it: it comes first
	go g.Serve()
	fmt.Fprintf(stderr, "lockstep serve: %s on %s: %d replicas of %s, stream %s (Ctrl-C stops it)\n", fs.Arg(0), ln.Addr(), *replicas, fs.Arg(0), stream)
	o := replicate.Options{
		Providers: ps, Image: fs.Arg(0), Args: fs.Args()[1:],
		Replicas: *replicas, Seed: *seed, Logd: client, Stream: stream,
		Stdout: io.MultiWriter(stdout, chains.writer("stdout")), Require: required, TickEvery: *tick,
		Entries: g.Entries(), Port: *port, Net: g,
	}
	v, err := replicate.Run(ctx, o)
	g.Over()
	if err != nil {
		return errorf(stderr, exitRuntime, "serve: %v", err)
	}
	g.Judge(&v)
	if *record != "" {
		if err := recordRun(ctx, client, stream, *record, chains.cs, v.ExitCode); err != nil {
			return errorf(stderr, exitRuntime, "serve: record: %v", err)
		}
	}
	fmt.Fprintf(stderr, "lockstep serve: %s\n", g.Status())
	showStderr(stderr, "serve", *stderrMode, v)
	if *asJSON {
		printJSON(stderr, v)
	} else {
		printVerdict(stderr, "serve", v)
	}
	if !stopped() && v.Agreed {
		fmt.Fprintf(stderr, "lockstep serve: the service exited (status %d) before it was stopped\n", v.ExitCode)
		return v.ExitCode
	}
	if v.Agreed && v.ExitCode == 128+int(syscall.SIGKILL) {
		return 0 // stopped at the stop entry, as asked
	}
	return verdictExit(v)
}

// stopOnSignal stops the gateway at the first SIGINT or SIGTERM (the
// replicas stop at the log's stop entry) or when no majority can answer;
// a second signal cancels the run. stopped says whether it was stopped.
func stopOnSignal(g *serve.Gateway, cancel func(), stderr io.Writer) (stopped func() bool) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	var mu sync.Mutex
	was := false
	stop := func() {
		mu.Lock()
		was = true
		mu.Unlock()
		go g.Stop()
	}
	go func() {
		select {
		case <-ch:
			fmt.Fprintln(stderr, "lockstep serve: stopping: the replicas stop at the log's stop entry (again to kill them now)")
			stop()
		case <-g.Failed():
			fmt.Fprintf(stderr, "lockstep serve: stopping: %s\n", g.Failure())
			stop()
		}
		<-ch
		cancel()
	}()
	return func() bool { mu.Lock(); defer mu.Unlock(); return was }
}

// replayed is the Responder of a replay of a served stream: the one
// replica's answers go to the digest chains, connection by connection.
type replayed struct{ s *syncChains }

func (r replayed) Response(_ int, id uint64, p []byte) { r.s.conn(id, p) }
func (r replayed) Finished(int, uint64)                {}
func (r replayed) Gone(int)                            {}

// syncChains are digest chains written from several goroutines: the
// answers of each connection ("conn N") and stdout.
type syncChains struct {
	mu sync.Mutex
	cs *ebpf.Chains
}

func (s *syncChains) write(stream string, p []byte) {
	s.mu.Lock()
	s.cs.Write(stream, p)
	s.mu.Unlock()
}

func (s *syncChains) conn(id uint64, p []byte) { s.write(fmt.Sprintf("conn %d", id), p) }

func (s *syncChains) writer(stream string) io.Writer { return streamWriter{s, stream} }

type streamWriter struct {
	s      *syncChains
	stream string
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.s.write(w.stream, p)
	return len(p), nil
}
