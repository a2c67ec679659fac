package cli

import (
	"strconv"

	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/lockstep-run/lockstep/ebpf"
	"io"
	"net"
	"net/http"
	"os"

	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
	"github.com/spf13/pflag"
)

const runUsage = `Usage: lockstep run [FLAGS] IMAGE [-- CMD ARGS...]

Runs IMAGE as --replicas deterministic containers (runtime
io.containerd.lockstep.v1) fed from one input log: stdin becomes log
entries, every replica reads the verified log as its stdin, and the output
a majority agrees on is written to stdout as soon as it is agreed. The exit
status is the agreed one; on divergence the replicas that differ are named
on stderr and the exit status is 3. See docs/run.md.

Flags:
`

func runMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	replicas := fs.Int("replicas", 3, "number of replicas")
	seed := fs.Uint64("seed", 0, "seed of every replica")
	address := fs.String("address", "/run/containerd/containerd.sock", "containerd's `SOCKET`")
	ns := fs.String("namespace", "lockstep", "containerd `NAMESPACE`")
	logdAddr := fs.String("logd", "", "use the logd at `ADDR` (default: an embedded one, with its data in a temporary directory)")
	checkpoint := fs.Int("checkpoint", 64<<10, "compare the outputs every `BYTES`")
	asJSON := fs.Bool("json", false, "print the verdict as JSON on stderr")
	record := fs.String("record", "", "write the input log to `FILE` (the portable form) and the verified output's digest chain to FILE.digests, for lockstep replay")
	fs.Usage = func() { io.WriteString(stderr, runUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() < 1 || *replicas < 1 {
		fs.Usage()
		return exitUsage
	}
	ctx := context.Background()
	client, stopLogd, err := openLogd(*logdAddr)
	if err != nil {
		return errorf(stderr, exitRuntime, "run: %v", err)
	}
	defer stopLogd()
	id := make([]byte, 6)
	rand.Read(id)
	stream := "run-" + hex.EncodeToString(id)
	chains := ebpf.NewChains(int64(*checkpoint))
	v, err := replicate.Run(ctx, replicate.Options{
		Containerd: *address, Namespace: *ns, Image: fs.Arg(0), Args: fs.Args()[1:],
		Replicas: *replicas, Seed: *seed, Logd: client, Stream: stream,
		Stdin: os.Stdin, Stdout: io.MultiWriter(stdout, chainWriter{chains}), Checkpoint: *checkpoint,
	})
	if err != nil {
		return errorf(stderr, exitRuntime, "run: %v", err)
	}
	if *record != "" {
		if err := recordRun(ctx, client, stream, *record, chains, v.ExitCode); err != nil {
			return errorf(stderr, exitRuntime, "run: record: %v", err)
		}
	}
	if *asJSON {
		printJSON(stderr, v)
	} else if !v.Agreed {
		fmt.Fprintf(stderr, "lockstep run: DIVERGED: %s (log verdict: %s, %s)\n", v.Detail, v.Log.State, v.Log.Detail)
	}
	if !v.Agreed {
		return 3
	}
	return v.ExitCode
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
	ports := make([]string, 2)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		ports[i] = l.Addr().String()
		l.Close()
	}
	e, cl, err := logd.StartEmbedded(logd.Member{Dir: dir, Client: "http://" + ports[0], Peer: "http://" + ports[1], Quiet: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
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
// with the exit status.
func recordRun(ctx context.Context, c *logd.Client, stream, path string, cs *ebpf.Chains, exit int) error {
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
	return ebpf.WriteCheckpoints(path+".digests", cs.Finish())
}
