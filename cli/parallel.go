package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/lockstep-run/lockstep/hub"
	"github.com/spf13/pflag"
)

const parallelUsage = `Usage: lockstep parallel [FLAGS] NAME [-- ARGS...] < INPUTS

GNU parallel over verified services: each line of stdin is one job, a run
of the service NAME registered at the hub, with ARGS and the line as its
last argument (with --pipe: the line is the job's stdin instead). Up to -j
jobs run at once, each a replicated group on distinct providers; each
job's verified output is written whole, in input order (as parallel -k
does). The exit status is the number of jobs that failed, diverged or
exited non-zero (101 for more than 100), as GNU parallel's; each is named
on stderr. See docs/hub.md.

Flags:
`

func parallelMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("parallel", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	hf := addHubFlags(fs)
	jobs := fs.IntP("jobs", "j", 4, "run `N` jobs at once")
	pipe := fs.Bool("pipe", false, "give each line to its job as stdin, not as an argument")
	seed := fs.Uint64("seed", 0, "every job's seed")
	fs.Usage = func() { io.WriteString(stderr, parallelUsage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	switch {
	case fs.NArg() < 1:
		return errorf(stderr, exitUsage, "parallel: no NAME given (lockstep parallel [FLAGS] NAME [-- ARGS...] < INPUTS)")
	case *jobs < 1:
		return errorf(stderr, exitUsage, "parallel: -j %d: want at least 1", *jobs)
	}
	c, _, err := hf.dial()
	if err != nil {
		return errorf(stderr, exitUsage, "parallel: %v", err)
	}
	ctx, interrupted, stop := cancelOnSignal()
	defer stop()
	name := fs.Arg(0)
	// Unknown names fail once, before any job.
	if _, err := c.Service(ctx, name); err != nil {
		return errorf(stderr, exitUsage, "parallel: %v", err)
	}
	type job struct {
		line string
		out  bytes.Buffer
		done chan struct{}
		err  error
		exit int
	}
	queue := make(chan *job, *jobs)
	go func() { // read the lines, starting a job for each as a slot frees
		defer close(queue)
		sem := make(chan struct{}, *jobs)
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() && ctx.Err() == nil {
			j := &job{line: sc.Text(), done: make(chan struct{})}
			sem <- struct{}{}
			queue <- j
			go func() {
				defer func() { <-sem; close(j.done) }()
				req := hub.RunRequest{Args: append(append([]string(nil), fs.Args()[1:]...), j.line), Seed: *seed}
				var in io.Reader = strings.NewReader("")
				if *pipe {
					req.Args, in = fs.Args()[1:], strings.NewReader(j.line+"\n")
				}
				res, err := runNamed(ctx, c, name, req, in, &j.out, func(m string) { fmt.Fprintf(stderr, "lockstep parallel: %s: %s\n", j.line, m) })
				switch {
				case err != nil:
					j.err = err
				case !res.Verdict.Agreed || res.Verdict.HostLimited:
					j.err = fmt.Errorf("not verified: %s", res.Verdict.Detail)
				default:
					j.exit = res.Verdict.ExitCode
				}
			}()
		}
		if err := sc.Err(); err != nil {
			fmt.Fprintf(stderr, "lockstep parallel: stdin: %v\n", err)
		}
	}()
	failed := 0
	for j := range queue {
		<-j.done
		if j.err == nil {
			if _, err := stdout.Write(j.out.Bytes()); err != nil {
				return 141
			}
		}
		switch {
		case j.err != nil:
			failed++
			fmt.Fprintf(stderr, "lockstep parallel: job %q: %v\n", j.line, j.err)
		case j.exit != 0:
			failed++
			fmt.Fprintf(stderr, "lockstep parallel: job %q: exit status %d\n", j.line, j.exit)
		}
	}
	if ctx.Err() != nil {
		return errorf(stderr, 128+int(interrupted()), "parallel: %v", errors.New("interrupted: the hub stops the runs and removes their replicas"))
	}
	return min(failed, 101)
}
