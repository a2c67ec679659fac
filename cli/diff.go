package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/lockstep-run/lockstep/ebpf"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/spf13/pflag"
)

// diffMain compares two runs' digest chains.
func diffMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("diff", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the differences as JSON")
	logdAddr := fs.String("logd", "", "read the digest chains from the traces that replicas' shims reported to logd at `URL` (with --stream); the arguments are then replica names")
	stream := fs.String("stream", "", "with --logd: the `STREAM` the replicas ran")
	traces := fs.StringSlice("trace", nil, "the two runs' traces (lockstep exec --trace), `A,B`: show the first differing byte and the syscalls that wrote it")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lockstep diff [--json] [--trace TRACE-A,TRACE-B] DIGESTS-A DIGESTS-B\n       lockstep diff [--json] --logd URL --stream STREAM REPLICA-A REPLICA-B\n\nCompares two runs' digest chains (lockstep exec --digests, the shim's\nio.lockstep.digests, or the traces shims reported to logd) and names, for\neach stream that differs, the first differing checkpoint and its byte range.\nExit status 0: identical, 1: they differ.\n\nFlags:\n%s", fs.FlagUsages())
	}
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() != 2 {
		return errorf(stderr, exitUsage, "diff: want two digest files (or, with --logd, two replicas), got %d arguments (lockstep diff --help)", fs.NArg())
	}
	read := ebpf.ReadCheckpoints
	if *logdAddr != "" {
		if *stream == "" {
			return errorf(stderr, exitUsage, "diff: --logd needs --stream")
		}
		read = func(replica string) ([]ebpf.Checkpoint, error) { return logdTrace(*logdAddr, *stream, replica) }
	}
	a, err := read(fs.Arg(0))
	if err != nil {
		return errorf(stderr, exitUsage, "diff: %v", err)
	}
	b, err := read(fs.Arg(1))
	if err != nil {
		return errorf(stderr, exitUsage, "diff: %v", err)
	}
	diffs := ebpf.Diff(a, b)
	var ta, tb []ebpf.TraceRecord
	if len(*traces) > 0 {
		if len(*traces) != 2 {
			return errorf(stderr, exitUsage, "diff: --trace wants two files, A,B")
		}
		if ta, err = ebpf.ReadTrace((*traces)[0]); err == nil {
			tb, err = ebpf.ReadTrace((*traces)[1])
		}
		if err != nil {
			return errorf(stderr, exitUsage, "diff: %v", err)
		}
	}
	if *asJSON {
		printJSON(stdout, diffs)
	} else if len(diffs) == 0 {
		fmt.Fprintf(stdout, "identical: %d checkpoints\n", len(a))
	}
	for _, d := range diffs {
		if *asJSON {
			break
		}
		switch {
		case d.A == nil:
			fmt.Fprintf(stdout, "%s: only in %s from checkpoint %d (bytes %d..)\n", d.Stream, fs.Arg(1), d.Index, d.B.Start)
		case d.B == nil:
			fmt.Fprintf(stdout, "%s: only in %s from checkpoint %d (bytes %d..)\n", d.Stream, fs.Arg(0), d.Index, d.A.Start)
		default:
			fmt.Fprintf(stdout, "%s: first difference at checkpoint %d, bytes %d..%d (%s vs %s)\n", d.Stream, d.Index, d.A.Start, max(d.A.End, d.B.End), d.A.Digest[:12], d.B.Digest[:12])
		}
		if ta != nil {
			io.WriteString(stdout, ebpf.Explain(d.Stream, ta, tb))
		}
	}
	if len(diffs) > 0 {
		return 1
	}
	return 0
}

// logdTrace fetches a replica's trace from logd and checks its signature.
func logdTrace(addr, stream, replica string) ([]ebpf.Checkpoint, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t, err := logd.NewClient(addr).GetTrace(ctx, stream, replica)
	if err != nil {
		return nil, err
	}
	if err := t.Verify(); err != nil {
		return nil, err
	}
	var cps []ebpf.Checkpoint
	if err := json.Unmarshal(t.Checkpoints, &cps); err != nil {
		return nil, fmt.Errorf("trace of %s: %w", replica, err)
	}
	return cps, nil
}
