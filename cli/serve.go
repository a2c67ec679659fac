package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/lockstep-run/lockstep/ebpf"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
	"github.com/lockstep-run/lockstep/serve"
	"github.com/spf13/pflag"
)

const serveUsage = `Usage: lockstep serve [FLAGS] --listen ADDR --port PORT IMAGE [-- CMD ARGS...]
       lockstep serve --hub ID@HOST:PORT NAME
       lockstep serve --join STREAM --logd ADDR [--provider ID@HOST:PORT]

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

With --hub (or $LOCKSTEP_HUB), NAME is a network service registered at
the hub (lockstep register --port): the hub is the guard and serves it at
an address of its own, printed here, until Ctrl-C (docs/hub.md).

With --join, one more replica joins a served stream on the logd at
--logd (lockstep serve prints the stream's name): it replays the log
from its start, with its sleeps fast-forwarded, follows it live to its
stop entry, and is judged with the others' final reports in logd. Exit
status 0: it reproduced every answer; 3: it differs.

Flags:
`

func serveMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	f := addFleetFlags("serve", fs)
	listen := fs.String("listen", "", "accept clients at `ADDR` (host:port)")
	port := fs.Int("port", 0, "the service's TCP `PORT` inside each replica (it listens on it, on 127.0.0.1 or any address)")
	record := fs.String("record", "", "write the input log to `FILE` and the digest chains of the answers (each connection's) and of stdout to FILE.digests, for lockstep replay")
	join := fs.String("join", "", "start one more replica of the served `STREAM` on --logd: it replays the log, then follows it live (see above)")
	state := fs.String("state", "", "keep the served stream's name and signing key in `DIR`: started again with the same DIR (after it was killed, or its host restarted), the gateway resumes the stream where its log ends (needs --logd)")
	joinAs := fs.String("join-as", "", "with --join: the joining replica's `NAME` in the stream's reports (default join-XXXXXX)")
	hf := f.hf
	fs.Usage = func() { io.WriteString(stderr, serveUsage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if *join != "" {
		if fs.NArg() > 0 || *listen != "" {
			return errorf(stderr, exitUsage, "serve: --join takes no IMAGE and no --listen: the stream's config entry names the image, and the joining replica answers no client")
		}
		return joinServe(f, *join, *joinAs, stdout, stderr)
	}
	if *hf.addr != "" && fs.NArg() >= 1 {
		return servedNamed(f, fs, hf, *record, stdout, stderr)
	}
	switch {
	case fs.NArg() < 1:
		return errorf(stderr, exitUsage, "serve: no IMAGE given (lockstep serve --listen ADDR --port PORT IMAGE [-- CMD ARGS...])")
	case *listen == "":
		return errorf(stderr, exitUsage, "serve: --listen ADDR is required: where clients connect, e.g. 127.0.0.1:8080")
	case *port < 1 || *port > 65535:
		return errorf(stderr, exitUsage, "serve: --port %d: want the TCP port the service listens on inside the container, 1 to 65535", *port)
	}
	if code := f.check(stderr); code >= 0 {
		return code
	}
	if *state != "" && *f.logdAddr == "" {
		return errorf(stderr, exitUsage, "serve: --state needs --logd ADDR: the stream must outlive this gateway to be resumed")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return errorf(stderr, exitUsage, "serve: --listen: %v", err)
	}
	client, ps, closeFleet, code := f.open(stderr)
	if code >= 0 {
		ln.Close()
		return code
	}
	defer closeFleet()
	o := f.options(ps, client, fs.Arg(0), fs.Args()[1:])
	chains := &syncChains{cs: ebpf.NewChains(64 << 10)}
	g := f.guard(ln, ps, stderr)
	g.Tap = chains.conn
	signal.Ignore(syscall.SIGPIPE)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o.Port = *port
	if *state != "" {
		if err := useState(ctx, *state, client, &o, g, stderr); err != nil {
			ln.Close()
			return f.fail(stderr, exitUsage, "setup", err)
		}
		if o.Resume != nil && *record != "" {
			ln.Close()
			return f.fail(stderr, exitUsage, "setup", errors.New("--record writes the answers this gateway saw, and a resumed stream's earlier ones it did not: export the log with lockstep log export, and check it with lockstep serve --join"))
		}
	}
	stopped := stopOnSignal(g, cancel, stderr)
	go g.Serve()
	on := " (Ctrl-C stops it)"
	if *f.logdAddr != "" {
		on = fmt.Sprintf(" on logd %s (Ctrl-C stops it; lockstep serve --join %s --logd %s adds a replica)", *f.logdAddr, o.Stream, *f.logdAddr)
	}
	fmt.Fprintf(stderr, "lockstep serve: %s on %s: %d replicas of %s, stream %s%s\n", fs.Arg(0), ln.Addr(), o.Replicas, fs.Arg(0), o.Stream, on)
	o.Stdout = io.MultiWriter(stdout, chains.writer("stdout"))
	o.Entries, o.Port, o.Net = g.Entries(), *port, g
	v, err := replicate.Run(ctx, o)
	g.Over()
	if err != nil {
		return f.fail(stderr, exitRuntime, "setup", err)
	}
	g.Judge(&v)
	if *record != "" {
		if err := recordRun(ctx, client, o.Stream, *record, chains.cs, v.ExitCode); err != nil {
			return f.fail(stderr, exitRuntime, "setup", fmt.Errorf("record: %w", err))
		}
	}
	if g.Failure() != "" {
		fmt.Fprintf(stderr, "lockstep serve: stopped: %s\n", g.Failure())
	}
	fmt.Fprintf(stderr, "lockstep serve: %s\n", g.Status())
	status, early := verdictExit(v), !stopped() && v.Agreed
	switch {
	case early:
		status = v.ExitCode
	case v.Agreed && v.ExitCode == 128+int(syscall.SIGKILL):
		status = 0 // stopped at the stop entry, as asked
	}
	f.show(stderr, v, status)
	if early {
		fmt.Fprintf(stderr, "lockstep serve: the service exited (status %d) before it was stopped\n", v.ExitCode)
	}
	return status
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
		case <-g.Failed(): // said after the run: a set-up failure's cause comes first
			stop()
		}
		<-ch
		cancel()
	}()
	return func() bool { mu.Lock(); defer mu.Unlock(); return was }
}

// replayedConns is the Responder of a replay of a served stream: the one
// replica's answers go to the digest chains, connection by connection.
type replayedConns struct{ s *syncChains }

func (r replayedConns) Response(_ int, id uint64, p []byte) {
	if id&logd.EgressConn == 0 { // the recorded chains are the clients' answers
		r.s.conn(id, p)
	}
}
func (r replayedConns) Finished(int, uint64)     {}
func (r replayedConns) Dial(int, uint64, string) {}
func (r replayedConns) Gone(int)                 {}

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
