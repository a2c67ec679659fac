package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/lockstep-run/lockstep/ebpf"
	"github.com/lockstep-run/lockstep/hub"
	"github.com/spf13/pflag"
)

// hubOnly are the fleet's flags that a named service's registration or
// the hub decide, not the requestor.
var hubOnly = []string{"replicas", "provider", "logd", "allow-net", "fetch", "require", "tick", "address", "namespace"}

// link is what crossed the requestor's link to the hub.
type link struct {
	Sent     int64 `json:"sent"`
	Received int64 `json:"received"`
}

// named is lockstep run and pipe of a service registered at the hub: the
// hub is the guard, and this process sends its stdin once and receives
// the verified output once.
func named(name string, f *fleet, fs *pflag.FlagSet, hf hubFlags, checkpoint int, record string, stdout, stderr io.Writer) int {
	for _, fl := range hubOnly {
		if fs.Changed(fl) {
			return errorf(stderr, exitUsage, "%s: --%s is not the requestor's with --hub: the service's registration (lockstep register) and the hub decide it", name, fl)
		}
	}
	c, _, err := hf.dial()
	if err != nil {
		return errorf(stderr, exitUsage, "%s: %v", name, err)
	}
	ctx, interrupted, stop := cancelOnSignal()
	defer stop()
	signal.Ignore(syscall.SIGPIPE)
	chains := ebpf.NewChains(int64(checkpoint))
	req := hub.RunRequest{Args: fs.Args()[1:], Seed: *f.seed, Checkpoint: checkpoint}
	say := func(m string) { fmt.Fprintf(stderr, "lockstep %s: %s\n", name, m) }
	res, err := c.Run(ctx, fs.Arg(0), req, os.Stdin, io.MultiWriter(stdout, chainWriter{chains}), say)
	var se *hub.StdoutError
	switch {
	case errors.As(err, &se):
		if *f.asJSON {
			f.fail(stderr, 141, "stdout_closed", err)
		}
		return 141
	case ctx.Err() != nil:
		return f.fail(stderr, 128+int(interrupted()), "interrupted", errors.New("interrupted: the hub stops the run and removes its replicas"))
	case hub.IsUnknown(err):
		return f.fail(stderr, exitUsage, "setup", err)
	case err != nil:
		return f.fail(stderr, exitRuntime, "setup", err)
	case res.Verdict == nil:
		return f.fail(stderr, exitRuntime, res.Kind, fmt.Errorf("run %s: %s", res.Stream, res.Error))
	}
	v := *res.Verdict
	if record != "" {
		if err := recordRun(ctx, c.Logd(), res.Stream, record, chains, v.ExitCode); err != nil {
			return f.fail(stderr, exitRuntime, "setup", fmt.Errorf("record: %w", err))
		}
	}
	f.showNamed(stderr, v, verdictExit(v), res.Stream, link{c.Sent.Load(), c.Received.Load()})
	return verdictExit(v)
}

// runNamed runs one job of lockstep parallel: name with args, stdin as
// its input; its verified output is returned whole.
func runNamed(ctx context.Context, c *hub.Client, name string, req hub.RunRequest, stdin io.Reader, out io.Writer, say func(string)) (hub.RunResult, error) {
	res, err := c.Run(ctx, name, req, stdin, out, say)
	if err == nil && res.Verdict == nil {
		err = fmt.Errorf("run %s: %s", res.Stream, res.Error)
	}
	return res, err
}

// servedNamed is lockstep serve of a network service registered at the
// hub: the hub serves it at an address of its own until Ctrl-C here, which
// ends the request's body (the hub stops the service at the log's stop
// entry); a second Ctrl-C, or this process going away, cancels it.
func servedNamed(f *fleet, fs *pflag.FlagSet, hf hubFlags, record string, stdout, stderr io.Writer) int {
	for _, fl := range append(hubOnly, "listen", "port") {
		if fs.Changed(fl) {
			return errorf(stderr, exitUsage, "serve: --%s is not the requestor's with --hub: the service's registration (lockstep register --port) and the hub decide it", fl)
		}
	}
	c, _, err := hf.dial()
	if err != nil {
		return errorf(stderr, exitUsage, "serve: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, stopped := io.Pipe()
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(ch)
	go func() {
		if _, ok := <-ch; !ok {
			return
		}
		fmt.Fprintln(stderr, "lockstep serve: stopping: the replicas stop at the log's stop entry (again to kill them now)")
		stopped.Close()
		<-ch
		cancel()
	}()
	name := fs.Arg(0)
	say := func(m string) { fmt.Fprintf(stderr, "lockstep serve: %s\n", m) }
	serving := func(addr string) {
		fmt.Fprintf(stderr, "lockstep serve: %s on %s, at the hub (Ctrl-C stops it)\n", name, addr)
	}
	chains := ebpf.NewChains(64 << 10)
	res, err := c.Serve(ctx, name, hub.RunRequest{Args: fs.Args()[1:], Seed: *f.seed}, stop, io.MultiWriter(stdout, chainWriter{chains}), say, serving)
	switch {
	case ctx.Err() != nil:
		return f.fail(stderr, 130, "interrupted", errors.New("interrupted: the hub stops the service and removes its replicas"))
	case hub.IsUnknown(err):
		return f.fail(stderr, exitUsage, "setup", err)
	case err != nil:
		return f.fail(stderr, exitRuntime, "setup", err)
	case res.Verdict == nil:
		return f.fail(stderr, exitRuntime, res.Kind, fmt.Errorf("service %s: %s", res.Stream, res.Error))
	}
	v := *res.Verdict
	if record != "" {
		// The record is the hub's log and the digest chains of the
		// answers (the hub's, which saw them) and of stdout (here).
		if err := recordRun(ctx, c.Logd(), res.Stream, record, chains, v.ExitCode, res.Answers...); err != nil {
			return f.fail(stderr, exitRuntime, "setup", fmt.Errorf("record: %w", err))
		}
	}
	if res.Status != "" {
		fmt.Fprintf(stderr, "lockstep serve: %s\n", res.Status)
	}
	status := verdictExit(v)
	if v.Agreed && v.ExitCode == 128+int(syscall.SIGKILL) {
		status = 0 // stopped at the stop entry, as asked
	}
	f.showNamed(stderr, v, status, res.Stream, link{c.Sent.Load(), c.Received.Load()})
	return status
}
