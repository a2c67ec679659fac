package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/lockstep-run/lockstep/ebpf"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
	"github.com/spf13/pflag"
)

const replayUsage = `Usage: lockstep replay [FLAGS] LOG [IMAGE [-- CMD ARGS...]]

Starts one more copy of a recorded run (lockstep run, pipe or serve
--record LOG) from its input log, and checks that it reproduces the
recorded output and exit status (LOG.digests); where it does not, names
the first differing checkpoint. The log is verified first (signatures,
roots, order). The image and command are the recorded ones: IMAGE and CMD,
if given, must be them (an image of another name with the recorded digest
is), or the replay is refused before it starts (exit 125). Exit
status 0: reproduced; 3: it differs; 4: it differs on a host that cannot
make a source deterministic (rdtsc, cpuid: lockstep doctor), which can
explain it. See docs/run.md.

Flags:
`

func replayMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("replay", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	address := fs.String("address", "/run/containerd/containerd.sock", "containerd's `SOCKET`")
	ns := fs.String("namespace", "lockstep", "containerd `NAMESPACE`")
	keyFile := fs.String("key", "", "trust only this public key `FILE` for the log's checkpoints")
	require := requireFlag(fs)
	fs.Usage = func() { io.WriteString(stderr, replayUsage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() < 1 {
		return errorf(stderr, exitUsage, "replay: no LOG given (lockstep replay [FLAGS] LOG [IMAGE [-- CMD ARGS...]]; --help lists the flags)")
	}
	required, code := parseRequire("replay", *require, stderr)
	if code >= 0 {
		return code
	}
	logPath := fs.Arg(0)
	pub, err := loadPublicKey(*keyFile)
	if err != nil {
		return errorf(stderr, exitUsage, "replay: %v", err)
	}
	v, err := readLogFile(logPath, pub)
	if os.IsNotExist(err) {
		return errorf(stderr, exitUsage, "replay: %v", err)
	}
	if err != nil {
		return errorf(stderr, exitRuntime, "replay: %v", err)
	}
	recorded, err := ebpf.ReadCheckpoints(logPath + ".digests")
	if err != nil {
		return errorf(stderr, exitUsage, "replay: %v (lockstep run --record writes it)", err)
	}
	if code := hostGuard("replay", required, stderr); code >= 0 {
		return code
	}
	if err := batchScheduling(); err != nil {
		fmt.Fprintf(stderr, "replay: warning: %v (the replay goes on, slower)\n", err)
	}
	ctx, interrupted, stopSignals := cancelOnSignal()
	defer stopSignals()
	client, stop, err := openLogd("")
	if err != nil {
		return errorf(stderr, exitRuntime, "replay: %v", err)
	}
	defer stop()
	if err := logd.Import(ctx, client, v); err != nil {
		return errorf(stderr, exitRuntime, "replay: %v", err)
	}
	if len(recorded) == 0 {
		return errorf(stderr, exitUsage, "replay: %s.digests is empty", logPath)
	}
	chains := &syncChains{cs: ebpf.NewChains(checkpointSize(recorded))}
	local := localProvider(*address, *ns, client)
	defer local.Close()
	o := replicate.Options{
		Providers: []replicate.Provider{local}, Replicas: 1, Logd: client, Replay: v,
		Stdout: io.MultiWriter(stdout, chains.writer("stdout")), Checkpoint: int(chains.cs.K),
	}
	if o.Image, o.Args, o.Digest, err = replayed(ctx, v, local, fs.Args()[1:]); err != nil {
		return errorf(stderr, exitRuntime, "replay: %s: %v", logPath, err)
	}
	// A served stream (lockstep serve --record): its connections go to
	// the service's port, and its answers are checked too.
	if cfg, _, _ := replicate.ReadConfig(v.Entries); cfg.Port != 0 {
		o.Port, o.Net = cfg.Port, replayedConns{chains}
	}
	verdict, err := replicate.Run(ctx, o)
	if errors.Is(err, replicate.ErrInterrupted) {
		return errorf(stderr, 128+int(interrupted()), "replay: %v", err)
	}
	if err != nil {
		return errorf(stderr, exitRuntime, "replay: %v", err)
	}
	showStderr(stderr, "replay", "majority", verdict)
	chains.write("exit", []byte(fmt.Sprint(verdict.ExitCode)))
	diffs := ebpf.Diff(recorded, chains.cs.Finish())
	if len(diffs) == 0 {
		fmt.Fprintf(stderr, "lockstep replay: reproduced the recorded run: %d entries in, %d bytes out, exit status %d\n", len(v.Entries), verdict.Bytes, verdict.ExitCode)
		return 0
	}
	for _, d := range diffs {
		switch {
		case d.A == nil || d.B == nil:
			fmt.Fprintf(stderr, "lockstep replay: DIFFERS: %s has a different length (from checkpoint %d)\n", d.Stream, d.Index)
		default:
			fmt.Fprintf(stderr, "lockstep replay: DIFFERS: %s at checkpoint %d, bytes %d..%d\n", d.Stream, d.Index, d.A.Start, max(d.A.End, d.B.End))
		}
	}
	if len(verdict.Leaks) > 0 {
		fmt.Fprintf(stderr, "lockstep replay: not blamed on the log: %s\n", logd.LeakList(verdict.Leaks))
		return exitHostLimited
	}
	return 3
}

// replayed is the image and command a replay runs: the recorded ones
// (args, if given, are IMAGE [CMD...] and must be them), and the image's
// recorded digest, which the provider checks. A log from before config
// entries were written must be given them.
func replayed(ctx context.Context, v *logd.Verified, local *replicate.Local, args []string) (string, []string, string, error) {
	cfg, ok, err := replicate.ReadConfig(v.Entries)
	if err != nil {
		return "", nil, "", err
	}
	if !ok || cfg.Image == "" {
		if len(args) == 0 {
			return "", nil, "", errors.New("the log does not say what ran (it predates config entries): give IMAGE [-- CMD ARGS...]")
		}
		return args[0], args[1:], "", nil
	}
	if len(args) > 0 {
		var digest string
		if args[0] != cfg.Image {
			digest, _ = local.ImageDigest(ctx, args[0])
		}
		if err := cfg.CheckReplay(args[0], digest, args[1:]); err != nil {
			return "", nil, "", err
		}
	}
	return cfg.Image, cfg.Args, cfg.Digest, nil
}

// checkpointSize is the recorded chain's checkpoint interval: the length
// of its first full checkpoint, if it has more than one.
func checkpointSize(cps []ebpf.Checkpoint) int64 {
	for i, c := range cps {
		if i+1 < len(cps) && cps[i+1].Stream == c.Stream {
			return c.End - c.Start
		}
	}
	return 64 << 10
}
