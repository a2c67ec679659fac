//go:build !linux

package runner

import (
	"errors"
	"github.com/lockstep-run/lockstep/ebpf"
	"io"

	"github.com/lockstep-run/lockstep/virt"
)

// Options describe one deterministic run.
type Options struct {
	Config         virt.Config
	Log            *virt.Log
	Argv           []string
	Env            []string
	Stdin          io.Reader
	Stdout         io.Writer
	Stderr         io.Writer
	Digests        *ebpf.Chains
	Audit          *ebpf.Audit
	Trace          *ebpf.TraceWriter
	UnorderedWakes bool
}

// Result is how a run ended.
type Result struct {
	ExitCode int
	Execs    int
}

// ErrUnsupported is returned off Linux.
var ErrUnsupported = errors.New("lockstep exec needs Linux")

// Run is not supported off Linux.
func Run(o Options) (Result, error) { return Result{}, ErrUnsupported }

// MaybeRunStage does nothing off Linux.
func MaybeRunStage() {}
